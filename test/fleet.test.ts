// A fleet on a real PostgreSQL 15 (its own cluster in this file's temp dir):
// three `ferry worker` hosts, each in its own network namespace with its own
// FERRY_HOME, reaching PostgreSQL and an NBD server over veth links, and one
// `ferry serve --no-worker` API. Judged from outside Ferry: the NBD server's
// own TCP connections (ss) for the per-host bound and who worked, qemu-img
// compare and the strict tree compare for the targets, psql for the rows.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { access, chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import Database from 'better-sqlite3';
import { FERRY, ferry, ferryProcess, guardMachine, tempDir } from './support/harness.js';
import { assertSameFiles } from './support/independent.js';
import { makeNetnsLink, type NetnsLink } from './support/netns.js';
import { startPostgres, type Postgres } from './support/postgres.js';
import { freePort, startNbdkit, startQemuNbd, stopAllServers, type Server } from './support/servers.js';
import { makeSmallDisk } from './support/small-disk.js';

guardMachine();
const dir = await tempDir('ferryfleet-');
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));
const exists = (p: string) => access(p).then(() => true, () => false);

/** the "storage host": an address of this host's loopback that every namespace routes to over its own veth */
const SRC_IP = '10.241.9.1';
const HEARTBEAT_S = 8;
const NAMES = ['a', 'b', 'c'] as const;

let pg: Postgres;
let links: NetnsLink[] = [];
let storeUrl = '';
let pwFile = '';
let small = '', big = '';
let nbdSmall: Server, nbdBig: Server;
let api: ResultPromise;
let apiUrl = '', token = '';
const workers = new Map<string, ResultPromise>();
let addedLo = false;

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 60_000, every = 200): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

/** One worker host: its namespace, its FERRY_HOME; c authenticates through PGPASSFILE over TLS (verify-full), a and b with the password file. */
function startWorker(name: typeof NAMES[number]): void {
  const ns = `ferry-fleet-${name}`;
  const env: Record<string, string> = { FERRY_HOME: join(dir, `home-${name}`) };
  const args = ['worker', '--name', `w-${name}`, '--concurrency', '2', '--per-host', '1', '--heartbeat-timeout', String(HEARTBEAT_S)];
  if (name === 'c') {
    env.PGPASSFILE = join(dir, 'pgpass');
    args.push('--store', `${storeUrl}?sslmode=verify-full&sslrootcert=${pg.ca}`, '--tag', 'rack-c');
  } else {
    args.push('--store', storeUrl, '--store-password-file', pwFile);
  }
  // its own process group: kill -9 of the group is the host dying
  workers.set(name, execa('ip', ['netns', 'exec', ns, 'node', FERRY, ...args], { env, reject: false, stdin: 'ignore', detached: true }));
}

async function stopWorker(name: string): Promise<void> {
  const w = workers.get(name);
  if (!w) return;
  workers.delete(name);
  w.kill('SIGTERM');
  // a worker that cannot stop in time is a failure of its own, not a reason to hang the file
  const t = setTimeout(() => { try { process.kill(-w.pid!, 'SIGKILL'); } catch { /* gone */ } }, 30_000);
  const r = await w;
  clearTimeout(t);
  assert.ok(!r.isTerminated || r.signal === 'SIGTERM', `worker ${name} did not stop on SIGTERM within 30 s`);
}

const headers = () => ({ authorization: `Bearer ${token}`, 'content-type': 'application/json' });
interface Job { id: string; state: string; attempts: number; runner?: string; steps: { name: string; state: string }[]; error?: { code: string } }
async function submit(spec: object): Promise<Job> {
  const r = await fetch(`${apiUrl}/jobs`, { method: 'POST', headers: headers(), body: JSON.stringify(spec) });
  assert.equal(r.status, 201, await r.clone().text());
  return await r.json() as Job;
}
const getJob = async (id: string) => await (await fetch(`${apiUrl}/jobs/${id}`, { headers: headers() })).json() as Job;
const jobLog = async (id: string) => ((await (await fetch(`${apiUrl}/jobs/${id}/logs`, { headers: headers() })).json()) as { lines: { line: string }[] }).lines.map(l => l.line);
const finished = (id: string, ms = 120_000) => until(`job ${id} to end`, async () => { const j = await getJob(id); return ['done', 'failed', 'cancelled'].includes(j.state) && j; }, ms, 250);

