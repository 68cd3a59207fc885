// `npm run bench`: Ferry against `qemu-img convert` on two raw disks — a data
// disk with stale (deleted) blocks and the Debian guest — and the Debian guest
// read over loopback from NBD (nbdkit) and iSCSI (tgtd) against the same local
// file. Page caches are dropped before every timed run; every output is
// removed after it is measured. Prints a table and ratios, and writes the same
// as bench/results.json. `npm run bench -- --only network` (or
// FERRY_BENCH_ONLY=data,debian,ntfs,network,inspect,jobs,deploy) runs some of the parts only.
// Part `ntfs`: the NTFS data disk of test/fixtures/build-ntfs-disk.sh (stale deleted data included).
// Part `deploy` (bench/deploy.ts): PXE boot, deploy onto a TCG "physical machine" against qemu-img.
// Part `jobs` (bench/jobs.ts): 50 jobs at once through `ferry serve`'s HTTP API.
// Part `inspect`: `ferry inspect --json` against libguestfs' virt-inspector on
// the Debian guest and the legacy guest, where libguestfs can run here.
import { execa, type ResultPromise } from 'execa';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { measureJobs, reportJobs, type JobsResult } from './jobs.js';
import { measureDeploy, reportDeploy, type DeployBench } from './deploy.js';
import { measureConsole, reportConsole, type ConsoleBench } from './console.js';
import { measureFleet, reportFleet, type FleetBench } from './fleet.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..'); // dist/bench -> repo
const CLI = join(REPO, 'dist/src/cli/main.js');

interface Step { name: string; seconds: number }
/** load1: the host's 1-minute load average when the run started (other work skews the times) */
/** cpuSeconds: user + sys of the command's whole process tree (daemons it started included), from a cpuacct cgroup */
interface Run { tool: string; seconds: number; cpuSeconds?: number; allocatedBytes: number; load1: number; steps?: Step[]; allSeconds?: number[]; source?: string }
interface InputResult {
  name: string; image: string; virtualSize: number; sourceUsedBytes: number; runs: Run[];
  /** the --size of the shrink rows (bytes) */
  shrinkSize?: number;
  ratios: {
    ferryWallVsQemu: number; ferryNoVerifyWallVsQemu: number; ferryAllocVsUsed: number; qemuAllocVsUsed: number;
    /** ferry (verify included) / (qemu-img convert + qemu-img compare) */
    ferryWallVsQemuVerified?: number;
    /** ferry --size (shrunk) / qemu-img convert + compare, and --no-verify / qemu-img convert */
    shrinkWallVsQemuVerified?: number; shrinkNoVerifyWallVsQemu?: number; shrinkAllocVsUsed?: number;
    ferryCpuVsQemu?: number; ferryNoVerifyCpuVsQemu?: number;
  };
}

/** Run a fixture builder; the image path is its last stdout line (fromEnd 1) or the one before (2). */
async function fixture(script: string, fromEnd = 1): Promise<string> {
  const r = await execa('bash', [join(REPO, 'test', 'fixtures', script)], { stdin: 'ignore', stderr: 'inherit' });
  const lines = r.stdout.trim().split('\n');
  const path = lines[lines.length - fromEnd];
  if (!path) throw new Error(`${script} printed no image path`);
  return path;
}

async function dropCaches(): Promise<void> {
  await execa('sync', [], { stdin: 'ignore' });
  await writeFile('/proc/sys/vm/drop_caches', '3');
}

const allocated = async (file: string) => (await stat(file)).blocks * 512;

/**
 * CPU time (user + sys) of a command and everything it starts, daemons that
 * detach from it included (qemu-storage-daemon --daemonize is reparented to
 * init, so getrusage(RUSAGE_CHILDREN) and /usr/bin/time miss it): the child is
 * put into a cgroup v1 cpuacct group of its own right after it is spawned
 * (node takes tens of ms to start, before it forks anything), and its
 * descendants inherit the group. undefined where no such cgroup can be made.
 */
const CPUACCT = '/sys/fs/cgroup/cpuacct';
let cpuGroups = 0;
async function inCpuGroup<T>(spawn: () => ResultPromise, body: (child: ResultPromise) => Promise<T>): Promise<{ value: T; cpuSeconds?: number }> {
  const dir = join(CPUACCT, `ferry-bench-${process.pid}-${cpuGroups++}`);
  const made = await mkdir(dir).then(() => true, () => false);
  const child = spawn();
  if (made) await writeFile(join(dir, 'cgroup.procs'), String(child.pid)).catch(() => undefined);
  try {
    const value = await body(child);
    if (!made) return { value };
    const ns = async (f: string) => Number((await readFile(join(dir, f), 'utf8')).trim());
    // a daemonized helper may still be exiting: its CPU is counted once the group is empty
    for (let i = 0; i < 100 && (await readFile(join(dir, 'cgroup.procs'), 'utf8')).trim(); i++) await sleep(20);
    return { value, cpuSeconds: ((await ns('cpuacct.usage_user')) + (await ns('cpuacct.usage_sys'))) / 1e9 };
  } finally {
    if (made) await rmdir(dir).catch(() => undefined);
  }
}

