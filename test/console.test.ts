// The console (GET / of `ferry serve`) in a real browser: Debian's chromium,
// headless, driven by playwright-core (no browser download), against a real
// `ferry serve` with real jobs on small real disks. Slow jobs read through
// nbdkit's rate filter, so a cancel lands while one runs and a progress bar
// has time to move. Judged from outside the console: the HTTP replies and
// headers the browser saw, the cookie jar, the job store through the API, the
// files on disk (the independent tree compare) and the profile files.
// No VM boots here.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir, readFile, stat, access } from 'node:fs/promises';
import { createServer, type Server as HttpServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { execa } from 'execa';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { Api, startServe, type Serve } from './support/api-client.js';
import { ferry, guardMachine, ROOT, sha256, tempDir } from './support/harness.js';
import { buildDebianGuest } from './support/fixtures.js';
import { assertSameFiles } from './support/independent.js';
import { makeSmallDisk } from './support/small-disk.js';
import { startNbdkit, stopAllServers, type Server } from './support/servers.js';
import { openJobStore } from '../src/jobs/sqlite-store.js';

let serve: Serve | undefined;
let context: BrowserContext | undefined;
let evil: HttpServer | undefined;
// registered before the guard: browser, service and servers are gone before it looks
after(async () => {
  await context?.close().catch(() => {});
  await new Promise<void>(r => evil ? evil.close(() => r()) : r());
  const code = await serve?.stop();
  await stopAllServers();
  assert.equal(await sha256(src), srcSum, 'the source is unchanged');
  if (serve) assert.equal(code, 0, `ferry serve exit status; its output:\n${serve.output()}`);
});
guardMachine();

const dir = await tempDir('ferry-console-');
const home = join(dir, 'home');
const src = join(dir, 'small.raw');
const shots = join(dir, 'screenshots');
const SEEDED = 120;
const SIZES = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } } as const;
let srcSum = '';
let api: Api;
let token: string;
let page: Page;
let paced: Server, crawl: Server;
let debian = '';

const exists = (p: string) => access(p).then(() => true, () => false);
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

async function waitJob(id: string, states: string[], timeoutMs = 120_000): Promise<any> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const j = (await api.get(`/jobs/${id}`)).body;
    if (states.includes(j.state)) return j;
    if (Date.now() > end) throw new Error(`job ${id} still ${j.state} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

// ——— what the browser saw: every response of the server, console errors, failed requests ———
interface Seen { url: string; status: number; csp: string | undefined }
const seen: Seen[] = [];
let problems: string[] = [];
/** statuses a step expects (a wrong token's 401, a bad form's 400): the browser logs those as console errors too */
let allowed: number[] = [];

function watch(p: Page): void {
  p.on('console', m => {
    if (m.type() !== 'error') return;
    const st = /status of (\d{3})/.exec(m.text());
    if (st && allowed.includes(Number(st[1]))) return;
    problems.push(`console: ${m.text()}`);
  });
  p.on('pageerror', e => problems.push(`page error: ${e.message}`));
  p.on('requestfailed', r => {
    // an event stream closed by the page when it leaves is not a failure
    if (r.failure()?.errorText === 'net::ERR_ABORTED' && /\/events$/.test(new URL(r.url()).pathname)) return;
    problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  p.on('response', r => {
    if (!r.url().startsWith(serve!.base)) return;
    seen.push({ url: r.url(), status: r.status(), csp: r.headers()['content-security-policy'] });
    if (r.status() >= 400 && !allowed.includes(r.status())) problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
  });
}

/** no console error, no failed request and no unexpected status since the last call */
function assertClean(what: string): void {
  const p = problems;
  problems = [];
  assert.deepEqual(p, [], `${what}: ${p.join('\n')}`);
}

/** go to a page of the console; what the last page showed is cleared first, so a wait never finds stale elements */
async function go(hash: string): Promise<void> {
  const url = `${serve!.base}/${hash}`;
  if (page.url().startsWith(serve!.base)) await page.evaluate(() => document.getElementById('main')?.replaceChildren());
  // the same hash again is no navigation: the page would never draw itself anew
  if (page.url() === url) await page.reload(); else await page.goto(url);
}

/**
 * Text below WCAG AA contrast on the page (4.5:1; 3:1 for large text), from
 * the computed colours of every element holding text and the first opaque
 * background behind it. Runs in the page.
 */
function lowContrast(): string[] {
  const rgb = (c: string) => (c.match(/[\d.]+/g) ?? []).map(Number);
  const lum = ([r, g, b]: number[]) => {
    const f = (v: number) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const bgOf = (el: Element | null): number[] => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] === 1) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out: string[] = [];
  for (const el of document.querySelectorAll('body *')) {
    if (!(el instanceof HTMLElement) || !el.offsetParent && getComputedStyle(el).position !== 'fixed') continue;
    if (![...el.childNodes].some(n => n.nodeType === 3 && n.textContent!.trim())) continue;
    const st = getComputedStyle(el);
    const [a, b] = [lum(rgb(st.color)), lum(bgOf(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const px = parseFloat(st.fontSize);
    const large = px >= 24 || (px >= 18.66 && Number(st.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) out.push(`${el.tagName.toLowerCase()} "${el.textContent!.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
  }
  return out;
}

