// The job service from the command line: specs (YAML and JSON) submitted and
// waited for, field-level errors, list/show/logs, cancel in the middle of a
// copy, a failing job that keeps its typed error and log, retry, and
// `convert --detach`, the per-host bound with a real NBD server, and
// `submit --wait` with no runner up. A `ferry jobs run-worker` (the runner
// without the HTTP API) picks the jobs up from the store, as `ferry serve` does.
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import { access, copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ferry, ferryProcess, guardMachine, sha256, tempDir } from './support/harness.js';
import { assertSameFiles } from './support/independent.js';
import { startNbdkit } from './support/servers.js';
import { makeSmallDisk } from './support/small-disk.js';

guardMachine();
const dir = await tempDir('ferryjobs-');
// every ferry process of this file (and the worker) shares this store
process.env.FERRY_HOME = join(dir, 'home');

const exists = (p: string) => access(p).then(() => true, () => false);
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

interface Job { id: string; state: string; attempts: number; steps: { name: string; state: string; startedAt?: string; endedAt?: string; progress?: { bytes: number; total: number } }[]; error?: { code: string; exitCode: number; message: string } }
const show = async (id: string): Promise<Job> => {
  const r = await ferry(['jobs', 'show', id, '--json']);
  assert.equal(r.exitCode, 0, r.stderr);
  return JSON.parse(r.stdout) as Job;
};

let worker: ReturnType<typeof ferryProcess>;
let small: string, smallSum: string;
let big: string, bigSum: string;

before(async () => {
  small = join(dir, 'small.raw');
  await makeSmallDisk(small);
  smallSum = await sha256(small);
  // a copy that takes several seconds: 1.2 GiB of random data in one ext4
  big = join(dir, 'big.raw');
  await makeSmallDisk(big, { sizeMiB: 1700, randomMiB: 1200 });
  bigSum = await sha256(big);
  worker = ferryProcess(['jobs', 'run-worker', '--concurrency', '2']);
});

// before the guard's after hook (registered first, so it runs first) removes the temp dir
after(async () => { worker.kill('SIGTERM'); await worker; });

