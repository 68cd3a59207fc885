// `ferry serve` end to end: a real service process (runner + HTTP API) on a
// free loopback port with FERRY_HOME in a temp dir, driven only through HTTP.
// Jobs convert small real disks; every target is checked with `ferry verify`.
// The token must never show in the service's output, in the job records or in
// the bytes of the store's files.
import assert from 'node:assert/strict';
import { access, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { Api, readEvents, startServe, type Serve, type SseEvent } from './support/api-client.js';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { imageMounts } from './support/image-mount.js';
import { assertSameFiles } from './support/independent.js';
import { machineState } from './support/guard.js';
import { makeSmallDisk } from './support/small-disk.js';
import { startNbdkit, stopAllServers } from './support/servers.js';

let serve: Serve | undefined;
let api: Api;
let token: string;
let srcSum: string;
// registered first so it runs before the guard and the temp dir's removal: the service must be gone by then
after(async () => {
  await stopAllServers();
  if (!serve) return;
  const code = await serve.stop();
  // the sources first: a failed assertion below must not hide a changed source
  assert.equal(await sha256(src) + await sha256(big), srcSum, 'the sources are unchanged');
  assert.equal(code, 0, `ferry serve exit status; its output:\n${serve.output()}`);
  assert.ok(!serve.output().includes(token), 'the token is in the service output');
});
guardMachine();
const dir = await tempDir('ferry-api-');
const home = join(dir, 'home');
const src = join(dir, 'small.raw');
const big = join(dir, 'bigger.raw');

before(async () => {
  await makeSmallDisk(src, { sizeMiB: 64 });
  // big enough that a cancel lands while it runs, and that the copy lasts the few seconds a rate needs
  // (1 GiB of random data: about 3 s from the page cache here)
  await makeSmallDisk(big, { sizeMiB: 1200, randomMiB: 1024 });
  srcSum = await sha256(src) + await sha256(big);
  serve = await startServe(['--listen', '127.0.0.1:0', '--concurrency', '2'], { FERRY_HOME: home });
  token = (await readFile(serve.tokenPath, 'utf8')).trim();
  api = new Api(serve.base, token);
});


const target = (name: string) => join(dir, name);

async function waitDone(id: string, timeoutMs = 120_000): Promise<any> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await api.get(`/jobs/${id}`);
    if (['done', 'failed', 'cancelled'].includes(r.body.state)) return r.body;
    if (Date.now() > end) throw new Error(`job ${id} still ${r.body.state} after ${timeoutMs} ms`);
    await new Promise(res => setTimeout(res, 200));
  }
}

const seconds = (j: any) => ((Date.parse(j.updatedAt) - Date.parse(j.createdAt)) / 1000).toFixed(1);
const exists = (p: string) => access(p).then(() => true, () => false);