const rowNames = (sel: string) => page.$$eval(`${sel} tbody tr td:first-child`, tds => tds.map(td => td.textContent!.trim()));

before(async () => {
  await mkdir(shots, { recursive: true });
  // 96 MiB with 24 MiB of random data: read at 32 Mbit/s it takes a few seconds, long enough for a progress bar to move
  await makeSmallDisk(src, { sizeMiB: 96, randomMiB: 24 });
  srcSum = await sha256(src);
  debian = await buildDebianGuest();
  const env = { FERRY_HOME: home };
  // the catalog: a Debian 12 guest and a disk with no operating system
  for (const [name, path] of [['deb12', debian], ['blank', src]]) {
    const r = await ferry(['images', 'add', path, '--name', name, '--tag', 'console'], { env });
    assert.equal(r.exitCode, 0, r.stderr);
  }
  // finished jobs in the store before the service starts: the table must page through them
  const store = openJobStore(home);
  for (let i = 0; i < SEEDED; i++) {
    const j = store.create({ source: `/srv/old/disk-${i}.raw`, target: `/srv/new/disk-${i}.qcow2` }, 'local');
    store.update(j.id, { state: 'done' });
  }
  store.close();
  // slow enough that a loaded host's page still sees the bar at two points of one step (about 17 s of copy)
  paced = await startNbdkit({ file: src, rate: '16M' });
  crawl = await startNbdkit({ file: src, rate: '2M' });
  serve = await startServe(['--listen', '127.0.0.1:0', '--concurrency', '3', '--per-host', '3', '--log-level', 'warn'], env);
  token = (await readFile(serve.tokenPath, 'utf8')).trim();
  api = new Api(serve.base, token);
  context = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
    viewport: SIZES.desktop,
  });
  page = context.pages()[0] ?? await context.newPage();
  watch(page);
});

