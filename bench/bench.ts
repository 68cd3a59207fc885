// `npm run bench`: Ferry against `qemu-img convert` on two raw disks — a data
// disk with stale (deleted) blocks and the Debian guest. Page caches are
// dropped before every timed run; every output is removed after it is measured.
// Prints a table and ratios, and writes the same as bench/results.json.
import { execa } from 'execa';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..'); // dist/bench -> repo
const CLI = join(REPO, 'dist/src/cli/main.js');

interface Step { name: string; seconds: number }
/** load1: the host's 1-minute load average when the run started (other work skews the times) */
interface Run { tool: string; seconds: number; allocatedBytes: number; load1: number; steps?: Step[]; allSeconds?: number[] }
interface InputResult {
  name: string; image: string; virtualSize: number; sourceUsedBytes: number; runs: Run[];
  ratios: { ferryWallVsQemu: number; ferryNoVerifyWallVsQemu: number; ferryAllocVsUsed: number; qemuAllocVsUsed: number };
}

/** Run a fixture builder; its last stdout line is the image path. */
async function fixture(script: string): Promise<string> {
  const r = await execa('bash', [join(REPO, 'scripts', script)], { stdin: 'ignore', stderr: 'inherit' });
  const path = r.stdout.trim().split('\n').pop();
  if (!path) throw new Error(`${script} printed no image path`);
  return path;
}

async function dropCaches(): Promise<void> {
  await execa('sync', [], { stdin: 'ignore' });
  await writeFile('/proc/sys/vm/drop_caches', '3');
}

const allocated = async (file: string) => (await stat(file)).blocks * 512;

async function sourceUsed(image: string): Promise<{ used: number; size: number }> {
  const r = await execa(process.execPath, [CLI, 'info', image, '--json'], { stdin: 'ignore' });
  const info = JSON.parse(r.stdout) as { virtualSize: number; partitions: { usedBytes?: number }[] };
  return { used: info.partitions.reduce((n, p) => n + (p.usedBytes ?? 0), 0), size: info.virtualSize };
}

/**
 * Time `ferry convert --json`; split the wall time into steps by the arrival
 * time of its NDJSON events: start-up, each `phase` (the last is `verify`), exit.
 */
async function ferry(image: string, out: string, verify: boolean): Promise<Run> {
  await dropCaches();
  const args = [CLI, 'convert', image, out, '--json', ...(verify ? [] : ['--no-verify'])];
  const load1 = loadavg()[0];
  const t0 = performance.now();
  const marks: Step[] = [{ name: 'start-up, probe, create', seconds: 0 }];
  const child = execa(process.execPath, args, { stdin: 'ignore', stderr: 'inherit' });
  for await (const line of child.iterable()) {
    const at = (performance.now() - t0) / 1000;
    const ev = JSON.parse(String(line)) as { event: string; phase?: string; message?: string };
    if (ev.event === 'phase') marks.push({ name: ev.phase!, seconds: at });
    else if (ev.event === 'result') marks.push({ name: 'exit', seconds: at });
  }
  await child;
  const seconds = (performance.now() - t0) / 1000;
  const steps = marks.map((m, i) => ({ name: m.name, seconds: (marks[i + 1]?.seconds ?? seconds) - m.seconds }));
  const run = { tool: verify ? 'ferry' : 'ferry --no-verify', seconds, allocatedBytes: await allocated(out), load1, steps };
  await rm(out, { force: true });
  return run;
}

async function qemuImg(image: string, out: string): Promise<Run> {
  await dropCaches();
  const load1 = loadavg()[0];
  const t0 = performance.now();
  await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', image, out], { stdin: 'ignore', stderr: 'inherit' });
  const seconds = (performance.now() - t0) / 1000;
  const run = { tool: 'qemu-img', seconds, allocatedBytes: await allocated(out), load1 };
  await rm(out, { force: true });
  return run;
}