/** Peers (by address) with an established connection to this NBD server right now: ss, not Ferry. */
async function nbdPeers(port: number): Promise<string[]> {
  const r = await execa('ss', ['-Htn', 'state', 'established', 'src', `${SRC_IP}:${port}`]);
  return [...new Set(String(r.stdout).split('\n').filter(Boolean).map(l => l.trim().split(/\s+/).at(-1)!.replace(/:\d+$/, '')))];
}

/** The worker host's leftovers when it died: its qemu-storage-daemons die with it (kill -9 of a host). */
async function daemonsOf(partialOrDir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmd.startsWith('qemu-storage-daemon') && cmd.includes(partialOrDir)) pids.push(Number(p));
  }
  return pids;
}

/** the work dir of a run, from its target daemon's FUSE mountpoint */
async function workDirOf(daemon: number): Promise<string | undefined> {
  return (await readFile(`/proc/${daemon}/cmdline`, 'utf8')).split('\0').map(a => /"mountpoint": ?"([^"]+)\/target\.img"/.exec(a)?.[1]).find(Boolean);
}

describe('ferry fleet on PostgreSQL', () => {
/**
 * A worker host crashing: its processes die (the worker's group, the daemons it started in their own
 * sessions) and, as at a reboot, the kernel's state of it goes too (its mounts and loop devices, found
 * before the daemons under them die). What is left (records, the work dir) is its own business when it is back.
 */
async function crashHost(w: ResultPromise, workDir: string | undefined, daemons: number[]): Promise<void> {
  const within = (p: string) => !!workDir && (p === workDir || p.startsWith(`${workDir}/`));
  const loops = String((await execa('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE'])).stdout).split('\n')
    .map(l => l.trim().split(/\s+/)).filter(([, back]) => back && within(back)).map(([dev]) => dev);
  const onLoops = String((await execa('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE'])).stdout).split('\n')
    .map(l => l.trim().split(/\s+/)).filter(([, back]) => back && loops.includes(back)).map(([dev]) => dev);
  try { process.kill(-w.pid!, 'SIGKILL'); } catch { /* it ended by itself */ }
  for (const pid of [...daemons, ...(workDir ? await daemonsOf(workDir) : [])]) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n').map(l => l.split(' ')[1]).filter(m => m && within(m)).sort().reverse();
  for (const m of mounts) await execa('umount', ['-l', m], { reject: false });
  for (const dev of [...onLoops, ...loops]) await execa('losetup', ['-d', dev], { reject: false });
}