describe('the console', () => {
  it('without the cookie or token every page and API call is 401; a wrong token shows an error and no data; the right one a session cookie', async () => {
    const routes = ['/jobs', '/jobs/x', '/jobs/x/logs', '/events', '/images', '/images/deb12', '/drivers', '/profiles', '/machines', '/session', '/openapi.json'];
    for (const cookie of [undefined, `ferry_session=${'ab'.repeat(32)}`]) {
      for (const p of routes) {
        const r = await fetch(serve!.base + p, { headers: cookie ? { cookie } : {} });
        assert.equal(r.status, 401, `GET ${p} ${cookie ? 'with a made-up cookie' : 'without a cookie'}`);
        assert.ok(r.headers.get('content-security-policy'), `CSP on the 401 of ${p}`);
        await r.body?.cancel();
      }
    }
    const post = await fetch(`${serve!.base}/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ source: src, target: join(dir, 'never.qcow2') }) });
    assert.equal(post.status, 401);

    allowed = [401];
    await page.goto(serve!.base + '/');
    await page.waitForSelector('#token');
    await page.fill('#token', '0'.repeat(64));
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => /Wrong token/.test(document.getElementById('login-error')?.textContent ?? ''));
    assert.equal(await page.$('#jobs'), null, 'no jobs table after a wrong token');
    assert.equal(await page.isHidden('#nav'), true, 'no navigation after a wrong token');
    await page.screenshot({ path: join(shots, 'login-desktop.png') });
    assert.deepEqual(await context!.cookies(), [], 'no cookie for a wrong token');
    assertClean('login page with a wrong token');

    allowed = [];
    await page.fill('#token', token);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('#jobs tbody tr');
    const cookies = await context!.cookies();
    assert.equal(cookies.length, 1, JSON.stringify(cookies));
    const c = cookies[0];
    assert.deepEqual([c.name, c.httpOnly, c.sameSite, c.secure, c.path], ['ferry_session', true, 'Strict', false, '/']);
    assert.notEqual(c.value, token, 'the cookie is not the token');
    assert.equal(await page.evaluate(() => document.cookie), '', 'the page cannot read the cookie');
    assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0, 'nothing in web storage');
    assert.ok(!page.url().includes(token), 'the token is not in the URL');
    // and the cookie alone opens the API (the page is what uses it)
    const viaCookie = await fetch(`${serve!.base}/jobs?limit=1`, { headers: { cookie: `${c.name}=${c.value}` } });
    assert.equal(viaCookie.status, 200);
    assert.equal((await viaCookie.json()).total, SEEDED);
    assertClean('login');
  });

  it('the jobs table pages through the jobs and filters by state', async () => {
    await page.goto(`${serve!.base}/#/jobs`);
    await page.waitForSelector('#jobs tbody tr');
    assert.equal((await rowNames('#jobs')).length, 50);
    assert.match(await page.textContent('#jobs-count') ?? '', new RegExp(`^${SEEDED} jobs, 1–50 shown`));
    const all = (await api.get('/jobs')).body.jobs.map((j: any) => j.id).reverse();
    assert.deepEqual(await rowNames('#jobs'), all.slice(0, 50), 'newest first');
    await page.click('text=Older →');
    await page.waitForFunction(() => /51–100/.test(document.getElementById('jobs-count')?.textContent ?? ''));
    assert.deepEqual(await rowNames('#jobs'), all.slice(50, 100));
    await page.click('text=Older →');
    await page.waitForFunction(() => /101–120/.test(document.getElementById('jobs-count')?.textContent ?? ''));
    assert.deepEqual(await rowNames('#jobs'), all.slice(100));
    await page.selectOption('#state-filter', 'failed');
    await page.waitForFunction(() => document.getElementById('jobs-count')?.textContent === 'No jobs yet.');
    assert.equal((await rowNames('#jobs')).length, 0);
    await page.selectOption('#state-filter', 'done');
    await page.waitForSelector('#jobs tbody tr');
    assert.equal((await rowNames('#jobs')).length, 50);
    assertClean('jobs table');
  });

  let doneId = '';
  it('a conversion submitted from the form: its progress bar moves, it ends done, its log opens; the target holds the source files', async () => {
    const out = join(dir, 'from-form.qcow2');
    await page.goto(`${serve!.base}/#/submit`);
    await page.waitForSelector('#submit-form');
    await page.fill('#f-source', paced.url);
    await page.fill('#f-target', out);
    await page.selectOption('#f-format', 'qcow2');
    await page.click('#submit-form button[type=submit]');
    await page.waitForURL(/#\/jobs\/[^/]+$/);
    const id = decodeURIComponent(page.url().split('#/jobs/')[1]);
    doneId = id;
    const row = `#jobs tr[data-job="${id}"]`;
    // drawn anew until the row is there (a CI run once saw a first render without it)
    for (let i = 0; i < 6; i++) {
      await go('#/jobs');
      if (await page.waitForSelector(row, { timeout: 5000 }).then(() => true, () => false)) break;
    }
    await page.waitForSelector(row);
    // the bar as the page shows it, read until the job ends: each step's copy has its own total
    const values: { step: string; max: number; value: number }[] = [];
    let shot = false;
    for (const end = Date.now() + 120_000; Date.now() < end;) {
      const v = await page.$eval(row, tr => {
        const p = tr.querySelector('progress');
        return {
          value: p ? Number(p.getAttribute('value')) : null, max: p ? Number(p.getAttribute('max')) : 0, step: tr.children[4].textContent ?? '',
          state: tr.querySelector('.state')?.textContent, rate: tr.querySelector('.rate')?.textContent,
        };
      }).catch(() => undefined);
      if (v?.value && values.at(-1)?.value !== v.value) values.push({ step: v.step, max: v.max, value: v.value });
      if (v?.value && v.rate && /\/s, ETA/.test(v.rate) && !shot) {
        await page.screenshot({ path: join(shots, 'jobs-running-desktop.png') });
        // the README's picture: the top of the table with the running job
        await page.screenshot({ path: join(shots, 'readme-jobs.png'), clip: { x: 0, y: 0, width: 1280, height: 360 } });
        shot = true;
      }
      if (v?.state === 'done') break;
      await sleep(100);
    }
    const seenBar = values.map(v => `${v.step} ${v.value}/${v.max}`).join(' → ');
    const phases = new Map<string, typeof values>();
    for (const v of values) phases.set(`${v.step} ${v.max}`, [...phases.get(`${v.step} ${v.max}`) ?? [], v]);
    assert.ok([...phases.values()].some(p => p.length >= 2), `the progress bar moved within a step: ${seenBar}`);
    for (const p of phases.values()) assert.ok(p.every((v, i) => i === 0 || v.value > p[i - 1].value && v.value <= v.max), `it only moves forward within a step: ${seenBar}`);
    assert.ok(shot, 'a rate and an ETA were shown');
    assert.equal((await api.get(`/jobs/${id}`)).body.state, 'done');
    await page.click(`${row} a`);
    await page.waitForSelector('#log');
    await page.waitForFunction(() => (document.getElementById('log')?.textContent ?? '').split('\n').length > 3);
    const log = await page.textContent('#log') ?? '';
    const apiLog = (await api.get(`/jobs/${id}/logs`)).body.lines.map((l: any) => l.line).join('\n');
    assert.equal(log.trim(), apiLog.trim(), 'the page shows the whole log');
    assert.match(await page.textContent('#job-state') ?? '', /done/);
    assertClean('submit and watch');
    await assertSameFiles(src, out);
  });

  it('a bad form shows the API\'s field errors beside the fields and creates nothing', async () => {
    const before = (await api.get('/jobs?limit=0')).body.total;
    allowed = [400];
    await page.goto(`${serve!.base}/#/submit`);
    await page.waitForSelector('#submit-form');
    await page.fill('#f-target', join(dir, 'bad.qcow2'));
    await page.fill('#f-profile', 'no-such-profile');
    await page.click('#submit-form button[type=submit]');
    await page.waitForFunction(() => !!document.getElementById('e-source')?.textContent && !!document.getElementById('e-profile')?.textContent);
    assert.match(page.url(), /#\/submit$/);
    assert.equal(await page.getAttribute('#f-source', 'aria-invalid'), 'true');
    assert.equal(await page.getAttribute('#f-profile', 'aria-invalid'), 'true');
    assert.equal(await page.textContent('#e-target'), '', 'no error beside a good field');
    assert.match(await page.textContent('#e-profile') ?? '', /profile|no-such-profile|known/i);
    await page.screenshot({ path: join(shots, 'submit-errors-desktop.png') });
    assert.equal((await api.get('/jobs?limit=0')).body.total, before, 'no job was created');
    assert.equal(await exists(join(dir, 'bad.qcow2')), false);
    assertClean('bad form');
    allowed = [];
  });

  it('a running job is cancelled from its page; a cancel from another origin is refused', async () => {
    const target = join(dir, 'cancelled.qcow2');
    const r = await api.post('/jobs', { source: crawl.url, target });
    assert.equal(r.status, 201);
    const id = r.body.id;
    await page.goto(`${serve!.base}/#/jobs/${id}`);
    await page.waitForFunction(() => document.getElementById('job-state')?.textContent === 'running', undefined, { timeout: 60_000 });
    await page.waitForSelector('#cancel-job');

    // the session cookie with a foreign Origin: refused before anything happens
    const c = (await context!.cookies())[0];
    const forged = await fetch(`${serve!.base}/jobs/${id}/cancel`, { method: 'POST', headers: { cookie: `${c.name}=${c.value}`, origin: 'http://evil.example' } });
    assert.equal(forged.status, 403);
    assert.equal((await forged.json()).error, 'CROSS_ORIGIN');
    // a page of another origin on the same host (same site: SameSite lets the cookie go) posting a form at the job
    evil = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<form id=f method=post action="${serve!.base}/jobs/${id}/cancel"></form><script>document.getElementById('f').submit()</script>`);
    });
    await new Promise<void>(res => evil!.listen(0, '127.0.0.1', () => res()));
    const evilPage = await context!.newPage();
    const refused = evilPage.waitForResponse(resp => resp.url().endsWith(`/jobs/${id}/cancel`));
    await evilPage.goto(`http://127.0.0.1:${(evil.address() as { port: number }).port}/`);
    const resp = await refused;
    assert.equal(resp.status(), 403, 'the cross-origin form post is refused');
    assert.ok(((await resp.request().allHeaders()).cookie ?? '').includes(c.value), 'the browser did send the cookie: the Origin check refused it');
    await evilPage.close();
    assert.equal((await api.get(`/jobs/${id}`)).body.state, 'running', 'still running after the cross-origin posts');

    await page.click('#cancel-job');
    await page.waitForFunction(() => document.getElementById('job-state')?.textContent === 'cancelled', undefined, { timeout: 60_000 });
    assert.equal((await waitJob(id, ['cancelled'])).state, 'cancelled');
    assert.ok(await page.isVisible('#retry-job'), 'a cancelled job offers a retry');
    assert.equal(await exists(target), false, 'the cancelled job left no target');
    assertClean('cancel');
  });

  it('a failed job shows its error code and message, and its retry from the page runs it again', async () => {
    const later = join(dir, 'later.raw');
    const out = join(dir, 'retried.qcow2');
    const r = await api.post('/jobs', { source: later, target: out });
    assert.equal(r.status, 201);
    const id = r.body.id;
    await waitJob(id, ['failed']);
    await page.goto(`${serve!.base}/#/jobs/${id}`);
    await page.waitForSelector('#error-code');
    assert.equal(await page.textContent('#error-code'), 'SOURCE_MISSING');
    assert.match(await page.textContent('#error-message') ?? '', new RegExp(later.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    await page.screenshot({ path: join(shots, 'job-failed-desktop.png') });
    // the cause goes away; the operator retries
    await copyFile(src, later);
    await page.click('#retry-job');
    await page.waitForFunction(() => document.getElementById('job-state')?.textContent === 'done', undefined, { timeout: 120_000 });
    await waitJob(id, ['done']);
    assert.equal(await page.$('#error-code'), null, 'the old error is gone');
    await page.waitForFunction(() => /retry \(was failed: SOURCE_MISSING\)/.test(document.getElementById('log')?.textContent ?? ''));
    assertClean('retry');
    await assertSameFiles(later, out);
  });

  it('the catalog is searched by distribution and by driver; an image page shows inspection, initramfs gaps per profile and history', async () => {
    const found = async (hash: string) => {
      await go(hash);
      await page.waitForSelector('#image-count');
      return page.$$eval('#image-results tbody tr td:first-child', tds => tds.map(t => t.textContent!.trim()));
    };
    assert.deepEqual(await found('#/images'), ['blank', 'deb12']);
    // through the form, as a user types it
    await page.fill('#f-distro', 'debian');
    await page.press('#f-distro', 'Enter');
    await page.waitForURL(/distro=debian/);
    await page.waitForFunction(() => /1 image match/.test(document.getElementById('image-count')?.textContent ?? ''));
    assert.deepEqual(await page.$$eval('#image-results tbody tr td:first-child', tds => tds.map(t => t.textContent!.trim())), ['deb12']);
    assert.deepEqual(await found('#/images?distro=ubuntu'), []);
    assert.deepEqual(await found('#/images?hasDriver=virtio_blk'), ['deb12']);
    // a driver no image has: nothing found, and the page says so
    assert.deepEqual(await found('#/images?hasDriver=no_such_module'), []);
    assert.equal(await page.textContent('#image-count'), 'No image matches.');
    assertClean('catalog search');

    await found('#/images?distro=debian');
    await page.click('#image-results a');
    await page.waitForSelector('#initramfs');
    assert.equal(await page.textContent('h1'), 'Image deb12');
    const profiles = (await readdir(join(ROOT, 'drivers-db', 'profiles'))).filter(f => f.endsWith('.json'));
    const gaps = await page.$$eval('#initramfs tbody tr', trs => trs.map(tr => [...tr.children].map(td => td.textContent!.trim())));
    const names = new Set(gaps.map(g => g[1]));
    assert.equal(names.size, profiles.length, `a row per profile: ${[...names].join(', ')}`);
    assert.ok(gaps.every(g => /^6\.1\.0-\d+-amd64$/.test(g[0])), JSON.stringify(gaps));
    assert.match(await page.textContent('#history') ?? '', /added/);
    assertClean('image page');
  });

  it('drivers and profiles, and machines', async () => {
    await page.goto(`${serve!.base}/#/drivers`);
    await page.waitForSelector('#profiles tbody tr');
    const shown = await page.$$eval('#profiles tbody tr td:first-child strong', s => s.map(x => x.textContent!.trim()));
    const files = (await readdir(join(ROOT, 'drivers-db', 'profiles'))).filter(f => f.endsWith('.json'));
    const names = await Promise.all(files.map(async f => (JSON.parse(await readFile(join(ROOT, 'drivers-db', 'profiles', f), 'utf8')) as { name: string }).name));
    assert.deepEqual(shown, names.sort());
    assert.ok(await page.isVisible('#no-drivers'), 'an empty driver store says so');
    await page.goto(`${serve!.base}/#/machines`);
    await page.waitForSelector('#no-machines');
    assertClean('drivers and machines');
  });

  it('every page at 1280x800 and phone size: no console error or failed request, no sideways scrolling, CSP on every response, keyboard reachable', async () => {
    const pages: [string, string, string][] = [
      ['jobs', '#/jobs', '#jobs tbody tr'], ['job', `#/jobs/${doneId}`, '#log'], ['submit', '#/submit', '#submit-form'],
      ['images', '#/images', '#image-count'], ['image', '#/images/deb12', '#initramfs'], ['drivers', '#/drivers', '#profiles'], ['machines', '#/machines', '#no-machines'],
    ];
    for (const [size, viewport] of Object.entries(SIZES)) {
      await page.setViewportSize(viewport);
      for (const [name, hash, ready] of pages) {
        await go(hash);
        await page.waitForSelector(ready);
        await page.screenshot({ path: join(shots, `${name}-${size}.png`), fullPage: size === 'phone' });
        if (name === 'job' && size === 'phone') await page.screenshot({ path: join(shots, 'readme-job-phone.png') });
        const low = await page.evaluate(lowContrast);
        assert.deepEqual(low, [], `${name} at ${size}: text below WCAG AA contrast`);
        const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(wide <= 0, `${name} at ${size}: ${wide} px wider than the screen`);
        assertClean(`${name} at ${size}`);
      }
    }
    // the keyboard: Tab from the top reaches the skip link, then every section of the navigation
    await page.setViewportSize(SIZES.desktop);
    await page.goto(`${serve!.base}/#/jobs`);
    await page.waitForSelector('#jobs tbody tr');
    await page.focus('.skip');
    const reached = [await page.evaluate(() => document.activeElement?.textContent?.trim() ?? '')];
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press('Tab');
      reached.push(await page.evaluate(() => document.activeElement?.textContent?.trim() ?? ''));
    }
    assert.deepEqual(reached, ['Skip to content', 'Jobs', 'Submit', 'Images', 'Drivers & profiles', 'Machines', 'Log out']);
    await page.keyboard.press('Shift+Tab');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#no-machines');
    // every response the browser got from the server carried a CSP with no inline script
    const fromServer = seen.filter(s => s.url.startsWith(serve!.base));
    assert.ok(fromServer.length > 50, `${fromServer.length} responses`);
    for (const s of fromServer) {
      assert.ok(s.csp, `CSP on ${s.url}`);
      const script = /script-src ([^;]*)/.exec(s.csp!)?.[1] ?? /default-src ([^;]*)/.exec(s.csp!)?.[1] ?? '';
      assert.ok(!/unsafe-inline|unsafe-eval/.test(script), `${s.url}: ${s.csp}`);
      assert.ok(!/'unsafe-inline'/.test(/style-src ([^;]*)/.exec(s.csp!)?.[1] ?? ''), `no inline style either: ${s.csp}`);
    }
    // hashed assets are cached for good; the shell never is
    const asset = fromServer.find(s => /\/assets\/app\.[0-9a-f]{16}\.js$/.test(s.url));
    assert.ok(asset, 'the script is served under its content hash');
    const a = await fetch(asset!.url);
    assert.match(a.headers.get('cache-control') ?? '', /max-age=31536000.*immutable/);
    assert.equal(a.headers.get('content-type'), 'text/javascript; charset=utf-8');
    const shell = await fetch(serve!.base + '/');
    assert.equal(shell.headers.get('cache-control'), 'no-cache');
    assert.ok(!/<script>|\son\w+=/.test(await shell.text()), 'no inline script in the shell');
    assertClean('keyboard');
    if (process.env.FERRY_CONSOLE_SHOTS) for (const f of await readdir(shots)) await copyFile(join(shots, f), join(process.env.FERRY_CONSOLE_SHOTS, f));
    assert.ok((await stat(join(shots, 'jobs-phone.png'))).size > 1000);
  });

  it('a machine that registered: listed with its state and inventory; a capture started from its page is a job for it, cancelled from the job page', async () => {
    // what an agent sends when it boots (src/agent/README.md), with the agents' enrolment token
    const enrolToken = (await readFile(join(home, 'enrol-token'), 'utf8')).trim();
    const inventory = {
      ferryInventory: 1, hostname: 'rack4-07',
      system: { manufacturer: 'Dell Inc.', model: 'PowerEdge R640', serial: 'CONSOLE-SN-7', uuid: '4c4c4544-0042-3510-8056-b4c04f4e3077' },
      nics: [{ name: 'eno1', mac: '52:54:00:c7:00:01', virtual: false }],
      disks: [{ name: 'sda', path: '/dev/sda', sizeBytes: 480103981056, model: 'PERC H730P', serial: 'DISK-SN-7' }],
    };
    const reg = await fetch(`${serve!.base}/machines/register`, { method: 'POST', headers: { authorization: `Bearer ${enrolToken}`, 'content-type': 'application/json' }, body: JSON.stringify(inventory) });
    assert.equal(reg.status, 201);
    const { id: machineId, agentToken } = await reg.json() as { id: string; agentToken: string };
    // its agent asks for work once, as a booted agent does: the machine is ready
    const work = await fetch(`${serve!.base}/machines/${machineId}/work?wait=0`, { headers: { authorization: `Bearer ${agentToken}` } });
    assert.equal(work.status, 200, await work.text());
    await go('#/machines');
    await page.waitForSelector('#machines tbody tr');
    const row = await page.textContent('#machines tbody tr') ?? '';
    assert.ok(row.includes(machineId) && row.includes('ready'), row);
    await page.click(`#machines a[href="#/machines/${machineId}"]`);
    await page.waitForSelector('#capture-form');
    const facts = await page.textContent('dl.facts') ?? '';
    for (const want of ['CONSOLE-SN-7', '52:54:00:c7:00:01', 'PERC H730P', 'ready']) assert.ok(facts.includes(want), `${want} in: ${facts}`);
    // the capture form posts the same job the API takes: a capture of this machine
    const target = join(dir, 'captured-from-page.qcow2');
    await page.fill('#f-capture-target', target);
    await page.click('#capture-form button[type=submit]');
    await page.waitForURL(/#\/jobs\/[^/]+$/);
    const jobId = decodeURIComponent(page.url().split('#/jobs/')[1]);
    const job = (await api.get(`/jobs/${jobId}`)).body;
    assert.equal(job.spec.kind, 'capture');
    assert.equal(job.spec.machine, machineId);
    assert.equal(job.spec.target, target);
    // no agent answers here: the job waits for the machine, and is cancelled from its page
    await page.waitForSelector('#cancel-job, #retry-job');
    const now = (await api.get(`/jobs/${jobId}`)).body;
    assert.ok(['queued', 'running'].includes(now.state), JSON.stringify(now));
    await page.click('#cancel-job');
    await page.waitForFunction(() => document.getElementById('job-state')?.textContent === 'cancelled', undefined, { timeout: 60_000 });
    assert.equal((await waitJob(jobId, ['cancelled'])).state, 'cancelled');
    assert.equal(await exists(target), false, 'the cancelled capture left no target');
    await go(`#/machines/${machineId}`);
    await page.waitForSelector('#capture-form');
    assert.match(await page.textContent('ol') ?? '', /capture|cancel/i, 'the machine page shows what was done to it');
    assertClean('machine pages');
  });

  it('over HTTPS (--tls-cert/--tls-key) the session cookie is Secure', async () => {
    const certs = join(dir, 'tls');
    await mkdir(certs);
    const cert = join(certs, 'cert.pem'), key = join(certs, 'key.pem');
    await execa('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
      '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1']);
    const tlsHome = join(dir, 'home-tls');
    const s = await startServe(['--listen', '127.0.0.1:0', '--tls-cert', cert, '--tls-key', key, '--log-level', 'warn'], { FERRY_HOME: tlsHome });
    try {
      assert.match(s.base, /^https:\/\/127\.0\.0\.1:\d+$/);
      const t = (await readFile(s.tokenPath, 'utf8')).trim();
      const ca = await readFile(cert);
      const call = (method: string, path: string, headers: Record<string, string>, body?: string) => new Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>((res, rej) => {
        const r = httpsRequest(s.base + path, { method, headers, ca }, resp => { resp.resume(); resp.on('end', () => res({ status: resp.statusCode!, headers: resp.headers })); });
        r.on('error', rej);
        r.end(body);
      });
      const login = await call('POST', '/login', { 'content-type': 'application/json', origin: s.base }, JSON.stringify({ token: t }));
      assert.equal(login.status, 204);
      const cookie = String(login.headers['set-cookie']);
      assert.match(cookie, /^ferry_session=[0-9a-f]{64}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+; Secure$/);
      assert.ok(login.headers['strict-transport-security'], 'HSTS under TLS');
      assert.ok(login.headers['content-security-policy']);
      const jobs = await call('GET', '/jobs', { cookie: cookie.split(';')[0] });
      assert.equal(jobs.status, 200);
    } finally {
      assert.equal(await s.stop(), 0, s.output());
    }
  });
});
