// Bench part `console`: the web console (src/web/) of a real `ferry serve`.
// 1. Time to first render of the jobs page with 500 jobs in the store, in
//    Debian's chromium (headless, playwright-core): from the navigation to the
//    first page of rows in the table; the first load (nothing cached) and the
//    median of five more (hashed assets cached), and the bytes of the page of
//    jobs the table asks for against the whole list.
// 2. Server-sent-event traffic with 50 running jobs: real conversions reading
//    one small disk through nbdkit with a shared rate limit (so all 50 stay in
//    their copy), measured over a window as the console gets it (GET /events,
//    one connection) and as 50 per-job streams (GET /jobs/{id}/events) would.
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { chromium } from 'playwright-core';
import { Api, startServe, type Serve } from '../test/support/api-client.js';
import { makeSmallDisk } from '../test/support/small-disk.js';
import { startNbdkit, stopAllServers } from '../test/support/servers.js';
import { openJobStore } from '../src/jobs/sqlite-store.js';

export interface ConsoleBench {
  jobsInStore: number;
  firstRenderColdMs: number;
  firstRenderWarmMedianMs: number;
  pageOfJobsBytes: number;
  allJobsBytes: number;
  running: number;
  /** jobs whose progress the all-jobs stream carried in the window */
  withProgress: number;
  windowSeconds: number;
  allEventsBytesPerSecond: number;
  allEventsEventsPerSecond: number;
  perJobStreamsBytesPerSecond: number;
}