describe('ferry serve', () => {
  it('prints where it listens (loopback) and keeps the token in FERRY_HOME/api-token, mode 0600', async () => {
    assert.match(serve!.base, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(serve!.tokenPath, join(home, 'api-token'));
    assert.equal((await stat(serve!.tokenPath)).mode & 0o777, 0o600);
    assert.match(token, /^[0-9a-f]{64}$/);
  });

  it('401 without the token or with a wrong one, on every route', async () => {
    for (const t of [undefined, '0'.repeat(64)]) {
      const a = new Api(serve!.base, t);
      for (const [m, p] of [['GET', '/jobs'], ['POST', '/jobs'], ['GET', '/jobs/x'], ['GET', '/jobs/x/events'], ['POST', '/jobs/x/cancel'], ['POST', '/jobs/x/retry'], ['GET', '/jobs/x/logs'], ['GET', '/openapi.json']] as const) {
        const r = await a.req(m, p, m === 'POST' && p === '/jobs' ? { source: src, target: target('never.qcow2') } : undefined);
        assert.equal(r.status, 401, `${m} ${p} with ${t ?? 'no token'}`);
      }
    }
    assert.equal(await exists(target('never.qcow2')), false);
    assert.equal((await api.get('/jobs')).body.jobs.length, 0, 'nothing was queued');
  });

  it('GET /openapi.json describes every route', async () => {
    const r = await api.get('/openapi.json');
    assert.equal(r.status, 200);
    assert.equal(r.body.openapi, '3.1.0');
    const ops = Object.entries(r.body.paths as Record<string, object>).flatMap(([p, o]) => Object.keys(o).map(m => `${m.toUpperCase()} ${p}`)).sort();
    assert.deepEqual(ops, ['DELETE /machines/{id}', 'GET /', 'GET /assets/{name}', 'GET /boot/initrd.img', 'GET /boot/ipxe', 'GET /boot/vmlinuz',
      'GET /drivers', 'GET /events', 'GET /images', 'GET /images/{name}',
      'GET /jobs', 'GET /jobs/{id}', 'GET /jobs/{id}/events', 'GET /jobs/{id}/logs',
      'GET /machines', 'GET /machines/{id}', 'GET /machines/{id}/work', 'GET /openapi.json', 'GET /profiles', 'GET /session',
      'POST /jobs', 'POST /jobs/{id}/cancel', 'POST /jobs/{id}/retry', 'POST /login', 'POST /logout',
      'POST /machines/register', 'POST /machines/{id}/booted', 'POST /machines/{id}/status']);
  });

  it('a good spec: 201, events with steps and progress (bytes, rate, ETA) ending in done; the target verifies', async t => {
    const out = target('good.qcow2');
    // served at about 250 MB/s: a copy from the page cache ends within the rate's first second, and a
    // rate with an ETA needs a second of the copy still to go
    const paced = await startNbdkit({ file: big, rate: '2G' });
    const r = await api.post('/jobs', { source: paced.url, target: out });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = r.body.id;
    assert.equal(r.headers.get('location'), `/jobs/${id}`);
    const events = await readEvents(api, `/jobs/${id}/events`, { timeoutMs: 180_000 });
    await paced.stop();
    assert.equal(events.status, 200);
    assert.ok(events.ended, 'the stream ended with the job');
    const ev = events.events;
    t.diagnostic(`events: ${ev.filter(e => e.event !== 'log').map(e => e.event === 'progress' ? `progress(${e.data.step} ${e.data.bytes}/${e.data.total}${e.data.rate ? ` ${e.data.rate} B/s eta ${e.data.etaSeconds}` : ''})` : `${e.event}(${e.data.step ?? ''}${e.data.state ?? ''}${e.data.message && e.event === 'step' ? ' ' + e.data.message : ''})`).join(' ')}`);
    assert.equal(ev[0].event, 'job');
    assert.equal(ev[0].data.id, id);
    const steps = ev.filter(e => e.event === 'step').map(e => e.data.step);
    assert.ok(steps.length >= 2, `step events: ${steps.join(', ')}`);
    const progress = ev.filter(e => e.event === 'progress').map(e => e.data);
    assert.ok(progress.length > 0, 'progress events');
    assert.ok(progress.every(p => typeof p.bytes === 'number' && typeof p.total === 'number'), 'bytes and total on every progress event');
    assert.ok(progress.some(p => p.rate > 0 && typeof p.etaSeconds === 'number'),
      `a progress event with rate and ETA: ${JSON.stringify(progress.slice(0, 5))}`);
    assert.deepEqual([ev.at(-1)!.event, ev.at(-1)!.data.state], ['state', 'done']);
    const job = (await api.get(`/jobs/${id}`)).body;
    assert.equal(job.state, 'done');
    assert.ok(job.steps.every((s: any) => s.state === 'done'), JSON.stringify(job.steps));
    await assertSameFiles(big, out);
    const v = await ferry(['verify', big, out]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    // listed, and by state
    assert.ok((await api.get('/jobs?state=done')).body.jobs.some((j: any) => j.id === id));
    assert.ok(!(await api.get('/jobs?state=queued')).body.jobs.some((j: any) => j.id === id));
  });

  it('a bad spec: 400 with one error per field; nothing queued', async () => {
    const before = (await api.get('/jobs')).body.jobs.length;
    const r = await api.post('/jobs', { source: 'relative.raw', format: 'vhd', size: 'big', options: { mode: 'copy' }, register: { name: 'x' } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'BAD_SPEC');
    const fields = new Set(r.body.fieldErrors.map((f: any) => f.field));
    for (const f of ['source', 'target', 'format', 'size', 'options.mode', 'register.libvirt']) assert.ok(fields.has(f), `${f} in ${JSON.stringify(r.body.fieldErrors)}`);
    const rel = await api.post('/jobs', { source: 'relative.raw', target: target('rel.qcow2') });
    assert.equal(rel.status, 400);
    assert.deepEqual(rel.body.fieldErrors.map((f: any) => f.field), ['source']);
    // an unknown hardware profile is refused at submit, like the CLI's preflight, not failed later
    const prof = await api.post('/jobs', { source: src, target: target('prof.qcow2'), profile: 'no-such-profile' });
    assert.equal(prof.status, 400, JSON.stringify(prof.body));
    assert.equal(prof.body.error, 'BAD_SPEC');
    assert.deepEqual(prof.body.fieldErrors.map((f: any) => f.field), ['profile']);
    assert.match(prof.body.fieldErrors[0].message, /no hardware profile named 'no-such-profile'; known: .*kvm-virtio/);
    assert.equal((await api.get('/jobs')).body.jobs.length, before);
  });

  it('diff, delta-apply and factory-build jobs: the delta applied to the base gives the changed files (read on the test\'s own mount); a conflict fails typed; the factory image is in the catalog with its recipe', { timeout: 300_000 }, async t => {
    const { withMounted, withQcow2Mounted } = imageMounts(dir);
    const ROOT_AT = 2048 * 512, ROOT_SIZE = (64 - 40) * 2048 * 512; // small-disk.ts's ext4 partition
    const changed = target('changed.raw');
    await execa('cp', ['--sparse=always', src, changed]);
    await withMounted(changed, ROOT_AT, ROOT_SIZE, 'ext4', async m => {
      await writeFile(join(m, 'etc/hostname'), 'changed\n');
      await mkdir(join(m, 'data'));
      await writeFile(join(m, 'data/new'), 'a new file\n');
      await rm(join(m, 'etc/deep/er/file'));
      // a new hard-linked pair, and a sparse file: 8 MiB long, 4 KiB of data in its middle
      await writeFile(join(m, 'data/pair-a'), 'one file, two names\n');
      await execa('ln', [join(m, 'data/pair-a'), join(m, 'data/pair-b')]);
      await execa('truncate', ['-s', '8M', join(m, 'data/sparse')]);
      await execa('dd', ['if=/dev/urandom', `of=${join(m, 'data/sparse')}`, 'bs=4096', 'count=1', 'seek=1000', 'conv=notrunc', 'status=none']);
    });
    // bad specs: each field named, nothing queued
    const before = (await api.get('/jobs')).body.jobs.length;
    const bad = await api.post('/jobs', { kind: 'diff', source: src, paths: 'etc', profile: 'kvm-virtio' });
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    assert.deepEqual(bad.body.fieldErrors.map((f: any) => f.field).sort(), ['changed', 'paths', 'profile']);
    const bad2 = await api.post('/jobs', { kind: 'delta-apply', delta: 'rel.ferrydelta', source: src });
    assert.equal(bad2.status, 400, JSON.stringify(bad2.body));
    assert.deepEqual(bad2.body.fieldErrors.map((f: any) => f.field).sort(), ['delta', 'target']);
    assert.equal((await api.get('/jobs')).body.jobs.length, before);

    const deltaFile = target('small.ferrydelta');
    const d = await api.post('/jobs', { kind: 'diff', source: src, changed, target: deltaFile });
    assert.equal(d.status, 201, JSON.stringify(d.body));
    const diff = await waitDone(d.body.id);
    assert.equal(diff.state, 'done', JSON.stringify(diff.error));
    const files = diff.result.files.map((f: any) => `${f.change} ${f.path}`);
    // an image with no OS names its volumes by partition
    for (const f of ['changed p1/etc/hostname', 'changed p1/hostname.link', 'added p1/data', 'added p1/data/new', 'added p1/data/pair-b', 'added p1/data/sparse', 'removed p1/etc/deep/er/file']) assert.ok(files.includes(f), `${f} in ${files.join('; ')}`);
    assert.equal(diff.result.delta.file, deltaFile);
    assert.equal((await readFile(deltaFile)).subarray(0, 8).toString('latin1'), 'FRYDELTA');
    const shown = await ferry(['delta', 'show', deltaFile, '--json']);
    assert.equal(shown.exitCode, 0, shown.stderr);

    const overlay = target('applied.qcow2');
    const a = await api.post('/jobs', { kind: 'delta-apply', delta: deltaFile, source: src, target: overlay });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    const applied = await waitDone(a.body.id);
    assert.equal(applied.state, 'done', JSON.stringify(applied.error));
    assert.equal(applied.result.overlay, overlay);
    const info = JSON.parse(String((await execa('qemu-img', ['info', '--output=json', '-U', overlay])).stdout));
    assert.equal(info['backing-filename'], src);
    const [hostname, added, gone] = await withQcow2Mounted(overlay, ROOT_AT, async m =>
      [await readFile(join(m, 'etc/hostname'), 'utf8'), await readFile(join(m, 'data/new'), 'utf8'), await exists(join(m, 'etc/deep/er/file'))] as const);
    assert.deepEqual([hostname, added, gone], ['changed\n', 'a new file\n', false]);
    // hard links stay one file (stat: one inode, two links), a sparse file keeps its holes (stat %b, du): read by coreutils
    const statOf = (m: string, ...names: string[]) => execa('stat', ['-c', '%n %i %h %s %b', ...names.map(n => join(m, n))]).then(r => String(r.stdout).split('\n').map(l => l.split(' ')));
    const [links, sparse, du, sums] = await withQcow2Mounted(overlay, ROOT_AT, async m => [
      await statOf(m, 'data/pair-a', 'data/pair-b', 'etc/hostname', 'hostname.link'), (await statOf(m, 'data/sparse'))[0],
      String((await execa('du', ['-k', join(m, 'data/sparse')])).stdout).split('\t')[0],
      await Promise.all(['data/sparse', 'data/pair-b'].map(n => sha256(join(m, n)))),
    ] as const);
    t.diagnostic(`after apply: ${links.map(l => l.join(' ')).join('; ')}; ${sparse.join(' ')}; du ${du} KiB`);
    assert.equal(links[0][1], links[1][1], 'data/pair-a and data/pair-b: one inode');
    assert.deepEqual([links[0][2], links[1][2]], ['2', '2'], 'two links each');
    assert.equal(links[2][1], links[3][1], 'etc/hostname and hostname.link: still one inode');
    assert.deepEqual([links[2][2], links[3][2]], ['2', '2']);
    assert.equal(sparse[3], String(8 << 20), 'the sparse file is 8 MiB long');
    assert.ok(Number(sparse[4]) <= 64, `the sparse file holds ${sparse[4]} blocks of 512 bytes (4 KiB of data, not 8 MiB)`);
    assert.ok(Number(du) <= 32, `du: ${du} KiB`);
    const want = await withMounted(changed, ROOT_AT, ROOT_SIZE, 'ext4', m => Promise.all(['data/sparse', 'data/pair-b'].map(n => sha256(join(m, n)))), true);
    assert.deepEqual(sums, want, 'the same bytes as in the changed image');

    // the same delta onto an image whose /etc/hostname is neither the base nor the result: DELTA_CONFLICT, no overlay
    const other = target('other.raw');
    await execa('cp', ['--sparse=always', src, other]);
    await withMounted(other, ROOT_AT, ROOT_SIZE, 'ext4', m => writeFile(join(m, 'etc/hostname'), 'other\n'));
    const c = await api.post('/jobs', { kind: 'delta-apply', delta: deltaFile, source: other, target: target('conflict.qcow2') });
    const conflict = await waitDone(c.body.id);
    assert.deepEqual([conflict.state, conflict.error?.code], ['failed', 'DELTA_CONFLICT'], JSON.stringify(conflict.error));
    assert.match(conflict.error.message, /p1\/etc\/hostname/);
    assert.deepEqual((await readdir(dir)).filter(n => n.includes('conflict.qcow2')), [], 'no overlay or partial left');

    // the factory: the base in the catalog, the delta, a recipe → a new catalog image whose record holds the recipe
    const add = await ferry(['images', 'add', src, '--name', 'small-base'], { env: { FERRY_HOME: home } });
    assert.equal(add.exitCode, 0, add.stderr);
    const recipe = target('small.yaml');
    await writeFile(recipe, `name: small-made\nbase: small-base\noutput: small-made.qcow2\ndeltas: [${deltaFile}]\ntags: [factory]\n`);
    const f = await api.post('/jobs', { kind: 'factory-build', recipe });
    assert.equal(f.status, 201, JSON.stringify(f.body));
    const built = await waitDone(f.body.id);
    assert.equal(built.state, 'done', JSON.stringify(built.error));
    const image = await api.get('/images/small-made');
    assert.equal(image.status, 200, JSON.stringify(image.body));
    assert.equal(image.body.source, target('small-made.qcow2'));
    assert.deepEqual(image.body.recipe.deltas, [deltaFile]);
    assert.equal(await withQcow2Mounted(target('small-made.qcow2'), ROOT_AT, m => readFile(join(m, 'etc/hostname'), 'utf8')), 'changed\n');
    t.diagnostic(`diff ${seconds(diff)} s, delta-apply ${seconds(applied)} s, factory-build ${seconds(built)} s`);
  });

  it('a FAT volume (an EFI system partition) through diff and delta-apply jobs: the changes listed, and on the overlay as mtools reads it', { timeout: 120_000 }, async () => {
    // a GPT disk with one FAT partition at 1 MiB, 38 MiB long, filled with mtools (no FAT driver in this kernel)
    const espA = target('esp-a.raw'), espB = target('esp-b.raw');
    const fatOf = (raw: string) => `${raw}@@${1 << 20}`;
    const mt = (cmd: string, raw: string, ...args: string[]) => execa(cmd, ['-i', fatOf(raw), ...args], { env: { MTOOLS_SKIP_CHECK: '1' } });
    await execa('truncate', ['-s', '40M', espA]);
    await execa('sfdisk', ['-q', espA], { input: 'label: gpt\nstart=2048, size=77824, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n' });
    await execa('mkfs.fat', ['--offset', '2048', '-n', 'ESP', espA, String(77824 / 2)]);
    const put = async (raw: string, path: string, text: string) => {
      const f = target('fat-file');
      await writeFile(f, text);
      await mt('mcopy', raw, '-o', f, `::${path}`);
      await rm(f);
    };
    await mt('mmd', espA, '::/EFI');
    await mt('mmd', espA, '::/EFI/debian');
    await put(espA, '/EFI/debian/grub.cfg', 'search --fs-uuid old\n');
    await put(espA, '/EFI/debian/old.efi', 'old loader');
    await execa('cp', ['--sparse=always', espA, espB]);
    await put(espB, '/EFI/debian/grub.cfg', 'search --fs-uuid new-and-longer\n');
    await mt('mdel', espB, '::/EFI/debian/old.efi');
    await mt('mmd', espB, '::/EFI/BOOT');
    await put(espB, '/EFI/BOOT/BOOTX64.EFI', 'a new loader');
    const before = await sha256(espA);

    const deltaFile = target('esp.ferrydelta');
    const diff = await waitDone((await api.post('/jobs', { kind: 'diff', source: espA, changed: espB, target: deltaFile })).body.id);
    assert.equal(diff.state, 'done', JSON.stringify(diff.error));
    assert.deepEqual(diff.result.skipped, []);
    assert.deepEqual(diff.result.files.map((f: any) => `${f.change} ${f.path}`).sort(),
      ['added p1/EFI/BOOT', 'added p1/EFI/BOOT/BOOTX64.EFI', 'changed p1/EFI/debian/grub.cfg', 'removed p1/EFI/debian/old.efi']);

    const overlay = target('esp-applied.qcow2');
    const applied = await waitDone((await api.post('/jobs', { kind: 'delta-apply', delta: deltaFile, source: espA, target: overlay })).body.id);
    assert.equal(applied.state, 'done', JSON.stringify(applied.error));
    const flat = target('esp-applied.raw');
    await execa('qemu-img', ['convert', '-U', '-O', 'raw', overlay, flat]);
    assert.equal(String((await mt('mtype', flat, '::/EFI/debian/grub.cfg')).stdout), 'search --fs-uuid new-and-longer');
    assert.equal(String((await mt('mtype', flat, '::/EFI/BOOT/BOOTX64.EFI')).stdout), 'a new loader');
    assert.equal((await mt('mdir', flat, '-b', '::/EFI/debian/old.efi').catch(e => e)).exitCode, 1, 'old.efi is gone');
    const loop = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(1 << 20), '--sizelimit', String(77824 * 512), flat])).stdout).trim();
    try {
      const fsck = await execa('fsck.fat', ['-n', loop], { reject: false });
      assert.equal(fsck.exitCode, 0, `fsck.fat -n: ${fsck.stdout}${fsck.stderr}`);
    } finally {
      await execa('losetup', ['-d', loop]);
    }
    assert.equal(await sha256(espA), before, 'the base image is unchanged');
    await rm(flat);
  });

  it('unknown ids: 404 JOB_NOT_FOUND', async () => {
    for (const [m, p] of [['GET', '/jobs/0000dead'], ['GET', '/jobs/0000dead/events'], ['POST', '/jobs/0000dead/cancel']] as const) {
      const r = await api.req(m, p);
      assert.deepEqual([r.status, r.body.error], [404, 'JOB_NOT_FOUND'], `${m} ${p}`);
    }
  });

  it('cancel a running job: 202, the stream ends cancelled, no partial target; a second cancel is 409', async () => {
    const out = target('cancelled.qcow2');
    const { body: job } = await api.post('/jobs', { source: big, target: out });
    let cancelled: Promise<any> | undefined;
    const events = await readEvents(api, `/jobs/${job.id}/events`, {
      timeoutMs: 120_000,
      onEvent: (e: SseEvent) => {
        // cancel once the copy moves
        if (!cancelled && e.event === 'progress' && e.data.bytes > 0) cancelled = api.post(`/jobs/${job.id}/cancel`);
      },
    });
    assert.ok(cancelled, 'progress was seen before the end');
    assert.equal((await cancelled).status, 202);
    assert.ok(events.ended);
    assert.deepEqual([events.events.at(-1)!.event, events.events.at(-1)!.data.state], ['state', 'cancelled']);
    const final = (await api.get(`/jobs/${job.id}`)).body;
    assert.equal(final.state, 'cancelled');
    assert.equal(final.error?.code, 'JOB_CANCELLED');
    assert.deepEqual((await readdir(dir)).filter(n => n.startsWith('cancelled')), [], 'no target or partial left');
    const again = await api.post(`/jobs/${job.id}/cancel`);
    assert.deepEqual([again.status, again.body.error], [409, 'JOB_FINISHED']);
  });

  it('jobs that cannot finish fail with a typed reason and leave nothing: missing source, unreachable libvirt, full target directory', { timeout: 300_000 }, async t => {
    const full = join(dir, 'full');
    await execa('mkdir', ['-p', full]);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', full]);
    try {
      const cases: [string, Record<string, unknown>, (e: any) => boolean][] = [
        ['missing source', { source: join(dir, 'no-such-disk.raw'), target: target('f-missing.qcow2') }, e => e.code === 'SOURCE_MISSING'],
        ['unreachable libvirt', { source: src, target: target('f-libvirt.qcow2'), register: { libvirt: 'qemu+tcp://127.0.0.1:9/system', name: 'ferry-api-test' } }, e => /127\.0\.0\.1|libvirt/i.test(e.message)],
        ['full target directory', { source: src, target: join(full, 'f-full.qcow2'), format: 'raw' }, e => /space|full/i.test(`${e.code} ${e.message}`)],
      ];
      const ids: string[] = [];
      for (const [what, spec] of cases) {
        const r = await api.post('/jobs', spec);
        assert.equal(r.status, 201, `${what}: ${JSON.stringify(r.body)}`);
        ids.push(r.body.id);
      }
      for (const [i, [what, spec, reason]] of cases.entries()) {
        const job = await waitDone(ids[i], 240_000);
        t.diagnostic(`${what}: ${job.state} ${job.error?.code}: ${job.error?.message}`);
        assert.equal(job.state, 'failed', `${what}: ${JSON.stringify(job.error)}`);
        assert.ok(job.error && job.error.code !== 'INTERNAL' && job.error.message, `${what}: a typed error: ${JSON.stringify(job.error)}`);
        assert.ok(reason(job.error), `${what}: the reason names the problem: ${JSON.stringify(job.error)}`);
        const out = spec.target as string;
        assert.equal(await exists(out), false, `${what}: ${out} was left`);
        assert.deepEqual((await readdir(dirname(out))).filter(n => n.startsWith(basename(out)) && n !== basename(out)), [], `${what}: a partial was left`);
      }
      assert.deepEqual(await readdir(full), []);

      // its log and a retry, through the API: the missing source is still missing, so it fails the same way again
      const logs = await api.get(`/jobs/${ids[0]}/logs`);
      assert.equal(logs.status, 200);
      assert.ok(logs.body.lines.some((l: { line: string }) => /^failed: SOURCE_MISSING/.test(l.line)), JSON.stringify(logs.body));
      const retried = await api.post(`/jobs/${ids[0]}/retry`);
      assert.deepEqual([retried.status, retried.body.state, retried.body.attempts], [202, 'queued', 0]);
      const again = await waitDone(ids[0], 60_000);
      assert.deepEqual([again.state, again.error?.code, again.attempts], ['failed', 'SOURCE_MISSING', 1]);
      const newer = await api.get(`/jobs/${ids[0]}/logs?after=${logs.body.lines.at(-1).n}`);
      assert.match(newer.body.lines.map((l: { line: string }) => l.line).join('\n'), /retry \(was failed: SOURCE_MISSING\)[\s\S]*failed: SOURCE_MISSING/);
    } finally {
      await execa('umount', [full]);
    }
  });

  it('the token is in no job record and nowhere in the store files', async () => {
    const jobs = await api.get('/jobs');
    assert.ok(jobs.body.jobs.length >= 2);
    assert.ok(!JSON.stringify(jobs.body).includes(token));
    for (const name of await readdir(home)) {
      if (name === 'api-token') continue;
      const p = join(home, name);
      if (!(await stat(p)).isFile()) continue;
      const bytes = await readFile(p);
      assert.equal(bytes.indexOf(token), -1, `token in ${name}`);
      assert.equal(bytes.indexOf(Buffer.from(token, 'hex')), -1, `token (binary) in ${name}`);
    }
    assert.ok(!serve!.output().includes(token), 'token in the service output');
  });

  it('SIGTERM during a job: exit 0, nothing held; a restart keeps the token and the jobs and resumes the job to done', { timeout: 300_000 }, async () => {
    const out = target('resumed.qcow2');
    const { body: job } = await api.post('/jobs', { source: big, target: out });
    // stop once its copy moves
    await readEvents(api, `/jobs/${job.id}/events`, { timeoutMs: 120_000, stopWhen: e => e.event === 'progress' && e.data.bytes > 0 });
    const t0 = Date.now();
    assert.equal(await serve!.stop(), 0, serve!.output());
    assert.ok(Date.now() - t0 < 30_000, `stopping took ${Date.now() - t0} ms`);
    assert.match(serve!.output(), /ferry serve: SIGTERM: stopping\n[\s\S]*ferry serve: stopped\n/);
    assert.ok(!serve!.output().includes(token));
    const { loops, mounts, daemons } = await machineState();
    assert.ok(!loops.some(l => l.includes(dir)), `loop devices left: ${loops.join('; ')}`);
    assert.ok(!mounts.some(m => / fuse/.test(m) && m.includes('ferry')), `mounts left: ${mounts.join('; ')}`);
    assert.ok(!daemons.some(d => d.includes(dir)), `daemons left: ${daemons.join('; ')}`);

    serve = await startServe(['--listen', '127.0.0.1:0'], { FERRY_HOME: home });
    assert.equal((await readFile(serve.tokenPath, 'utf8')).trim(), token, 'the same token');
    api = new Api(serve.base, token);
    const done = await waitDone(job.id, 240_000);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    assert.ok(done.attempts >= 2, `attempts ${done.attempts}`);
    await assertSameFiles(big, out);
    const v = await ferry(['verify', big, out]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    const all = (await api.get('/jobs')).body.jobs;
    assert.ok(all.some((j: any) => j.state === 'cancelled') && all.some((j: any) => j.state === 'failed'), 'the earlier jobs are kept');
  });

  it('refuses a token file that others can read, and a port in use', async () => {
    const other = join(dir, 'home2');
    await execa('mkdir', ['-p', other]);
    await execa('sh', ['-c', `printf '%064d\\n' 0 > ${other}/api-token && chmod 644 ${other}/api-token`]);
    const r = await ferry(['serve', '--listen', '127.0.0.1:0'], { env: { FERRY_HOME: other } });
    assert.equal(r.exitCode, 8);
    assert.match(r.stderr, /API_TOKEN_UNSAFE: .*chmod 600/);
    const port = new URL(serve!.base).port;
    const busy = await ferry(['serve', '--listen', `127.0.0.1:${port}`], { env: { FERRY_HOME: join(dir, 'home3') } });
    assert.equal(busy.exitCode, 2);
    assert.match(busy.stderr, /LISTEN_FAILED: cannot listen on 127\.0\.0\.1:\d+: the port is in use/);
  });
});