describe('ferry jobs', () => {
  it('submit a YAML spec with --wait: done, the target verifies', async () => {
    const spec = join(dir, 'a.yaml');
    // relative paths are the spec file's directory's
    await writeFile(spec, 'source: small.raw\ntarget: out/a.qcow2\nsize: 300M\noptions:\n  verify: true\n');
    await mkdir(join(dir, 'out'), { recursive: true });
    const r = await ferry(['jobs', 'submit', spec, '--wait']);
    assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
    const id = r.stdout.split('\n')[0].trim();
    assert.match(r.stdout, new RegExp(`job ${id}: done`));
    const job = await show(id);
    assert.equal(job.state, 'done');
    assert.deepEqual(job.steps.map(s => s.name), ['open source', 'plan layout', 'create target', 'copy p1', 'copy p2', 'verify', 'commit']);
    assert.ok(job.steps.every(s => s.state === 'done'));
    await assertSameFiles(small, join(dir, 'out/a.qcow2'));
    const v = await ferry(['verify', small, join(dir, 'out/a.qcow2')]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    assert.equal(await exists(join(dir, 'out/.a.qcow2.ferry-partial')), false);
  });

  it('submit a JSON spec with --wait --json: the result is the job record', async () => {
    const spec = join(dir, 'b.json');
    await writeFile(spec, JSON.stringify({ source: small, target: join(dir, 'out/b.raw'), format: 'raw' }));
    const r = await ferry(['jobs', 'submit', spec, '--wait', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const job = JSON.parse(r.stdout) as Job & { result: { verified: boolean; format: string } };
    assert.equal(job.state, 'done');
    assert.equal(job.result.verified, true);
    assert.equal(job.result.format, 'raw');
    await assertSameFiles(small, join(dir, 'out/b.raw'));
    const v = await ferry(['verify', small, join(dir, 'out/b.raw')]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
  });

  it('a bad spec: SPEC_INVALID, exit 2, every bad field named; nothing queued', async () => {
    const before = JSON.parse((await ferry(['jobs', 'list', '--json'])).stdout) as Job[];
    const spec = join(dir, 'bad.yaml');
    await writeFile(spec, [
      'target: out/c.qcow2', 'format: qcow3', 'size: lots', 'colour: blue',
      'options: { mode: sideways, verify: "yes" }',
      'register: { libvirt: "not a uri", name: "has space", cpus: 0, memory: 1K }', '',
    ].join('\n'));
    const r = await ferry(['jobs', 'submit', spec]);
    assert.equal(r.exitCode, 2, r.stderr);
    assert.match(r.stderr, /SPEC_INVALID/);
    for (const f of ['source', 'format', 'size', 'colour', 'options.mode', 'options.verify', 'register.libvirt', 'register.name', 'register.cpus', 'register.memory']) {
      assert.match(r.stderr, new RegExp(`^  ${f.replace('.', '\\.')}: `, 'm'), `names ${f}:\n${r.stderr}`);
    }
    const garbled = join(dir, 'garbled.json');
    await writeFile(garbled, '{ "source": ');
    const g = await ferry(['jobs', 'submit', garbled]);
    assert.equal(g.exitCode, 2);
    assert.match(g.stderr, /SPEC_INVALID[\s\S]*\(file\): cannot be read as JSON/);
    const after = JSON.parse((await ferry(['jobs', 'list', '--json'])).stdout) as Job[];
    assert.equal(after.length, before.length, 'nothing was queued');
  });

  it('list, show and logs', async () => {
    const list = await ferry(['jobs', 'list']);
    assert.equal(list.exitCode, 0);
    assert.match(list.stdout, /^ID\s+STATE\s+STEP/);
    const done = JSON.parse((await ferry(['jobs', 'list', '--state', 'done', '--json'])).stdout) as Job[];
    assert.ok(done.length >= 2 && done.every(j => j.state === 'done'));
    const id = done[0].id;
    const s = await ferry(['jobs', 'show', id]);
    assert.match(s.stdout, new RegExp(`job ${id}: done`));
    assert.match(s.stdout, /copy p1\s+done/);
    const logs = await ferry(['jobs', 'logs', id]);
    assert.match(logs.stdout, /submitted: /);
    assert.match(logs.stdout, /step copy p1: started[\s\S]*step copy p1: done[\s\S]*^done$/m);
    const missing = await ferry(['jobs', 'show', 'nosuchjob']);
    assert.equal(missing.exitCode, 2);
    assert.match(missing.stderr, /JOB_NOT_FOUND/);
  });

  it('cancel during a copy: cancelled within seconds, partial removed, nothing left', async () => {
    const target = join(dir, 'out/big.qcow2');
    const spec = join(dir, 'big.yaml');
    await writeFile(spec, `source: ${big}\ntarget: ${target}\n`);
    const id = (await ferry(['jobs', 'submit', spec])).stdout.trim();
    // wait until the copy has moved bytes
    let job: Job;
    for (const t0 = Date.now(); ; await sleep(200)) {
      job = await show(id);
      const copy = job.steps.find(s => s.name === 'copy p1');
      if (copy?.state === 'running' && (copy.progress?.bytes ?? 0) > 0) break;
      assert.ok(!['done', 'failed', 'cancelled'].includes(job.state), `job ended before the copy could be cancelled: ${job.state}`);
      assert.ok(Date.now() - t0 < 120_000, 'the copy never started');
    }
    assert.ok(await exists(join(dir, 'out/.big.qcow2.ferry-partial')), 'the partial target exists during the copy');
    const asked = Date.now();
    const c = await ferry(['jobs', 'cancel', id, '--wait']);
    const took = (Date.now() - asked) / 1000;
    assert.equal(c.exitCode, 0, c.stderr);
    job = await show(id);
    assert.equal(job.state, 'cancelled');
    assert.equal(job.error?.code, 'JOB_CANCELLED');
    assert.ok(took < 10, `cancel took ${took} s`);
    console.log(`# cancel during copy p1: cancelled ${took.toFixed(1)} s after 'ferry jobs cancel'`);
    assert.equal(await exists(target), false);
    assert.equal(await exists(join(dir, 'out/.big.qcow2.ferry-partial')), false, 'partial removed');
    const logs = (await ferry(['jobs', 'logs', id])).stdout;
    assert.match(logs, /cancel requested[\s\S]*cancelled: JOB_CANCELLED/);
    // a finished job cannot be cancelled again
    const again = await ferry(['jobs', 'cancel', id]);
    assert.equal(again.exitCode, 2);
    assert.match(again.stderr, /JOB_STATE_CONFLICT/);
  });

  it('a failing job keeps its typed error and its log; retry runs it again', async () => {
    const source = join(dir, 'comes-later.raw');
    const spec = join(dir, 'fail.yaml');
    await writeFile(spec, `source: ${source}\ntarget: ${join(dir, 'out/later.qcow2')}\n`);
    const r = await ferry(['jobs', 'submit', spec, '--wait']);
    assert.equal(r.exitCode, 3, `the job's own exit status: ${r.stderr}`);
    assert.match(r.stderr, /SOURCE_MISSING/);
    const id = r.stdout.split('\n')[0].trim();
    const job = await show(id);
    assert.equal(job.state, 'failed');
    assert.equal(job.error?.code, 'SOURCE_MISSING');
    assert.equal(job.error?.exitCode, 3);
    assert.match((await ferry(['jobs', 'logs', id])).stdout, /failed: SOURCE_MISSING: source .*comes-later\.raw does not exist/);

    // an unwritable target directory fails in its own way
    const ro = join(dir, 'ro');
    await mkdir(ro);
    await writeFile(join(dir, 'ro.yaml'), `source: ${small}\ntarget: ${join(ro, 'missing-dir', 't.qcow2')}\n`);
    const w = await ferry(['jobs', 'submit', join(dir, 'ro.yaml'), '--wait']);
    assert.equal(w.exitCode, 4);
    assert.match(w.stderr, /TARGET_NOT_WRITABLE/);

    await copyFile(small, source);
    const retry = await ferry(['jobs', 'retry', id]);
    assert.equal(retry.exitCode, 0, retry.stderr);
    for (const t0 = Date.now(); (await show(id)).state !== 'done'; await sleep(300)) {
      const j = await show(id);
      assert.ok(j.state !== 'failed' && j.state !== 'cancelled', `retry ended ${j.state}: ${j.error?.message}`);
      assert.ok(Date.now() - t0 < 120_000, 'retry did not finish');
    }
    assert.equal((await show(id)).attempts, 1, 'a retry counts its runs afresh');
    const logs = (await ferry(['jobs', 'logs', id])).stdout;
    assert.match(logs, /failed: SOURCE_MISSING[\s\S]*retry \(was failed: SOURCE_MISSING\)[\s\S]*^done$/m);
    const again = await ferry(['jobs', 'retry', id]);
    assert.equal(again.exitCode, 2, 'a done job is not retried');
  });

  it('convert --detach queues a job and prints its id', async () => {
    const target = join(dir, 'out/detached.vmdk');
    const r = await ferry(['convert', small, target, '--detach']);
    assert.equal(r.exitCode, 0, r.stderr);
    const id = r.stdout.trim();
    assert.match(id, /^[0-9a-f]{8}$/);
    for (const t0 = Date.now(); ; await sleep(300)) {
      const j = await show(id);
      if (j.state === 'done') break;
      assert.ok(j.state === 'queued' || j.state === 'running', `${j.state}: ${j.error?.message}`);
      assert.ok(Date.now() - t0 < 120_000, 'detached job did not finish');
    }
    await assertSameFiles(small, target);
    const v = await ferry(['verify', small, target]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    assert.deepEqual((await readdir(join(dir, 'out'))).filter(n => n.includes('ferry-partial')), []);
  });

  it('two jobs reading from one NBD server run one after the other (per-host bound 1) while a local job runs beside them', async () => {
    const server = await startNbdkit({ file: small, rate: '200M' });
    try {
      const ids: string[] = [];
      for (const [name, source] of [['nbd-a', server.url], ['nbd-b', server.url], ['local', big]]) {
        await writeFile(join(dir, `${name}.yaml`), `source: ${source}\ntarget: ${join(dir, `out/host-${name}.qcow2`)}\n`);
        const r = await ferry(['jobs', 'submit', join(dir, `${name}.yaml`)]);
        assert.equal(r.exitCode, 0, r.stderr);
        ids.push(r.stdout.trim());
      }
      const db = new Database(join(process.env.FERRY_HOME!, 'ferry.db'), { readonly: true });
      const states = db.prepare(`SELECT id, state FROM jobs WHERE id IN (?, ?, ?)`);
      let bothNbd = 0, nbdBesideLocal = 0;
      try {
        for (const t0 = Date.now(); ; await sleep(100)) {
          const now = new Map((states.all(...ids) as { id: string; state: string }[]).map(r => [r.id, r.state]));
          if (now.get(ids[0]) === 'running' && now.get(ids[1]) === 'running') bothNbd++;
          if ((now.get(ids[0]) === 'running' || now.get(ids[1]) === 'running') && now.get(ids[2]) === 'running') nbdBesideLocal++;
          if (ids.every(id => ['done', 'failed', 'cancelled'].includes(now.get(id)!))) break;
          assert.ok(Date.now() - t0 < 240_000, `the jobs did not end: ${JSON.stringify([...now])}`);
        }
      } finally {
        db.close();
      }
      for (const id of ids) assert.equal((await show(id)).state, 'done', `job ${id}: ${JSON.stringify((await show(id)).error)}`);
      assert.equal(bothNbd, 0, 'the two jobs on one server never ran at once');
      assert.ok(nbdBesideLocal > 0, 'a job on the server ran beside the local one (the global bound is 2)');
      for (const name of ['nbd-a', 'nbd-b']) await assertSameFiles(small, join(dir, `out/host-${name}.qcow2`));
      await assertSameFiles(big, join(dir, 'out/host-local.qcow2'));
      const v = await ferry(['verify', small, join(dir, 'out/host-nbd-b.qcow2')]);
      assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    } finally {
      await server.stop();
    }
  });

  it('the worker stops cleanly on SIGTERM; the sources are unchanged', async () => {
    worker.kill('SIGTERM');
    const r = await worker;
    assert.equal(r.exitCode, 0, `worker ended badly: ${String(r.stderr).slice(-2000)}`);
    assert.equal(await sha256(small), smallSum, 'small source unchanged');
    assert.equal(await sha256(big), bigSum, 'big source unchanged');
  });

  it('submit --wait with no runner up: NO_JOB_RUNNER (exit 9) within seconds; the job stays queued for a later runner', async () => {
    const spec = join(dir, 'nobody.yaml');
    await writeFile(spec, `source: ${small}\ntarget: ${join(dir, 'out/nobody.qcow2')}\n`);
    const t0 = Date.now();
    const r = await ferry(['jobs', 'submit', spec, '--wait']);
    assert.equal(r.exitCode, 9, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /NO_JOB_RUNNER: job \w+ is queued, but no job runner is up to run it: start 'ferry serve' or 'ferry jobs run-worker'/);
    assert.ok(Date.now() - t0 < 30_000, `gave up after ${Date.now() - t0} ms`);
    const id = r.stdout.split('\n')[0].trim();
    assert.equal((await show(id)).state, 'queued');
    assert.equal((await ferry(['jobs', 'cancel', id])).exitCode, 0);
    assert.equal((await show(id)).state, 'cancelled');
  });
});