async function sourceUsed(image: string): Promise<{ used: number; size: number }> {
  const r = await execa(process.execPath, [CLI, 'info', image, '--json'], { stdin: 'ignore' });
  const info = JSON.parse(r.stdout) as { virtualSize: number; partitions: { usedBytes?: number; lvm?: { lvs: { usedBytes?: number }[] } }[] };
  // an LVM PV's data is in its logical volumes
  const used = (p: (typeof info.partitions)[number]) => (p.usedBytes ?? 0) + (p.lvm?.lvs.reduce((n, l) => n + (l.usedBytes ?? 0), 0) ?? 0);
  return { used: info.partitions.reduce((n, p) => n + used(p), 0), size: info.virtualSize };
}

/**
 * Time `ferry convert --json`; split the wall time into steps by the arrival
 * time of its NDJSON events: start-up, each `phase` (the last is `verify`), exit.
 */
async function ferry(image: string, out: string, verify: boolean, opts: { size?: number } = {}): Promise<Run> {
  await dropCaches();
  const args = [CLI, 'convert', image, out, '--json', ...(verify ? [] : ['--no-verify']), ...MODE_ARGS,
    ...(opts.size ? ['--size', String(opts.size)] : [])];
  const load1 = loadavg()[0];
  const t0 = performance.now();
  const marks: Step[] = [{ name: 'start-up, probe, create', seconds: 0 }];
  const { cpuSeconds } = await inCpuGroup(() => execa(process.execPath, args, { stdin: 'ignore', stderr: 'inherit' }), async child => {
    for await (const line of child.iterable()) {
      const at = (performance.now() - t0) / 1000;
      const ev = JSON.parse(String(line)) as { event: string; phase?: string; message?: string };
      if (ev.event === 'phase') marks.push({ name: ev.phase!, seconds: at });
      else if (ev.event === 'result') marks.push({ name: 'exit', seconds: at });
    }
    await child;
  });
  const seconds = (performance.now() - t0) / 1000;
  const steps = marks.map((m, i) => ({ name: m.name, seconds: (marks[i + 1]?.seconds ?? seconds) - m.seconds }));
  const tool = `ferry${verify ? '' : ' --no-verify'}${opts.size ? ' --size' : ''}`;
  const run = { tool, seconds, cpuSeconds, allocatedBytes: await allocated(out), load1, steps };
  await rm(out, { force: true });
  return run;
}

/** FERRY_BENCH_MODE=clone|rebuild|block: ferry convert --mode X (default: ferry's own choice) */
const MODE_ARGS = process.env.FERRY_BENCH_MODE ? ['--mode', process.env.FERRY_BENCH_MODE] : [];

/**
 * image: a file or a network URL (qemu-img opens nbd:// and iscsi:// itself).
 * compare: then `qemu-img compare` of the two, timed with the convert: the peer of a verified conversion.
 */
async function qemuImg(image: string, out: string, compare = false): Promise<Run> {
  await dropCaches();
  const load1 = loadavg()[0];
  const t0 = performance.now();
  const timed = (args: string[]) => inCpuGroup(() => execa('qemu-img', args, { stdin: 'ignore', stderr: 'inherit' }), async c => { await c; });
  let cpu = (await timed(['convert', '-f', 'raw', '-O', 'qcow2', image, out])).cpuSeconds;
  if (compare) {
    const c = (await timed(['compare', '-f', 'raw', '-F', 'qcow2', image, out])).cpuSeconds;
    cpu = cpu === undefined || c === undefined ? undefined : cpu + c;
  }
  const seconds = (performance.now() - t0) / 1000;
  const run = { tool: compare ? 'qemu-img + compare' : 'qemu-img', seconds, cpuSeconds: cpu, allocatedBytes: await allocated(out), load1 };
  await rm(out, { force: true });
  return run;
}

/** FERRY_BENCH_REPEAT=N runs each command N times and keeps the run with the median wall time. */
const REPEAT = Math.max(1, Number(process.env.FERRY_BENCH_REPEAT ?? 1) || 1);
async function median<T extends { seconds: number }>(fn: () => Promise<T>): Promise<T & { allSeconds: number[] }> {
  const runs: T[] = [];
  for (let i = 0; i < REPEAT; i++) runs.push(await fn());
  runs.sort((a, b) => a.seconds - b.seconds);
  return { ...runs[(REPEAT - 1) >> 1], allSeconds: runs.map(r => r.seconds) };
}