const STORE_JOBS = 500;
const RUNNING = Number(process.env.FERRY_BENCH_CONSOLE_RUNNING ?? 50) || 50;
const WINDOW_S = 10;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** bytes (and events) an event stream sends in `ms`, then the connection is dropped */
async function streamBytes(url: string, token: string, ms: number): Promise<{ bytes: number; events: number; jobs: number }> {
  const ac = new AbortController();
  const r = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: ac.signal });
  let bytes = 0, events = 0, text = '';
  const timer = setTimeout(() => ac.abort(), ms);
  try {
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
      bytes += chunk.length;
      text += Buffer.from(chunk).toString();
    }
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
  } finally {
    clearTimeout(timer);
  }
  events = (text.match(/^event: /gm) ?? []).length;
  // the jobs that sent progress in the window
  const jobs = new Set([...text.matchAll(/^event: progress\ndata: \{"jobId":"([^"]+)"/gm)].map(m => m[1])).size;
  return { bytes, events, jobs };
}

async function firstRender(work: string): Promise<Pick<ConsoleBench, 'firstRenderColdMs' | 'firstRenderWarmMedianMs' | 'pageOfJobsBytes' | 'allJobsBytes'>> {
  const home = join(work, 'console-home');
  const store = openJobStore(home);
  for (let i = 0; i < STORE_JOBS; i++) {
    const j = store.create({ source: `/srv/old/disk-${i}.raw`, target: `/srv/new/disk-${i}.qcow2` }, 'local');
    store.update(j.id, { state: i % 10 === 0 ? 'failed' : 'done' });
  }
  store.close();
  const serve = await startServe(['--listen', '127.0.0.1:0', '--log-level', 'warn'], { FERRY_HOME: home });
  const context = await chromium.launchPersistentContext(join(work, 'chromium-profile'), {
    executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const token = (await readFile(serve.tokenPath, 'utf8')).trim();
    const api = new Api(serve.base, token);
    const bytesOf = async (path: string) => (await (await fetch(serve.base + path, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer()).byteLength;
    const pageOfJobsBytes = await bytesOf('/jobs?order=newest&limit=50&offset=0');
    const allJobsBytes = await bytesOf('/jobs');
    if ((await api.get('/jobs?limit=0')).body.total !== STORE_JOBS) throw new Error('the store does not hold the jobs');
    // log in once through the form (the cookie is then in the profile)
    const login = context.pages()[0] ?? await context.newPage();
    await login.goto(serve.base + '/');
    await login.fill('#token', token);
    await login.click('#login button[type=submit]');
    await login.waitForSelector('#jobs tbody tr');
    await login.close();
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      const page = await context.newPage();
      // the first of these loads the assets (they were cached by the login: clear that for the cold figure)
      if (i === 0) await (await context.newCDPSession(page)).send('Network.clearBrowserCache');
      const t0 = performance.now();
      await page.goto(`${serve.base}/#/jobs`);
      await page.waitForFunction(() => document.querySelectorAll('#jobs tbody tr').length === 50, undefined, { polling: 'raf' });
      times.push(performance.now() - t0);
      await page.close();
    }
    return { firstRenderColdMs: times[0], firstRenderWarmMedianMs: median(times.slice(1)), pageOfJobsBytes, allJobsBytes };
  } finally {
    await context.close();
    await serve.stop();
  }
}

async function sseTraffic(work: string): Promise<Pick<ConsoleBench, 'running' | 'withProgress' | 'windowSeconds' | 'allEventsBytesPerSecond' | 'allEventsEventsPerSecond' | 'perJobStreamsBytesPerSecond'>> {
  const home = join(work, 'console-sse-home');
  const disk = join(work, 'console-sse.raw');
  await makeSmallDisk(disk, { sizeMiB: 64, randomMiB: 16 });
  // one shared limit: 50 jobs reading 64 Mbit/s in all stay in their copy for a minute or two
  const nbd = await startNbdkit({ file: disk, rate: '64M' });
  let serve: Serve | undefined;
  try {
    serve = await startServe(['--listen', '127.0.0.1:0', '--concurrency', String(RUNNING), '--per-host', String(RUNNING), '--log-level', 'warn'], { FERRY_HOME: home });
    const token = (await readFile(serve.tokenPath, 'utf8')).trim();
    const api = new Api(serve.base, token);
    const ids: string[] = [];
    for (let i = 0; i < RUNNING; i++) {
      const r = await api.post('/jobs', { source: nbd.url, target: join(work, `console-sse-${i}.qcow2`) });
      if (r.status !== 201) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
      ids.push(r.body.id);
    }
    // all running, and most of them copying
    const deadline = Date.now() + 300_000;
    let allRunningSince: number | undefined;
    for (let n = 0; ; n++) {
      const jobs = (await api.get('/jobs?state=running')).body.jobs as { steps: { name: string; state: string }[] }[];
      const copying = jobs.filter(j => j.steps.some(s => s.state === 'running' && /^copy/.test(s.name))).length;
      if (n % 10 === 0) console.error(`bench: console: ${jobs.length} running, ${copying} copying`);
      // on 2 cores the 50 do not all copy at one moment (some plan, mount or verify): all running and 40 % copying (or two minutes of all running) is the condition
      if (jobs.length === RUNNING && (copying >= RUNNING * 0.4 || (allRunningSince ??= Date.now()) < Date.now() - 120_000)) break;
      if (Date.now() > deadline) throw new Error(`${jobs.length} of ${RUNNING} jobs running, ${copying} copying, after 300 s`);
      await new Promise(r => setTimeout(r, 500));
    }
    const ms = WINDOW_S * 1000;
    const [all, ...each] = await Promise.all([
      streamBytes(`${serve.base}/events`, token, ms),
      ...ids.map(id => streamBytes(`${serve!.base}/jobs/${id}/events`, token, ms)),
    ]);
    const running = (await api.get('/jobs?state=running')).body.jobs.length as number;
    for (const id of ids) await api.post(`/jobs/${id}/cancel`);
    return {
      running, withProgress: all.jobs, windowSeconds: WINDOW_S,
      allEventsBytesPerSecond: all.bytes / WINDOW_S, allEventsEventsPerSecond: all.events / WINDOW_S,
      perJobStreamsBytesPerSecond: each.reduce((n, e) => n + e.bytes, 0) / WINDOW_S,
    };
  } finally {
    await serve?.stop(300_000);
    await stopAllServers();
    await execa('rm', ['-f', disk]);
  }
}

export async function measureConsole(work: string): Promise<ConsoleBench> {
  const render = await firstRender(work);
  const sse = await sseTraffic(work);
  return { jobsInStore: STORE_JOBS, ...render, ...sse };
}

export function reportConsole(r: ConsoleBench): string {
  const KiB = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
  return [
    `\nconsole: the jobs page with ${r.jobsInStore} jobs in the store (chromium headless, 1280x800)`,
    `  first render:     ${r.firstRenderColdMs.toFixed(0)} ms with nothing cached, ${r.firstRenderWarmMedianMs.toFixed(0)} ms median with the assets cached`,
    `  jobs fetched:     ${KiB(r.pageOfJobsBytes)} for the page of 50 (the whole list would be ${KiB(r.allJobsBytes)})`,
    `console: event traffic with ${r.running} jobs running (${r.withProgress} of them sending progress), over ${r.windowSeconds} s`,
    `  GET /events:      ${KiB(r.allEventsBytesPerSecond)}/s, ${r.allEventsEventsPerSecond.toFixed(1)} events/s (one connection)`,
    `  per-job streams:  ${KiB(r.perJobStreamsBytesPerSecond)}/s over ${r.running} connections`,
  ].join('\n');
}