/** FERRY_BENCH_REPEAT=N runs each command N times and keeps the run with the median wall time. */
const REPEAT = Math.max(1, Number(process.env.FERRY_BENCH_REPEAT ?? 1) || 1);
async function median(fn: () => Promise<Run>): Promise<Run> {
  const runs: Run[] = [];
  for (let i = 0; i < REPEAT; i++) runs.push(await fn());
  runs.sort((a, b) => a.seconds - b.seconds);
  return { ...runs[(REPEAT - 1) >> 1], allSeconds: runs.map(r => r.seconds) };
}

async function measure(name: string, image: string, work: string): Promise<InputResult> {
  const { used, size } = await sourceUsed(image);
  console.error(`bench: ${name}: ${image}`);
  const runs = [
    await median(() => ferry(image, join(work, 'out.qcow2'), true)),
    await median(() => ferry(image, join(work, 'out.qcow2'), false)),
    await median(() => qemuImg(image, join(work, 'out-qemu.qcow2'))),
  ];
  const [f, fnv, q] = runs;
  return {
    name, image, virtualSize: size, sourceUsedBytes: used, runs,
    ratios: {
      ferryWallVsQemu: f.seconds / q.seconds,
      ferryNoVerifyWallVsQemu: fnv.seconds / q.seconds,
      ferryAllocVsUsed: f.allocatedBytes / used,
      qemuAllocVsUsed: q.allocatedBytes / used,
    },
  };
}

const MiB = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
const pad = (s: string, n: number) => s.padEnd(n);

function report(r: InputResult): string {
  const lines = [`\n${r.name}  (${MiB(r.virtualSize)} disk, source used ${MiB(r.sourceUsedBytes)})`,
    `  ${pad('tool', 20)}${pad('wall', 10)}${pad('allocated', 12)}${pad('alloc/used', 12)}load`];
  for (const run of r.runs) {
    lines.push(`  ${pad(run.tool, 20)}${pad(run.seconds.toFixed(1) + ' s', 10)}${pad(MiB(run.allocatedBytes), 12)}${pad((run.allocatedBytes / r.sourceUsedBytes).toFixed(3), 12)}${run.load1.toFixed(1)}${REPEAT > 1 ? `  (runs: ${run.allSeconds!.map(x => x.toFixed(1)).join(', ')} s)` : ''}`);
    for (const s of run.steps ?? []) lines.push(`      ${pad(s.name, 24)}${s.seconds.toFixed(1)} s`);
  }
  const x = r.ratios;
  lines.push(`  ferry wall / qemu-img wall:            ${x.ferryWallVsQemu.toFixed(2)}  (goal <= 1.0; --no-verify: ${x.ferryNoVerifyWallVsQemu.toFixed(2)})`);
  lines.push(`  ferry allocated / source used:         ${x.ferryAllocVsUsed.toFixed(3)} (goal <= 1.05)`);
  lines.push(`  qemu-img allocated / source used:      ${x.qemuAllocVsUsed.toFixed(3)}`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (loop devices, mounts, drop_caches)');
  const inputs: [string, string][] = [
    ['data disk (ext4 + xfs, stale blocks)', await fixture('build-bench-disk.sh')],
    ['Debian 12 guest', await fixture('build-debian-guest.sh')],
  ];
  const work = await mkdtemp(join(process.env.FERRY_BENCH_DIR ?? tmpdir(), 'ferry-bench-'));
  const results: InputResult[] = [];
  try {
    for (const [name, image] of inputs) results.push(await measure(name, image, work));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  for (const r of results) console.log(report(r));
  const file = join(REPO, 'bench', 'results.json');
  await writeFile(file, JSON.stringify({ date: new Date().toISOString(), cpus: cpus().length, repeat: REPEAT, results }, null, 2) + '\n');
  console.log(`\nwritten ${file}`);
}

main().catch((e: unknown) => {
  console.error(`bench: ${(e as Error).message}`);
  process.exitCode = 1;
});
