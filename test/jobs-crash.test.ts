// Crash safety of the job service: `ferry serve` is killed with SIGKILL in the
// middle of a partition's copy. The dead process's loop devices, mounts and
// qemu-storage-daemon are still there (recorded in the store); a new
// `ferry serve` reclaims them, resumes the job from its last completed step
// (the finished partition is not copied again, the interrupted one is), and
// the result verifies against the source. The timeline is printed for the notes.
// A kill in the middle of a re-fit makes the job build its target again from
// the source rather than re-fit a half-changed image.
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import Database from 'better-sqlite3';
import type { InspectReport, LinuxOs } from '../src/inspect/report.js';
import { buildLegacyGuest } from './support/fixtures.js';
import { ferry, ferryProcess, guardMachine, sha256, tempDir } from './support/harness.js';
import { assertSameFiles } from './support/independent.js';

guardMachine();
const dir = await tempDir('ferrycrash-');
process.env.FERRY_HOME = join(dir, 'home');

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));
/**
 * A hang guard that a busy machine (another test file beside this one) does
 * not trip: it fails only once the job's steps (states, stored progress) have
 * not changed for idleMs, however long the job as a whole takes.
 */
function stallGuard(idleMs: number): (steps: unknown, what: () => string) => void {
  let last = '', at = Date.now();
  return (steps, what) => {
    const now = JSON.stringify(steps);
    if (now !== last) { last = now; at = Date.now(); }
    assert.ok(Date.now() - at < idleMs, `${what()} (nothing moved for ${idleMs / 1000} s)`);
  };
}

interface Step { name: string; state: string; startedAt?: string; endedAt?: string; progress?: { bytes: number; total: number } }
interface Job { id: string; state: string; steps: Step[]; error?: { code: string; message: string } }
const show = async (id: string): Promise<Job> => JSON.parse((await ferry(['jobs', 'show', id, '--json'])).stdout) as Job;

/**
 * GPT: p1 ext4 (small files, copied in a moment), p2 ext4 with 1.4 GiB of
 * random data (a copy of several seconds: the one killed), p3 xfs.
 */
async function makeThreePartDisk(path: string): Promise<void> {
  await execa('truncate', ['-s', '2400M', path]);
  await execa('sfdisk', ['-q', path], { input: 'label: gpt\nstart=2048, size=64MiB, name=small\nsize=1900MiB, name=big\nsize=300MiB, name=last\n' });
  const parts = (await execa('sfdisk', ['-J', path])).stdout;
  const table = JSON.parse(parts) as { partitiontable: { partitions: { start: number; size: number }[] } };
  const fill = async (i: number, mkfs: string[], files: (mnt: string) => Promise<void>) => {
    const p = table.partitiontable.partitions[i];
    const loop = (await execa('losetup', ['-f', '--show', '-o', String(p.start * 512), '--sizelimit', String(p.size * 512), path])).stdout.trim();
    const mnt = join(dir, `mk${i}`);
    await mkdir(mnt, { recursive: true });
    try {
      await execa(mkfs[0], [...mkfs.slice(1), loop]);
      await execa('mount', [loop, mnt]);
      try { await files(mnt); } finally { await execa('umount', [mnt]); }
    } finally {
      await execa('losetup', ['-d', loop]);
      await execa('rmdir', [mnt]);
    }
  };
  await fill(0, ['mkfs.ext4', '-q', '-L', 'small'], async m => {
    for (let i = 0; i < 200; i++) await writeFile(join(m, `f${i}`), `file ${i}\n`.repeat(i + 1));
  });
  await fill(1, ['mkfs.ext4', '-q', '-L', 'big'], async m => {
    for (let i = 0; i < 1400; i += 8) await writeFile(join(m, `r${i}`), randomBytes(8 << 20));
  });
  await fill(2, ['mkfs.xfs', '-q', '-f', '-L', 'last'], async m => {
    await mkdir(join(m, 'etc'));
    await writeFile(join(m, 'etc', 'hostname'), 'last\n');
    await writeFile(join(m, 'blob'), randomBytes(20 << 20));
  });
}