/** The shrink rows' --size: three quarters of the source, in whole MiB (below the source, above what its files need). */
const shrinkSizeOf = (size: number) => Math.floor(size * 0.75 / 2 ** 20) * 2 ** 20;

async function measure(name: string, image: string, work: string): Promise<InputResult> {
  const { used, size } = await sourceUsed(image);
  console.error(`bench: ${name}: ${image}`);
  const out = join(work, 'out.qcow2');
  const shrinkSize = shrinkSizeOf(size);
  const runs = [
    await median(() => ferry(image, out, true)),
    await median(() => ferry(image, out, false)),
    await median(() => ferry(image, out, true, { size: shrinkSize })),
    await median(() => ferry(image, out, false, { size: shrinkSize })),
    await median(() => qemuImg(image, join(work, 'out-qemu.qcow2'))),
    await median(() => qemuImg(image, join(work, 'out-qemu.qcow2'), true)),
  ];
  const [f, fnv, s, snv, q, qc] = runs;
  const cpuRatio = (a: Run, b: Run) => a.cpuSeconds !== undefined && b.cpuSeconds ? a.cpuSeconds / b.cpuSeconds : undefined;
  return {
    name, image, virtualSize: size, sourceUsedBytes: used, runs, shrinkSize,
    ratios: {
      ferryWallVsQemu: f.seconds / q.seconds,
      ferryNoVerifyWallVsQemu: fnv.seconds / q.seconds,
      ferryAllocVsUsed: f.allocatedBytes / used,
      qemuAllocVsUsed: q.allocatedBytes / used,
      ferryWallVsQemuVerified: f.seconds / qc.seconds,
      shrinkWallVsQemuVerified: s.seconds / qc.seconds,
      shrinkNoVerifyWallVsQemu: snv.seconds / q.seconds,
      shrinkAllocVsUsed: s.allocatedBytes / used,
      ferryCpuVsQemu: cpuRatio(f, qc),
      ferryNoVerifyCpuVsQemu: cpuRatio(fnv, q),
    },
  };
}

// ——— the Debian guest over loopback: NBD (nbdkit) and iSCSI (tgtd) against the local file ———

const SOURCES = ['local', 'nbd', 'iscsi'] as const;
type SourceKind = typeof SOURCES[number];
const TOOLS = ['ferry', 'ferry --no-verify', 'qemu-img'] as const;

interface NetworkResult {
  name: string; image: string; virtualSize: number; sourceUsedBytes: number;
  urls: Record<Exclude<SourceKind, 'local'>, string>;
  runs: Run[];
  /** per tool: network throughput / local throughput = local wall / network wall (goal >= 0.8) */
  ratios: Record<string, { nbd: number; iscsi: number }>;
}

interface Daemon { url: string; stop(): Promise<void> }
const children = new Set<ResultPromise>();
const daemons = new Set<Daemon>();
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });
// interrupted: stop the servers properly (tgtd leaves its management socket otherwise), then exit
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void Promise.allSettled([...daemons].map(d => d.stop())).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  });
}
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address() as { port: number }; srv.close(() => res(port)); });
  });
}

/** Spawn a daemon in the foreground; resolves once 127.0.0.1:port accepts connections. */
async function spawnListening(cmd: string, args: string[], port: number): Promise<{ child: ResultPromise }> {
  const child = execa(cmd, args, { reject: false, stdin: 'ignore', buffer: true });
  children.add(child);
  void child.finally(() => children.delete(child));
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited before listening: ${String((await child).stderr).trim()}`);
    const ok = await new Promise<boolean>(res => {
      const s = connect({ host: '127.0.0.1', port });
      s.once('connect', () => { s.destroy(); res(true); });
      s.once('error', () => { s.destroy(); res(false); });
    });
    if (ok) return { child }; // wrapped: a returned subprocess would be awaited
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`${cmd} did not listen on 127.0.0.1:${port} within 10 s`);
}

function track(d: Daemon): Daemon {
  let stopping: Promise<void> | undefined;
  const t: Daemon = { url: d.url, stop: () => (stopping ??= d.stop().finally(() => daemons.delete(t))) };
  daemons.add(t);
  return t;
}

async function reap(child: ResultPromise, signal?: NodeJS.Signals): Promise<void> {
  if (signal && child.exitCode === null) child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await child;
  clearTimeout(timer);
}

/** nbdkit's file plugin, read-only, on 127.0.0.1 TCP (nbdkit sets TCP_NODELAY). */
async function startNbdkit(file: string): Promise<Daemon> {
  const port = await freePort();
  const { child } = await spawnListening('nbdkit', ['--foreground', '--exit-with-parent', '--read-only', '-i', '127.0.0.1', '-p', String(port), 'file', file], port);
  return track({ url: `nbd://127.0.0.1:${port}/debian`, stop: () => reap(child, 'SIGTERM') });
}