before(async () => {
  await mkdir(join(dir, 'out'));
  const lo = String((await execa('ip', ['-4', '-o', 'addr', 'show', 'dev', 'lo'])).stdout);
  assert.ok(!lo.includes(`${SRC_IP}/`), `${SRC_IP} is already on lo (a leftover or a clash)`);
  await execa('ip', ['addr', 'add', `${SRC_IP}/32`, 'dev', 'lo']);
  addedLo = true;
  for (const [i, n] of NAMES.entries()) {
    const l = await makeNetnsLink({ ns: `ferry-fleet-${n}`, hostIf: `ffl-${n}0`, nsIf: `ffl-${n}1`, hostIp: `10.241.${i + 1}.1`, nsIp: `10.241.${i + 1}.2` });
    links.push(l);
    await execa('ip', ['-n', l.ns, 'route', 'add', 'default', 'via', l.hostIp]);
  }
  [pg] = await Promise.all([
    startPostgres(dir, ['127.0.0.1', SRC_IP]),
    makeSmallDisk(small = join(dir, 'small.raw'), { sizeMiB: 64 }),
    makeSmallDisk(big = join(dir, 'big.raw'), { sizeMiB: 700, randomMiB: 480 }),
  ]);
  storeUrl = `postgres://${pg.user}@${SRC_IP}:${pg.port}/${pg.db}`;
  pwFile = join(dir, 'store-password');
  await writeFile(pwFile, `${pg.password}\n`, { mode: 0o600 });
  await writeFile(join(dir, 'pgpass'), `${SRC_IP}:${pg.port}:${pg.db}:${pg.user}:${pg.password}\n`, { mode: 0o600 });
  nbdSmall = await startQemuNbd({ file: small, bind: SRC_IP });
  nbdBig = await startQemuNbd({ file: big, bind: SRC_IP, exportName: 'big' });
  const port = await freePort();
  apiUrl = `http://127.0.0.1:${port}`;
  api = ferryProcess(['serve', '--store', storeUrl, '--store-password-file', pwFile, '--no-worker', '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], { env: { FERRY_HOME: join(dir, 'home-api') } });
  await until('the API to listen', async () => fetch(`${apiUrl}/openapi.json`).then(() => true, () => false), 30_000);
  token = (await readFile(join(dir, 'home-api', 'api-token'), 'utf8')).trim();
  for (const n of NAMES) startWorker(n);
});

// inside the suite: it runs before the guard's file-level check
after(async () => {
  for (const n of [...workers.keys()]) await stopWorker(n);
  api?.kill('SIGTERM');
  await api;
  await stopAllServers();
  await pg?.stop();
  for (const l of links) await l.remove();
  if (addedLo) await execa('ip', ['addr', 'del', `${SRC_IP}/32`, 'dev', 'lo'], { reject: false });
});

  it('keeps the password out of URLs, refuses a readable password file, and checks the server certificate', async () => {
    const url = `postgres://${pg.user}:${pg.password}@127.0.0.1:${pg.port}/${pg.db}`;
    const r1 = await ferry(['workers', 'list', '--store', url]);
    assert.equal(r1.exitCode, 2, r1.stderr);
    assert.ok(!r1.stderr.includes(pg.password) && !r1.stdout.includes(pg.password), 'the password was echoed');
    const loose = join(dir, 'loose-password');
    await writeFile(loose, pg.password);
    await chmod(loose, 0o644);
    const r2 = await ferry(['workers', 'list', '--store', `postgres://${pg.user}@127.0.0.1:${pg.port}/${pg.db}`, '--store-password-file', loose]);
    assert.equal(r2.exitCode, 2, r2.stderr);
    assert.match(r2.stderr, /0600/);
    // verify-full: the certificate names 127.0.0.1 and SRC_IP, not "localhost"
    const r3 = await ferry(['workers', 'list', '--store', `postgres://${pg.user}@localhost:${pg.port}/${pg.db}?sslmode=verify-full&sslrootcert=${pg.ca}`, '--store-password-file', pwFile]);
    assert.equal(r3.exitCode, 69, r3.stderr);
    assert.match(r3.stderr, /STORE_UNAVAILABLE.*(altnames|certificate)/);
    assert.ok(!r3.stderr.includes(pg.password));
    // the TLS session is real: PostgreSQL's own view of the connection
    const r4 = await ferry(['workers', 'list', '--json', '--store', `postgres://${pg.user}@127.0.0.1:${pg.port}/${pg.db}?sslmode=verify-full&sslrootcert=${pg.ca}`, '--store-password-file', pwFile]);
    assert.equal(r4.exitCode, 0, r4.stderr);
    const ssl = await until('worker c on TLS', async () => (await pg.psql(`SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.client_addr = '10.241.3.2'`)) !== '0' || undefined, 20_000);
    assert.ok(ssl);
  });

  it('lists its workers with their tags and heartbeats', async () => {
    const ws = await until('three workers', async () => {
      const r = await ferry(['workers', 'list', '--json', '--store', storeUrl, '--store-password-file', pwFile]);
      assert.equal(r.exitCode, 0, r.stderr);
      const list = (JSON.parse(r.stdout) as { workers: { name: string; tags: string[]; stale: boolean; version: string }[] }).workers;
      return list.length === 3 && list.every(w => !w.stale) && list;
    }, 30_000);
    assert.deepEqual(ws.map(w => w.name), ['w-a', 'w-b', 'w-c']);
    assert.deepEqual(ws.find(w => w.name === 'w-c')!.tags, ['rack-c']);
  });

  it('runs 30 jobs over three workers, one at a time on the NBD host, every worker taking some; a job that requires a tag runs where the tag is', async () => {
    const port = Number(new URL(nbdSmall.url).port);
    const seenPeers = new Set<string>();
    let maxAtOnce = 0, maxRunningRows = 0, samples = 0, sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const peers = await nbdPeers(port);
        peers.forEach(p => seenPeers.add(p));
        maxAtOnce = Math.max(maxAtOnce, peers.length);
        const rows = Number(await pg.psql(`SELECT count(*) FROM jobs WHERE state = 'running' AND source_host = '${SRC_IP}'`));
        maxRunningRows = Math.max(maxRunningRows, rows);
        samples++;
        await sleep(100);
      }
    })();
    const started = Date.now();
    const jobs: Job[] = [];
    for (let i = 0; i < 30; i++) {
      jobs.push(await submit({ source: nbdSmall.url, target: join(dir, 'out', `j${i}.qcow2`), options: { mode: 'block', verify: false } }));
    }
    const tagged = await submit({ source: join(dir, 'small.raw'), target: join(dir, 'out', 'tagged.qcow2'), requires: ['rack-c'], options: { mode: 'block', verify: false } });
    // a live event stream from the API process for a job running on some worker
    const events = fetch(`${apiUrl}/jobs/${jobs[29].id}/events`, { headers: headers() }).then(r => r.text());
    const ends = await Promise.all([...jobs, tagged].map(j => finished(j.id, 240_000)));
    const seconds = (Date.now() - started) / 1000;
    sampling = false;
    await sampler;
    for (const j of ends) assert.equal(j.state, 'done', `job ${j.id}: ${JSON.stringify(j.error)}`);
    assert.ok(samples > 20, `only ${samples} samples`);
    assert.equal(maxAtOnce, 1, `the NBD server had ${maxAtOnce} workers connected at once`);
    assert.equal(maxRunningRows, 1);
    // who read when: sampled every ~150 ms, a one-second job may fall between samples, so this is informative;
    // that every worker took some is judged from the job logs below
    assert.ok(seenPeers.size >= 1 && [...seenPeers].every(p => /^10\.241\.[123]\.2$/.test(p)), [...seenPeers].join(', '));
    // the targets: qemu-img's own comparison with the source, each one
    for (let i = 0; i < 30; i++) {
      await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', small, join(dir, 'out', `j${i}.qcow2`)]);
    }
    const logs = await Promise.all(jobs.map(j => jobLog(j.id)));
    for (const l of logs) assert.equal(l.filter(x => /^started on worker/.test(x)).length, 1, l.join('\n'));
    const byWorker = new Map<string, number>();
    for (const l of logs) { const w = /^done on worker (\S+)/.exec(l.find(x => x.startsWith('done on worker'))!)![1]; byWorker.set(w, (byWorker.get(w) ?? 0) + 1); }
    assert.equal(byWorker.size, 3, JSON.stringify([...byWorker]));
    assert.ok((await jobLog(tagged.id)).includes('done on worker w-c'));
    const stream = await events;
    assert.match(stream, /event: log\n/);
    assert.match(stream, /"state":"done"/);
    process.stdout.write(`# fleet: 30 jobs in ${seconds.toFixed(1)} s over ${byWorker.size} workers ${JSON.stringify(Object.fromEntries(byWorker))}; ${samples} samples, at most ${maxAtOnce} NBD reader at once, readers seen ${[...seenPeers].sort().join(' ')}\n`);
  });

  it('a worker killed with -9 mid-copy: another worker resumes its job from the checkpoint; the dead one reclaims its leftovers when it is back', async () => {
    const target = join(dir, 'out', 'killed.qcow2');
    const job = await submit({ source: nbdBig.url, target });
    const running = await until('the copy to start', async () => { const j = await getJob(job.id); return j.steps.some(s => s.name === 'copy p1' && s.state === 'running') && j; }, 60_000, 100);
    const victim = running.runner!.replace(/^w-/, '');
    const partial = join(dir, 'out', '.killed.qcow2.ferry-partial');
    const w = workers.get(victim)!;
    // the host dies: the worker, its process group and the daemons it started (they run on in their own session)
    const daemons = await daemonsOf(partial);
    const workDir = await workDirOf(daemons[0]);
    await crashHost(w, workDir, daemons);
    await w;
    workers.delete(victim);
    const done = await finished(job.id, 180_000);
    assert.equal(done.state, 'done', JSON.stringify(done.error));
    const log = await jobLog(job.id);
    assert.ok(log.some(l => new RegExp(`^worker w-${victim} stopped heartbeating`).test(l)), log.join('\n'));
    const resumed = log.find(l => /^resuming on worker/.test(l));
    assert.ok(resumed, log.join('\n'));
    assert.match(resumed!, /done before: open source, plan layout, create target; redoing 'copy p1'/);
    assert.ok(!resumed!.includes(`w-${victim}`), 'resumed on another worker');
    process.stdout.write(`# fleet: after kill -9 of w-${victim}: ${resumed}\n`);
    await assertSameFiles(big, target);
    // the host comes back: what its run left (loops, mounts, the work dir) is undone before it takes work
    startWorker(victim as typeof NAMES[number]);
    await until('the leftovers to be reclaimed', async () => Number(await pg.psql(`SELECT count(*) FROM worker_leftovers WHERE worker = 'w-${victim}'`)) === 0, 60_000, 250);
    if (workDir) assert.ok(!(await exists(workDir)), `${workDir} is still there`);
  });

  it('a worker whose link is cut: its job completes on another worker; the cut one stops writing', async () => {
    const target = join(dir, 'out', 'cut.qcow2');
    const job = await submit({ source: nbdBig.url, target });
    const running = await until('the copy to start', async () => { const j = await getJob(job.id); return j.steps.some(s => s.name === 'copy p1' && s.state === 'running') && j; }, 60_000, 100);
    const cutName = running.runner!.replace(/^w-/, '');
    const link = links[NAMES.indexOf(cutName as typeof NAMES[number])];
    // what the cut worker's run holds: its daemons (source and partial target) and its work dir
    const daemons = await until('the run\'s daemons', async () => { const d = await daemonsOf(join(dir, 'out', '.cut.qcow2.ferry-partial')); return d.length ? d : undefined; }, 30_000, 100);
    const workDir = await workDirOf(daemons[0]);
    assert.ok(workDir, 'the target daemon names its work dir');
    const all = [...daemons, ...await daemonsOf(workDir)];
    await execa('ip', ['-n', link.ns, 'link', 'set', link.nsIf, 'down']);
    const cutAt = Date.now();
    try {
      // the cut worker fences itself: its run stops, its daemons go, while it still cannot reach anything
      await until('the cut worker\'s daemons to stop', async () => all.every(pid => !existsSync(`/proc/${pid}`)), 60_000, 250);
      process.stdout.write(`# fleet: the cut worker's run stopped ${Date.now() - cutAt} ms after its link went\n`);
      assert.equal(workers.get(cutName)!.exitCode, null, 'the cut worker process itself goes on');
      const done = await finished(job.id, 180_000);
      assert.equal(done.state, 'done', JSON.stringify(done.error));
      const log = await jobLog(job.id);
      assert.ok(log.some(l => l.startsWith(`worker w-${cutName} stopped heartbeating`)), log.join('\n'));
      const again = log.find(l => /^(resuming|restarting) on worker/.test(l) && !l.includes(`w-${cutName}`));
      assert.ok(again, log.join('\n'));
      process.stdout.write(`# fleet: after cutting w-${cutName}'s link: ${again}\n`);
      await assertSameFiles(big, target);
    } finally {
      // the link back, and with it the default route that went down with it
      await execa('ip', ['-n', link.ns, 'link', 'set', link.nsIf, 'up']);
      await execa('ip', ['-n', link.ns, 'route', 'replace', 'default', 'via', link.hostIp]);
    }
    await until('the cut worker to beat again', async () => (await pg.psql(`SELECT count(*) FROM workers WHERE name = 'w-${cutName}' AND heartbeat_at > to_char((now() - interval '3 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`)) === '1', 60_000, 250);
    // what the taker found held by the cut run is undone (or found gone) by the cut worker itself
    await until('its leftovers to be reclaimed', async () => Number(await pg.psql(`SELECT count(*) FROM worker_leftovers WHERE worker = 'w-${cutName}'`)) === 0, 60_000, 250);
    await until(`${workDir} to go`, async () => !(await exists(workDir)), 30_000);
  });

  it('a cancel reaches a job on another host within seconds', async () => {
    const target = join(dir, 'out', 'cancelled.qcow2');
    const job = await submit({ source: nbdBig.url, target });
    await until('the copy to start', async () => { const j = await getJob(job.id); return j.steps.some(s => s.name === 'copy p1' && s.state === 'running'); }, 60_000, 100);
    const t0 = Date.now();
    const r = await fetch(`${apiUrl}/jobs/${job.id}/cancel`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.status, 202);
    const end = await finished(job.id, 30_000);
    const ms = Date.now() - t0;
    assert.equal(end.state, 'cancelled');
    assert.ok(ms < 10_000, `the cancel took ${ms} ms`);
    assert.ok(!(await exists(join(dir, 'out', '.cancelled.qcow2.ferry-partial'))));
    process.stdout.write(`# fleet: cancel across hosts took ${ms} ms\n`);
  });

  it('ferry jobs works on the shared store (--store, or FERRY_STORE with PGPASSFILE): submit --wait, list, show, logs --follow, cancel, retry', async () => {
    const byFlag = ['--store', storeUrl, '--store-password-file', pwFile];
    // the other way to name it: the environment, the password from libpq's file; a FERRY_HOME with no ferry.db in it
    const byEnv = { env: { FERRY_HOME: join(dir, 'home-cli'), FERRY_STORE: storeUrl, PGPASSFILE: join(dir, 'pgpass') } };
    const smallSpec = join(dir, 'cli-small.json'), bigSpec = join(dir, 'cli-big.json');
    await writeFile(smallSpec, JSON.stringify({ source: nbdSmall.url, target: join(dir, 'out', 'cli-small.qcow2'), options: { mode: 'block', verify: false } }));
    // a paced source (~50 MB/s): the job is surely still copying when the cancel comes
    const paced = await startNbdkit({ file: big, bind: SRC_IP, rate: '400M', exportName: 'big' });
    await writeFile(bigSpec, JSON.stringify({ source: paced.url, target: join(dir, 'out', 'cli-big.qcow2') }));
    // --wait: the fleet's workers count as runners, the job ends on one of them
    const waited = await ferry(['jobs', 'submit', smallSpec, '--wait', '--json', ...byFlag]);
    assert.equal(waited.exitCode, 0, waited.stderr);
    const small1 = JSON.parse(waited.stdout) as Job;
    assert.equal(small1.state, 'done');
    assert.equal(await pg.psql(`SELECT state FROM jobs WHERE id = '${small1.id}'`), 'done');
    await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', small, join(dir, 'out', 'cli-small.qcow2')]);
    const sub = await ferry(['jobs', 'submit', bigSpec], byEnv);
    assert.equal(sub.exitCode, 0, sub.stderr);
    const id = sub.stdout.trim();
    assert.equal(await pg.psql(`SELECT count(*) FROM jobs WHERE id = '${id}'`), '1', 'the job is in PostgreSQL');
    assert.ok(!existsSync(join(dir, 'home-cli', 'ferry.db')), 'nothing went to an embedded store');
    const follow = ferryProcess(['jobs', 'logs', id, '--follow'], byEnv);
    await until('the copy to start (jobs show)', async () => {
      const r = await ferry(['jobs', 'show', id, '--json', ...byFlag]);
      assert.equal(r.exitCode, 0, r.stderr);
      return (JSON.parse(r.stdout) as Job).steps.some(s => s.name === 'copy p1' && s.state === 'running');
    }, 60_000, 250);
    const list = await ferry(['jobs', 'list', '--state', 'running', '--json', ...byFlag]);
    assert.equal(list.exitCode, 0, list.stderr);
    assert.deepEqual((JSON.parse(list.stdout) as Job[]).map(j => j.id), [id]);
    const t0 = Date.now();
    const cancel = await ferry(['jobs', 'cancel', id, '--wait', ...byFlag]);
    const ms = Date.now() - t0;
    assert.equal(cancel.exitCode, 0, cancel.stderr);
    assert.match(cancel.stdout, new RegExp(`job ${id}: cancelled`));
    assert.ok(ms < 10_000, `the cancel took ${ms} ms`);
    assert.equal(await pg.psql(`SELECT state FROM jobs WHERE id = '${id}'`), 'cancelled');
    assert.ok(!(await exists(join(dir, 'out', '.cli-big.qcow2.ferry-partial'))));
    // the follower ends by itself when the job does, having printed the run's lines as they came
    const t = setTimeout(() => follow.kill('SIGKILL'), 15_000);
    const followed = await follow;
    clearTimeout(t);
    assert.equal(followed.exitCode, 0, String(followed.stderr));
    const lines = String(followed.stdout).split('\n');
    for (const re of [/^submitted: /, /^started on worker w-[abc]/, /^cancel requested$/, /^cancelled on worker w-[abc]: JOB_CANCELLED/]) assert.ok(lines.some(l => re.test(l)), `${re} not in:\n${followed.stdout}`);
    // the log as PostgreSQL holds it, line for line
    assert.deepEqual(lines.filter(Boolean), (await pg.psql(`SELECT line FROM job_logs WHERE job_id = '${id}' ORDER BY n`)).split('\n'));
    const retry = await ferry(['jobs', 'retry', id], byEnv);
    assert.equal(retry.exitCode, 0, retry.stderr);
    assert.match(retry.stdout, /: queued/);
    // cancelled once a worker runs it again (a cancel racing the claim of a queued job is a known open bug: see the note)
    await until('the retried job to run', async () => (await pg.psql(`SELECT state FROM jobs WHERE id = '${id}'`)) === 'running', 60_000, 100);
    const again = await ferry(['jobs', 'cancel', id, '--wait', ...byFlag]);
    assert.equal(again.exitCode, 0, again.stdout + again.stderr);
    assert.match(await pg.psql(`SELECT string_agg(line, '|' ORDER BY n) FROM job_logs WHERE job_id = '${id}'`), /retry \(was cancelled: JOB_CANCELLED\)/);
    const missing = await ferry(['jobs', 'show', 'nosuchjob', ...byFlag]);
    assert.equal(missing.exitCode, 2);
    assert.match(missing.stderr, /JOB_NOT_FOUND/);
    process.stdout.write(`# fleet: ferry jobs cancel --store took ${ms} ms to see the job stop\n`);
  });

  it('store migrate moves an embedded installation into an empty PostgreSQL database: every job, step, log line, image and driver record, compared', async () => {
    const home = join(dir, 'home-embedded');
    const env = { FERRY_HOME: home, FERRY_DRIVERS_DB: join(home, 'drivers-db') };
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const spec = join(dir, `spec-${i}.json`);
      await writeFile(spec, JSON.stringify({ source: small, target: join(dir, 'out', `moved-${i}.qcow2`) }));
      const r = await ferry(['jobs', 'submit', spec], { env });
      assert.equal(r.exitCode, 0, r.stderr);
      ids.push(r.stdout.trim());
    }
    assert.equal((await ferry(['jobs', 'cancel', ids[1]], { env })).exitCode, 0);
    // the catalog: a Debian-looking root (mkfs.ext4 -d, no mount) whose OS, kernel and modules the inspection finds, and a disk with none
    const [module] = String((await execa('find', ['/lib/modules', '-name', 'virtio_blk.ko*'])).stdout).split('\n').filter(Boolean);
    assert.ok(module, 'this host has a virtio_blk module to import');
    const kver = module.split('/')[3];
    const root = join(dir, 'guest-root');
    const modDir = join(root, 'lib/modules', kver, 'kernel/drivers/block');
    await mkdir(modDir, { recursive: true });
    await mkdir(join(root, 'boot'));
    await mkdir(join(root, 'etc'));
    await execa('cp', [module, modDir]);
    await writeFile(join(root, 'etc/os-release'), 'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n');
    await writeFile(join(root, 'etc/debian_version'), '12.7\n');
    await writeFile(join(root, 'etc/fstab'), '/dev/vda1 / ext4 defaults 0 1\n');
    await writeFile(join(root, 'boot', `vmlinuz-${kver}`), 'kernel\n');
    const guest = join(dir, 'guest.raw');
    await execa('truncate', ['-s', '40M', guest]);
    await execa('mkfs.ext4', ['-q', '-d', root, guest]);
    for (const [file, name] of [[guest, 'debian-ish'], [small, 'plain']]) {
      const r = await ferry(['images', 'add', file, '--name', name, '--tag', 'fleet', '--tag', name], { env });
      assert.equal(r.exitCode, 0, r.stderr);
    }
    // the drivers: the module, as a kernel package holds it
    const imp = await ferry(['drivers', 'import', root], { env });
    assert.equal(imp.exitCode, 0, imp.stderr);
    await pg.psql('CREATE DATABASE ferry_moved OWNER ferry');
    const to = `postgres://${pg.user}@127.0.0.1:${pg.port}/ferry_moved`;
    const r = await ferry(['store', 'migrate', '--from', `sqlite:${home}`, '--to', to, '--store-password-file', pwFile, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    // judged by reading both databases with their own clients, not through Ferry: every column of every table, in byte order
    const psql = async (q: string) => (await execa('runuser', ['-u', 'postgres', '--', 'psql', '-h', pg.socketDir, '-p', String(pg.port), '-U', 'postgres', '-d', 'ferry_moved', '-At', '-F', '|', '-c', q])).stdout.split('\n').filter(Boolean);
    const sqlite = (file: string, q: string) => {
      const db = new Database(file, { readonly: true });
      try { return (db.prepare(q).raw().all() as unknown[][]).map(row => row.map(v => v ?? '').join('|')); } finally { db.close(); }
    };
    const compared: Record<string, number> = {};
    // text keys in byte order on both sides (SQLite's BINARY, PostgreSQL's "C")
    const INT_KEYS = ['id', 'idx', 'n', 'image_id', 'os_idx'];
    const same = async (file: string, from: string, to: string, order: string) => {
      const cols = (sqlite(file, `SELECT name FROM pragma_table_info('${from}') ORDER BY cid`)).join(', ');
      const src = sqlite(file, `SELECT ${cols} FROM ${from} ORDER BY ${order}`);
      const pgOrder = order.split(', ').map(c => INT_KEYS.includes(c) ? c : `${c} COLLATE "C"`).join(', ');
      assert.deepEqual(await psql(`SELECT ${cols} FROM ${to} ORDER BY ${pgOrder}`), src, `${from} -> ${to}`);
      compared[to] = src.length;
    };
    const ferryDb = join(home, 'ferry.db'), driversDb = join(home, 'drivers-db', 'drivers.db');
    await same(ferryDb, 'jobs', 'jobs', 'id');
    await same(ferryDb, 'job_steps', 'job_steps', 'job_id, idx');
    await same(ferryDb, 'job_logs', 'job_logs', 'job_id, n');
    await same(ferryDb, 'images', 'images', 'id');
    await same(ferryDb, 'image_tags', 'image_tags', 'image_id, tag');
    await same(ferryDb, 'image_os', 'image_os', 'image_id, idx');
    await same(ferryDb, 'image_kernels', 'image_kernels', 'image_id, os_idx, version');
    await same(ferryDb, 'image_drivers', 'image_drivers', 'image_id, os_idx, name, kind');
    await same(driversDb, 'objects', 'driver_objects', 'sha256');
    await same(driversDb, 'files', 'driver_files', 'id');
    assert.equal(compared.jobs, 4);
    assert.equal(compared.images, 2);
    for (const t of ['image_tags', 'image_os', 'image_kernels', 'image_drivers', 'driver_objects', 'driver_files']) assert.ok(compared[t] >= 1, `${t}: ${compared[t]} rows`);
    assert.ok((await psql('SELECT id, state FROM jobs')).includes(`${ids[1]}|cancelled`));
    // the next image or driver row the shared store numbers comes after the copied ones
    assert.deepEqual(await psql("SELECT nextval('images_id_seq') > max(id) FROM images"), ['t']);
    assert.deepEqual(await psql("SELECT nextval('driver_files_id_seq') > max(id) FROM driver_files"), ['t']);
    const report = JSON.parse(r.stdout) as { tables: { table: string; source: number; same: boolean }[] };
    assert.ok(report.tables.every(t => t.same));
    assert.deepEqual(Object.fromEntries(report.tables.map(t => [t.table, t.source])), compared);
    process.stdout.write(`# fleet: store migrate moved ${JSON.stringify(compared)}\n`);
    // into a store that is not empty: refused, nothing merged
    const again = await ferry(['store', 'migrate', '--from', `sqlite:${home}`, '--to', to, '--store-password-file', pwFile]);
    assert.equal(again.exitCode, 4, again.stderr);
    assert.match(again.stderr, /STORE_NOT_EMPTY/);
  });

  it('PostgreSQL restarted mid-run: nothing lost, nothing run twice', async () => {
    const jobs: Job[] = [];
    for (let i = 0; i < 8; i++) jobs.push(await submit({ source: nbdSmall.url, target: join(dir, 'out', `r${i}.qcow2`), options: { mode: 'block', verify: false } }));
    await until('two jobs done', async () => (await Promise.all(jobs.map(j => getJob(j.id)))).filter(j => j.state === 'done').length >= 2, 120_000, 100);
    await pg.restart();
    const ends = await Promise.all(jobs.map(j => finished(j.id, 180_000)));
    for (const j of ends) {
      assert.equal(j.state, 'done', JSON.stringify(j.error));
      assert.equal(j.attempts, 1, `job ${j.id} ran ${j.attempts} times`);
      const log = await jobLog(j.id);
      assert.equal(log.filter(l => /^(started|resuming|restarting) on worker/.test(l)).length, 1, log.join('\n'));
      await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', small, join(dir, 'out', `r${jobs.indexOf(jobs.find(x => x.id === j.id)!)}.qcow2`)]);
    }
    assert.equal(await pg.psql(`SELECT count(*) FROM jobs WHERE id IN (${jobs.map(j => `'${j.id}'`).join(',')})`), '8');
  });
});