const mounted = async (dir: string) => (await readFile('/proc/self/mounts', 'utf8')).split('\n').some(l => l.split(' ')[1] === dir);
const loopBacking = async (dev: string) => (await execa('losetup', ['-n', '-O', 'BACK-FILE', dev], { reject: false })).stdout.trim();
const qsdAlive = async (pid: number) => (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim() === 'qemu-storage-da'
  && !/^State:\s+Z/m.test(await readFile(`/proc/${pid}/status`, 'utf8').catch(() => ''));

/** what the job's store records say it holds, and which of them exist on the machine now */
async function heldNow(jobId: string) {
  const db = new Database(join(process.env.FERRY_HOME!, 'ferry.db'), { readonly: true });
  try {
    const rows = db.prepare('SELECT kind, res_id AS id, pid, detail FROM job_resources WHERE job_id = ? ORDER BY seq').all(jobId) as { kind: string; id: string; pid: number | null; detail: string | null }[];
    const present: string[] = [];
    for (const r of rows) {
      if (r.kind === 'mount' && await mounted(r.id)) present.push(`mount ${r.id}`);
      if (r.kind === 'loop' && r.detail && (await loopBacking(r.id)) === r.detail) present.push(`loop ${r.id}`);
      if (r.kind === 'daemon' && r.pid && await qsdAlive(r.pid)) present.push(`daemon ${r.pid}`);
    }
    return { rows, present };
  } finally {
    db.close();
  }
}

function logsWithTimes(jobId: string): { n: number; at: string; line: string }[] {
  const db = new Database(join(process.env.FERRY_HOME!, 'ferry.db'), { readonly: true });
  try {
    return db.prepare('SELECT n, at, line FROM job_logs WHERE job_id = ? ORDER BY n').all(jobId) as { n: number; at: string; line: string }[];
  } finally {
    db.close();
  }
}

let source: string, sourceSum: string;
const serves: ReturnType<typeof ferryProcess>[] = [];
/** what the serve processes wrote on stderr, for the failure messages */
let serveErr = '';
const serve = () => {
  const p = ferryProcess(['serve', '--listen', '127.0.0.1:0', '--log-level', 'silent']);
  p.stderr?.on('data', (d: Buffer) => { serveErr += d.toString(); });
  serves.push(p);
  return p;
};
/** until it prints that it listens: the runner has started (and reclaimed) by then */
const listening = (p: ReturnType<typeof ferryProcess>) => new Promise<void>((resolve, reject) => {
  let out = '';
  p.stdout?.on('data', (d: Buffer) => { out += d.toString(); if (/listening on/.test(out)) resolve(); });
  void p.then(r => reject(new Error(`ferry serve ended (${r.exitCode}): ${serveErr}`)));
});

before(async () => {
  source = join(dir, 'three.raw');
  await makeThreePartDisk(source);
  sourceSum = await sha256(source);
});

after(async () => {
  for (const p of serves) if (p.exitCode === null) { p.kill('SIGTERM'); await p; }
});

describe('kill -9 of ferry serve in the middle of a copy', () => {
  it('reclaims what the dead run held, resumes from the last completed step, and the result verifies', async () => {
    const target = join(dir, 'out.qcow2');
    // the file-level rebuild: its copy steps last long enough to be killed in the middle (a used-block copy is over too soon)
    await writeFile(join(dir, 'job.yaml'), `source: ${source}\ntarget: ${target}\noptions:\n  mode: rebuild\n`);
    const first = serve();
    await listening(first);
    const id = (await ferry(['jobs', 'submit', join(dir, 'job.yaml')])).stdout.trim();
    assert.match(id, /^[0-9a-f]{8}$/);

    // wait for p1 done and p2's copy under way (its target file system mounted), straight from the store
    const db = new Database(join(process.env.FERRY_HOME!, 'ferry.db'), { readonly: true });
    const stepState = db.prepare('SELECT state FROM job_steps WHERE job_id = ? AND name = ?');
    const dstMounted = db.prepare(`SELECT COUNT(*) AS n FROM job_resources WHERE job_id = ? AND kind = 'mount' AND res_id LIKE '%/dst-%'`);
    const allSteps = db.prepare('SELECT name, state, progress FROM job_steps WHERE job_id = ?');
    const guard = stallGuard(120_000);
    try {
      for (;; await sleep(50)) {
        const p1 = (stepState.get(id, 'copy p1') as { state: string } | undefined)?.state;
        const p2 = (stepState.get(id, 'copy p2') as { state: string } | undefined)?.state;
        if (p1 === 'done' && p2 === 'running' && (dstMounted.get(id) as { n: number }).n > 0) break;
        assert.ok(p2 !== 'done' && p2 !== 'failed', 'missed the copy of p2');
        guard(allSteps.all(id), () => 'the copy of p2 never started');
      }
      await sleep(300); // bytes flowing
    } finally {
      db.close();
    }
    const killedAt = Date.now();
    first.kill('SIGKILL');
    await first;
    let job = await show(id);
    const p1Before = job.steps.find(s => s.name === 'copy p1')!;
    const p2Before = job.steps.find(s => s.name === 'copy p2')!;
    assert.equal(p2Before.state, 'running');
    assert.deepEqual(job.steps.map(s => s.name), ['open source', 'plan layout', 'create target', 'copy p1', 'copy p2', 'copy p3', 'verify', 'commit']);
    const dead = await heldNow(id);
    // the dead run left them: that is what the restart must reclaim
    for (const kind of ['loop', 'mount', 'daemon']) {
      assert.ok(dead.present.some(p => p.startsWith(kind)), `a ${kind} of the dead run is still there (held: ${JSON.stringify(dead.rows)}, present: ${dead.present.join(', ')})`);
    }
    assert.equal((await show(id)).state, 'running', 'the store still says running: nobody has noticed yet');

    const restartedAt = Date.now();
    const second = serve();
    const resumed = stallGuard(300_000);
    for (;; await sleep(300)) {
      job = await show(id);
      if (job.state === 'done') break;
      assert.ok(job.state === 'running' || job.state === 'queued', `the resumed job ended ${job.state}: ${job.error?.code}: ${job.error?.message}`);
      resumed(job.steps, () => `the resumed job did not finish: ${JSON.stringify(job.steps)}\n${logsWithTimes(id).map(l => `${l.at} ${l.line}`).join('\n')}\nserve: ${serveErr.slice(-3000)}`);
    }
    const doneAt = Date.now();

    // the finished partition was not copied again; the interrupted one was
    const p1After = job.steps.find(s => s.name === 'copy p1')!;
    const p2After = job.steps.find(s => s.name === 'copy p2')!;
    assert.equal(p1After.startedAt, p1Before.startedAt);
    assert.equal(p1After.endedAt, p1Before.endedAt);
    assert.ok(Date.parse(p2After.startedAt!) >= restartedAt, 'p2 was started again after the restart');
    assert.notEqual(p2After.startedAt, p2Before.startedAt);
    const logs = logsWithTimes(id);
    const count = (re: RegExp) => logs.filter(l => re.test(l.line)).length;
    assert.equal(count(/^step copy p1: started$/), 1, 'p1 copied once');
    assert.equal(count(/^step copy p2: started$/), 2, 'p2 copied twice: interrupted, then redone');
    assert.equal(count(/^step copy p3: started$/), 1);
    assert.equal(count(/^step copy p1: done before, skipped$/), 1);
    assert.equal(count(/^step copy p2: was interrupted; redoing it$/), 1);
    assert.equal(count(/^step create target: done before, re-opened$/), 1);

    // nothing of the dead run remains, and the store holds no records of it
    const after = await heldNow(id);
    assert.deepEqual(after.rows, [], 'no resource records left');
    for (const r of dead.rows) {
      if (r.kind === 'mount') assert.equal(await mounted(r.id), false, `mount ${r.id} gone`);
      if (r.kind === 'loop' && r.detail) assert.notEqual(await loopBacking(r.id), r.detail, `loop ${r.id} gone`);
      if (r.kind === 'daemon' && r.pid) assert.equal(await qsdAlive(r.pid), false, `qsd ${r.pid} gone`);
    }

    assert.equal(await sha256(source), sourceSum, 'source unchanged');
    await assertSameFiles(source, target);
    const v = await ferry(['verify', source, target]);
    assert.equal(v.exitCode, 0, `verify: ${v.stdout}\n${v.stderr}`);

    second.kill('SIGTERM');
    const end = await second;
    assert.equal(end.exitCode, 0, String(end.stderr).slice(-2000));

    // the timeline, for the notes
    const t = (iso: string) => ((Date.parse(iso) - killedAt) / 1000).toFixed(2).padStart(7);
    const at = (re: RegExp) => logs.find(l => re.test(l.line) && Date.parse(l.at) >= restartedAt);
    const lines = [
      `${t(p1Before.startedAt!)} s  copy p1 started (first run)`,
      `${t(p1Before.endedAt!)} s  copy p1 done`,
      `${t(p2Before.startedAt!)} s  copy p2 started (first run)${p2Before.progress ? `; ${p2Before.progress.bytes} of ${p2Before.progress.total} bytes at the last progress record` : ''}`,
      `${t(new Date(killedAt).toISOString())} s  kill -9 of ferry serve (pid ${first.pid}); left: ${dead.present.join(', ')}`,
      `${t(new Date(restartedAt).toISOString())} s  ferry serve started again`,
      ...['its runner .* is gone', 'killing what the dead run left', 'reclaim finished', '^resuming', 'step create target: done before', 'step copy p2: was interrupted', 'step copy p2: done', 'step verify: done', '^done$']
        .map(re => at(new RegExp(re))).filter(Boolean).map(l => `${t(l!.at)} s  ${l!.line}`),
      `${t(new Date(doneAt).toISOString())} s  the store shows done (polled)`,
    ];
    console.log(`# resume-after-kill timeline (seconds from the kill):\n${lines.map(l => `#   ${l}`).join('\n')}`);
  });
});

describe('kill -9 of ferry serve in the middle of a re-fit', () => {
  it('the half-changed target is not re-fitted again: the job builds it afresh from the source, re-fits it once and ends done', async () => {
    const g = await buildLegacyGuest();
    const legacySum = await sha256(g.disk);
    const target = join(dir, 'refit.qcow2');
    await writeFile(join(dir, 'refit.yaml'), `source: ${g.disk}\ntarget: ${target}\nprofile: kvm-virtio\noptions:\n  mode: rebuild\n`);
    const first = serve();
    await listening(first);
    const id = (await ferry(['jobs', 'submit', join(dir, 'refit.yaml')])).stdout.trim();
    const db = new Database(join(process.env.FERRY_HOME!, 'ferry.db'), { readonly: true });
    const stepState = db.prepare('SELECT state FROM job_steps WHERE job_id = ? AND name = ?');
    const allSteps = db.prepare('SELECT name, state, progress FROM job_steps WHERE job_id = ?');
    const guard = stallGuard(180_000);
    try {
      for (; (stepState.get(id, 're-fit') as { state: string } | undefined)?.state !== 'running'; await sleep(50)) {
        assert.ok((stepState.get(id, 're-fit') as { state: string } | undefined)?.state !== 'done', 'missed the re-fit');
        guard(allSteps.all(id), () => 'the re-fit never started');
      }
      await sleep(500); // into its changes
    } finally {
      db.close();
    }
    first.kill('SIGKILL');
    await first;
    assert.equal((await show(id)).steps.find(s => s.name === 're-fit')?.state, 'running');

    const second = serve();
    let job = await show(id);
    const resumed = stallGuard(300_000);
    for (; job.state !== 'done'; await sleep(300), job = await show(id)) {
      assert.ok(job.state === 'running' || job.state === 'queued', `the resumed job ended ${job.state}: ${job.error?.code}: ${job.error?.message}`);
      resumed(job.steps, () => `the resumed job did not finish: ${JSON.stringify(job.steps)}`);
    }
    const lines = logsWithTimes(id).map(l => l.line);
    const count = (re: RegExp) => lines.filter(l => re.test(l)).length;
    assert.equal(count(/^the re-fit was interrupted on a half-changed image; building the target again from the source$/), 1);
    assert.equal(count(/^step create target: started$/), 2, 'the target was made again');
    assert.equal(count(/^step re-fit: done$/), 1, 'one re-fit finished, on the fresh copy');
    assert.deepEqual((await heldNow(id)).rows, [], 'no resource records left');

    const r = await ferry(['inspect', target, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const os = (JSON.parse(r.stdout) as InspectReport).operatingSystems[0] as LinuxOs;
    for (const m of ['virtio_blk', 'virtio_pci', 'ata_piix']) assert.ok(os.kernels[0].initramfs!.modules.includes(m), `initramfs has ${m}`);
    assert.equal(await sha256(g.disk), legacySum, 'source unchanged');

    second.kill('SIGTERM');
    assert.equal((await second).exitCode, 0);
  });
});