/** tgtd serving the file as read-only LUN 1 on 127.0.0.1, no CHAP, with its own management socket. */
async function startTgtd(file: string): Promise<Daemon> {
  const port = await freePort();
  const control = String(1000 + Math.floor(Math.random() * 31000));
  const iqn = 'iqn.2026-11.io.ferry.bench:debian';
  const { child } = await spawnListening('tgtd', ['-f', '-C', control, '--iscsi', `portal=127.0.0.1:${port}`], port);
  const adm = (...a: string[]) => execa('tgtadm', ['-C', control, '--lld', 'iscsi', ...a], { stdin: 'ignore', reject: false });
  const stop = async () => {
    // tgtd ignores SIGTERM while it has targets: delete them, then ask it to exit
    await adm('--mode', 'target', '--op', 'delete', '--force', '--tid', '1');
    await execa('tgtadm', ['-C', control, '--mode', 'system', '--op', 'delete'], { stdin: 'ignore', reject: false });
    await reap(child);
    for (const f of [`/var/run/tgtd/socket.${control}`, `/var/run/tgtd/socket.${control}.lock`]) await rm(f, { force: true });
  };
  try {
    for (const a of [
      ['--mode', 'target', '--op', 'new', '--tid', '1', '--targetname', iqn],
      ['--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', '1', '--backing-store', file],
      ['--mode', 'logicalunit', '--op', 'update', '--tid', '1', '--lun', '1', '--params', 'readonly=1'],
      ['--mode', 'target', '--op', 'bind', '--tid', '1', '--initiator-address', '127.0.0.1'],
    ]) {
      const r = await adm(...a);
      if (r.exitCode !== 0) throw new Error(`tgtadm ${a.join(' ')}: ${String(r.stderr).trim()}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return track({ url: `iscsi://127.0.0.1:${port}/${iqn}/1`, stop });
}

/**
 * The same conversions from the local file, from nbd:// and from iscsi:// over
 * loopback, back to back per tool, in one run; both servers read the same file.
 */
async function measureNetwork(name: string, image: string, work: string): Promise<NetworkResult> {
  const { used, size } = await sourceUsed(image);
  console.error(`bench: ${name}: ${image} over loopback NBD and iSCSI`);
  const servers: Daemon[] = [];
  try {
    const nbd = await startNbdkit(image);
    servers.push(nbd);
    const iscsi = await startTgtd(image);
    servers.push(iscsi);
    const url: Record<SourceKind, string> = { local: image, nbd: nbd.url, iscsi: iscsi.url };
    const runs: Run[] = [];
    for (const tool of TOOLS) {
      for (const source of SOURCES) {
        const out = join(work, 'out.qcow2');
        const run = await median(() => tool === 'qemu-img' ? qemuImg(url[source], out) : ferry(url[source], out, tool === 'ferry'));
        runs.push({ ...run, source });
      }
    }
    const wall = (tool: string, source: SourceKind) => runs.find(r => r.tool === tool && r.source === source)!.seconds;
    const ratios: NetworkResult['ratios'] = {};
    for (const tool of TOOLS) ratios[tool] = { nbd: wall(tool, 'local') / wall(tool, 'nbd'), iscsi: wall(tool, 'local') / wall(tool, 'iscsi') };
    return { name, image, virtualSize: size, sourceUsedBytes: used, urls: { nbd: nbd.url, iscsi: iscsi.url }, runs, ratios };
  } finally {
    for (const s of servers.reverse()) await s.stop();
  }
}

// ——— `ferry inspect` against virt-inspector (libguestfs) on the same image ———

/** what one inspection found: the first operating system's distro, hostname and product */
interface Found { distro?: string; hostname?: string; product?: string; operatingSystems: number }
interface Timed extends Found { tool: string; seconds: number; load1: number; allSeconds?: number[] }
/** How libguestfs runs here: found by starting its appliance once (libguestfs-test-tool). */
interface Libguestfs {
  available: boolean;
  /** why virt-inspector is not timed */
  reason?: string;
  backend?: 'direct';
  accel?: 'kvm' | 'tcg';
  /** why KVM was not used, when TCG is */
  kvmFailure?: string;
  env?: Record<string, string>;
}
interface InspectResult {
  name: string; image: string; virtualSize: number;
  ferry: Timed;
  /** ferry found the distro the fixture holds */
  ferrySane: boolean;
  libguestfs: Omit<Libguestfs, 'env'>;
  virtInspector?: Timed;
  /** virt-inspector names the same distro / hostname as ferry */
  agree?: { distro: boolean; hostname: boolean };
  /** virt-inspector wall / ferry wall */
  ratio?: number;
  /** ferry wall <= 3 s */
  goalMet: boolean;
}
const INSPECT_GOAL_SECONDS = 3;

/**
 * Children started in their own process group (libguestfs tools start qemu):
 * a timeout or the bench's exit kills the whole group, so no appliance is left.
 */
const groups = new Set<number>();
process.on('exit', () => { for (const g of groups) killGroup(g); });
function killGroup(pgid: number): void {
  try { process.kill(-pgid, 'SIGKILL'); } catch { /* already gone */ }
}
async function runGroup(cmd: string, args: string[], env: Record<string, string>, timeoutMs: number) {
  const child = execa(cmd, args, { env, extendEnv: false, detached: true, reject: false, stdin: 'ignore', all: true });
  const pgid = child.pid!;
  groups.add(pgid);
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; killGroup(pgid); }, timeoutMs);
  const r = await child;
  clearTimeout(timer);
  killGroup(pgid); // anything the tool left in its group (normally nothing)
  groups.delete(pgid);
  return { ok: r.exitCode === 0 && !timedOut, timedOut, stdout: String(r.stdout), all: String(r.all) };
}

/** the first error line of a libguestfs tool's output: qemu's own, else libguestfs' */
function errorsOf(out: string): string {
  const lines = out.split('\n').map(l => l.trim());
  return lines.find(l => /^qemu-system-\S+: /.test(l) && !/terminating on signal/.test(l))
    ?? lines.find(l => /^(libguestfs|virt-inspector|supermin): error/.test(l))
    ?? (lines.filter(Boolean).slice(-2).join(' / ') || 'no output');
}

const KVM_PROBE_MS = 120_000;
const TCG_PROBE_MS = 600_000;

/**
 * Start the libguestfs appliance once with libguestfs-test-tool (this also builds
 * supermin's appliance cache under /var/tmp/.guestfs-0, so the timed runs do not):
 * first as libguestfs chooses (KVM when /dev/kvm opens, else TCG), then with TCG forced.
 */
async function probeLibguestfs(): Promise<Libguestfs> {
  const have = async (c: string) => (await execa('sh', ['-c', `command -v ${c}`], { reject: false, stdin: 'ignore' })).exitCode === 0;
  if (!(await have('virt-inspector')) || !(await have('libguestfs-test-tool'))) {
    return { available: false, reason: 'virt-inspector is not installed (`bash scripts/setup.sh --bench` installs libguestfs-tools)' };
  }
  const env: Record<string, string> = { ...process.env as Record<string, string>, LIBGUESTFS_BACKEND: 'direct' };
  delete env.LIBGUESTFS_BACKEND_SETTINGS;
  console.error('bench: inspect: starting the libguestfs appliance once (libguestfs-test-tool, backend direct)');
  const first = await runGroup('libguestfs-test-tool', [], env, KVM_PROBE_MS);
  const finished = (r: { ok: boolean; all: string }) => r.ok && r.all.includes('TEST FINISHED OK');
  if (finished(first)) {
    // libguestfs asks for accel=kvm:tcg and says which one qemu took
    if (/qemu KVM: enabled/.test(first.all)) return { available: true, backend: 'direct', accel: 'kvm', env };
    return { available: true, backend: 'direct', accel: 'tcg', kvmFailure: 'qemu reports KVM not enabled', env };
  }
  let kvmFailure = first.timedOut ? `the appliance did not come up within ${KVM_PROBE_MS / 1000} s` : errorsOf(first.all);
  // this host's KVM module is PVM (pagetable-based VM): it runs guest kernels built for PVM only
  if (existsSync('/sys/module/kvm_pvm')) kvmFailure += ' (the host KVM is kvm_pvm: only guest kernels built for PVM run under it)';
  console.error(`bench: inspect: libguestfs under KVM failed: ${kvmFailure}; trying TCG`);
  const tcgEnv = { ...env, LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };
  const tcg = await runGroup('libguestfs-test-tool', [], tcgEnv, TCG_PROBE_MS);
  if (finished(tcg)) return { available: true, backend: 'direct', accel: 'tcg', kvmFailure, env: tcgEnv };
  const tcgFailure = tcg.timedOut ? `the appliance did not come up within ${TCG_PROBE_MS / 1000} s` : errorsOf(tcg.all);
  return { available: false, reason: `libguestfs cannot start its appliance here: KVM: ${kvmFailure}; TCG: ${tcgFailure}`, kvmFailure };
}

async function ferryInspect(image: string): Promise<Timed> {
  await dropCaches();
  const load1 = loadavg()[0];
  const t0 = performance.now();
  const r = await execa(process.execPath, [CLI, 'inspect', image, '--json'], { stdin: 'ignore', stderr: 'inherit' });
  const seconds = (performance.now() - t0) / 1000;
  const doc = JSON.parse(r.stdout) as { operatingSystems: { distro?: string; hostname?: string; name?: string }[] };
  const os = doc.operatingSystems[0];
  return { tool: 'ferry inspect', seconds, load1, distro: os?.distro, hostname: os?.hostname, product: os?.name, operatingSystems: doc.operatingSystems.length };
}

/** virt-inspector's XML: the first <operatingsystem>'s distro, hostname and product_name */
function parseInspectorXml(xml: string): Found {
  const oses = [...xml.matchAll(/<operatingsystem>([\s\S]*?)<\/operatingsystem>/g)].map(m => m[1]);
  const tag = (t: string) => oses[0]?.match(new RegExp(`<${t}>([^<]*)</${t}>`))?.[1];
  return { distro: tag('distro'), hostname: tag('hostname'), product: tag('product_name'), operatingSystems: oses.length };
}

/** virt-inspector opens every disk read-only (it has no --ro: it never writes) */
async function virtInspector(image: string, lg: Libguestfs): Promise<Timed> {
  await dropCaches();
  const load1 = loadavg()[0];
  const t0 = performance.now();
  const r = await runGroup('virt-inspector', ['--format=raw', '-a', image], lg.env!, TCG_PROBE_MS);
  const seconds = (performance.now() - t0) / 1000;
  if (!r.ok) throw new Error(r.timedOut ? `virt-inspector did not finish within ${TCG_PROBE_MS / 1000} s` : `virt-inspector failed: ${errorsOf(r.all)}`);
  return { tool: 'virt-inspector', seconds, load1, ...parseInspectorXml(r.stdout) };
}

async function measureInspect(name: string, image: string, distro: string, lg: Libguestfs): Promise<InspectResult> {
  console.error(`bench: inspect: ${name}: ${image}`);
  const virtualSize = (await stat(image)).size;
  const ferry = await median(() => ferryInspect(image));
  const { env: _env, ...libguestfs } = lg;
  const r: InspectResult = {
    name, image, virtualSize, ferry, ferrySane: ferry.distro === distro, libguestfs,
    goalMet: ferry.seconds <= INSPECT_GOAL_SECONDS,
  };
  if (lg.available) {
    try {
      const vi = await median(() => virtInspector(image, lg));
      r.virtInspector = vi;
      r.ratio = vi.seconds / ferry.seconds;
      r.agree = { distro: vi.distro === ferry.distro, hostname: vi.hostname === ferry.hostname };
    } catch (e) {
      r.libguestfs = { ...libguestfs, available: false, reason: (e as Error).message };
    }
  }
  return r;
}

function reportInspect(r: InspectResult): string {
  const lines = [`\n${r.name}: inspect  (${MiB(r.virtualSize)} raw disk)`,
    `  ${pad('tool', 18)}${pad('wall', 10)}${pad('distro', 10)}${pad('hostname', 15)}${pad('product', 32)}load`];
  for (const t of [r.ferry, r.virtInspector]) {
    if (!t) continue;
    lines.push(`  ${pad(t.tool, 18)}${pad(t.seconds.toFixed(2) + ' s', 10)}${pad(t.distro ?? '-', 10)}${pad(t.hostname ?? '-', 15)}${pad(t.product ?? '-', 32)}${t.load1.toFixed(1)}${REPEAT > 1 ? `  (runs: ${t.allSeconds!.map(x => x.toFixed(2)).join(', ')} s)` : ''}`);
  }
  const lg = r.libguestfs;
  if (lg.available) lines.push(`  libguestfs: backend ${lg.backend}, ${lg.accel === 'kvm' ? 'KVM' : 'TCG'}${lg.kvmFailure ? ` (KVM: ${lg.kvmFailure})` : ''}`);
  else lines.push(`  virt-inspector not timed: ${lg.reason}`);
  lines.push(`  ferry inspect wall:                ${r.ferry.seconds.toFixed(2)} s (goal <= ${INSPECT_GOAL_SECONDS} s: ${r.goalMet ? 'met' : 'NOT MET'})`);
  lines.push(`  ferry found distro ${r.ferry.distro ?? 'none'}:       ${r.ferrySane ? 'ok' : 'WRONG'} (${r.ferry.operatingSystems} operating system(s))`);
  if (r.ratio !== undefined) {
    lines.push(`  virt-inspector wall / ferry wall:  ${r.ratio.toFixed(1)}`);
    lines.push(`  same distro / hostname:            ${r.agree!.distro ? 'yes' : 'NO'} / ${r.agree!.hostname ? 'yes' : 'NO'}`);
  }
  return lines.join('\n');
}

const MiB = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
const pad = (s: string, n: number) => s.padEnd(n);

const cpuText = (run: Run) => run.cpuSeconds === undefined ? '-' : run.cpuSeconds.toFixed(1) + ' s';
const ratioText = (x: number | undefined, digits = 2) => x === undefined ? '-' : x.toFixed(digits);

function report(r: InputResult): string {
  const lines = [`\n${r.name}  (${MiB(r.virtualSize)} disk, source used ${MiB(r.sourceUsedBytes)}${r.shrinkSize ? `; --size rows: ${MiB(r.shrinkSize)}` : ''})`,
    `  ${pad('tool', 26)}${pad('wall', 10)}${pad('cpu', 10)}${pad('allocated', 12)}${pad('alloc/used', 12)}load`];
  for (const run of r.runs) {
    lines.push(`  ${pad(run.tool, 26)}${pad(run.seconds.toFixed(1) + ' s', 10)}${pad(cpuText(run), 10)}${pad(MiB(run.allocatedBytes), 12)}${pad((run.allocatedBytes / r.sourceUsedBytes).toFixed(3), 12)}${run.load1.toFixed(1)}${REPEAT > 1 ? `  (runs: ${run.allSeconds!.map(x => x.toFixed(1)).join(', ')} s)` : ''}`);
    for (const s of run.steps ?? []) lines.push(`      ${pad(s.name, 24)}${s.seconds.toFixed(1)} s`);
  }
  const x = r.ratios;
  lines.push(`  ferry wall / qemu-img wall:            ${x.ferryWallVsQemu.toFixed(2)}  (--no-verify: ${x.ferryNoVerifyWallVsQemu.toFixed(2)}, goal <= 1.0)`);
  lines.push(`  ferry wall / (qemu-img + compare):     ${ratioText(x.ferryWallVsQemuVerified)}  (goal <= 1.0)`);
  lines.push(`  --size: / (qemu-img + compare):        ${ratioText(x.shrinkWallVsQemuVerified)}  (--no-verify / qemu-img: ${ratioText(x.shrinkNoVerifyWallVsQemu)}, goal <= 2.0)`);
  lines.push(`  cpu: ferry / (qemu-img + compare):     ${ratioText(x.ferryCpuVsQemu)}  (--no-verify / qemu-img: ${ratioText(x.ferryNoVerifyCpuVsQemu)})`);
  lines.push(`  ferry allocated / source used:         ${x.ferryAllocVsUsed.toFixed(3)} (--size: ${ratioText(x.shrinkAllocVsUsed, 3)}; goal <= 1.05)`);
  lines.push(`  qemu-img allocated / source used:      ${x.qemuAllocVsUsed.toFixed(3)}`);
  return lines.join('\n');
}

function reportNetwork(r: NetworkResult): string {
  const lines = [`\n${r.name} over loopback  (${MiB(r.virtualSize)} disk, source used ${MiB(r.sourceUsedBytes)})`,
    `  nbd: ${r.urls.nbd} (nbdkit file plugin, read-only)   iscsi: ${r.urls.iscsi} (tgtd, read-only LUN)`,
    `  ${pad('tool', 20)}${pad('source', 8)}${pad('wall', 10)}${pad('used/wall', 13)}${pad('allocated', 12)}load`];
  for (const run of r.runs) {
    lines.push(`  ${pad(run.tool, 20)}${pad(run.source!, 8)}${pad(run.seconds.toFixed(1) + ' s', 10)}${pad(`${(r.sourceUsedBytes / 2 ** 20 / run.seconds).toFixed(0)} MiB/s`, 13)}${pad(MiB(run.allocatedBytes), 12)}${run.load1.toFixed(1)}${REPEAT > 1 ? `  (runs: ${run.allSeconds!.map(x => x.toFixed(1)).join(', ')} s)` : ''}`);
    if (run.steps) lines.push(`      ${run.steps.map(s => `${s.name} ${s.seconds.toFixed(1)} s`).join('; ')}`);
  }
  lines.push('  network / local throughput (local wall / network wall; goal >= 0.8):');
  for (const [tool, x] of Object.entries(r.ratios)) lines.push(`    ${pad(tool + ':', 20)}nbd ${x.nbd.toFixed(2)}   iscsi ${x.iscsi.toFixed(2)}`);
  return lines.join('\n');
}

const PARTS = ['data', 'debian', 'lvm', 'ntfs', 'network', 'inspect', 'jobs', 'deploy', 'console', 'fleet'] as const;
type Part = typeof PARTS[number];

/** `--only a,b` / `--only=a,b` or FERRY_BENCH_ONLY=a,b: which parts run (default all). */
function selectedParts(): Set<Part> {
  const argv = process.argv.slice(2);
  const i = argv.findIndex(a => a === '--only' || a.startsWith('--only='));
  const value = i < 0 ? process.env.FERRY_BENCH_ONLY : argv[i].startsWith('--only=') ? argv[i].slice(7) : argv[i + 1];
  if (!value) return new Set(PARTS);
  const parts = value.split(',').map(x => x.trim()).filter(Boolean);
  for (const p of parts) if (!(PARTS as readonly string[]).includes(p)) throw new Error(`--only ${p}: choose from ${PARTS.join(', ')}`);
  return new Set(parts as Part[]);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root (loop devices, mounts, drop_caches)');
  const parts = selectedParts();
  const inputs: [string, string][] = [];
  if (parts.has('data')) inputs.push(['data disk (ext4 + xfs, stale blocks)', await fixture('build-bench-disk.sh')]);
  const debian = ['debian', 'network', 'inspect', 'deploy'].some(p => parts.has(p as Part)) ? await fixture('build-debian-guest.sh') : '';
  if (parts.has('debian')) inputs.push(['Debian 12 guest', debian]);
  if (parts.has('lvm')) inputs.push(['Debian 12 guest, root and /srv on LVM (ext4 + xfs LVs)', await fixture('build-lvm-guest.sh')]);
  // build-ntfs-disk.sh prints ntfs.raw, ntfs-hiber.raw, manifest.json
  if (parts.has('ntfs')) inputs.push(['NTFS data disk (ACLs, streams, compressed, sparse, stale blocks)', await fixture('build-ntfs-disk.sh', 3)]);
  // build-legacy-guest.sh prints the image, then its manifest (last line)
  const legacy = parts.has('inspect') ? await fixture('build-legacy-guest.sh', 2) : '';
  const work = await mkdtemp(join(process.env.FERRY_BENCH_DIR ?? tmpdir(), 'ferry-bench-'));
  const results: InputResult[] = [];
  let network: NetworkResult | undefined;
  const inspected: InspectResult[] = [];
  let jobs: JobsResult | undefined;
  let deploy: DeployBench | undefined;
  let consoleBench: ConsoleBench | undefined;
  let fleet: FleetBench | undefined;
  try {
    for (const [name, image] of inputs) results.push(await measure(name, image, work));
    if (parts.has('network')) network = await measureNetwork('Debian 12 guest', debian, work);
    if (parts.has('inspect')) {
      const lg = await probeLibguestfs();
      if (!lg.available) console.error(`bench: inspect: virt-inspector will not be timed: ${lg.reason}`);
      inspected.push(await measureInspect('Debian 12 guest', debian, 'debian', lg));
      inspected.push(await measureInspect('Debian 12 legacy guest', legacy, 'debian', lg));
    }
    if (parts.has('jobs')) jobs = await measureJobs(work);
    if (parts.has('deploy')) deploy = await measureDeploy(CLI, debian, (await sourceUsed(debian)).used, work);
    if (parts.has('console')) consoleBench = await measureConsole(work);
    if (parts.has('fleet')) fleet = await measureFleet(CLI, work);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  for (const r of results) console.log(report(r));
  if (network) console.log(reportNetwork(network));
  for (const r of inspected) console.log(reportInspect(r));
  if (jobs) console.log(reportJobs(jobs));
  if (deploy) console.log(reportDeploy(deploy));
  if (consoleBench) console.log(reportConsole(consoleBench));
  if (fleet) console.log(reportFleet(fleet));
  // a partial run keeps the figures of the parts it did not run
  const file = join(REPO, 'bench', 'results.json');
  const old = parts.size < PARTS.length
    ? JSON.parse(await readFile(file, 'utf8').catch(() => '{}')) as { results?: InputResult[]; network?: NetworkResult; inspect?: InspectResult[]; jobs?: JobsResult; deploy?: DeployBench; console?: ConsoleBench; fleet?: FleetBench }
    : {};
  const merged = [...(old.results ?? []).filter(o => !results.some(r => r.name === o.name)), ...results];
  await writeFile(file, JSON.stringify({
    date: new Date().toISOString(), cpus: cpus().length, repeat: REPEAT, parts: [...parts],
    results: merged, network: network ?? old.network, inspect: inspected.length ? inspected : old.inspect, jobs: jobs ?? old.jobs, deploy: deploy ?? old.deploy, console: consoleBench ?? old.console, fleet: fleet ?? old.fleet,
  }, null, 2) + '\n');
  console.log(`\nwritten ${file}`);
  if ((jobs && !jobs.ok) || (fleet && !fleet.ok)) process.exitCode = 1;
  const wrong = inspected.filter(r => !r.ferrySane);
  if (wrong.length) {
    console.error(`bench: ferry inspect did not find the expected distro on: ${wrong.map(r => r.name).join(', ')}`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  console.error(`bench: ${(e as Error).message}`);
  process.exitCode = 1;
});
