// The suite's runner (npm test): every test file in a process of its own, two
// at a time (most of a file's time is single-threaded QEMU/TCG and waiting, so
// two files fill the two cores), the longest first so that the last to finish
// is a short one. `node --test FILES` sorts its files by name whatever order
// they are given in, so this keeps the pool itself: one `node --test FILE` per
// file, its output printed whole when it ends (never interleaved), its wall
// time measured here.
// Files that must not share the machine (ALONE) run afterwards, one at a time.
//
//   node dist/test/run.js [--concurrency N] [FILE...]   (default: every dist/test/**/*.test.js)
//
// Each file's isolation from the other running file: test/support/test-scope.ts.
import { readdirSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
// not guard.js: that enters a test scope, and every file's root would nest in the runner's
import { DAEMONS, DEFAULT_QDISC, LIBVIRT_DOMAIN_DIRS, SERVER_LINE, watchedMount } from './support/watched.js';

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * Seconds each file took in the last serial CI run (2 cores, 2026-12-03); those
 * under 20 s there were not itemised and are guessed. Only the order matters: a
 * file missing here counts as NEW_FILE_SECONDS.
 */
const SECONDS: Record<string, number> = {
  deploy: 619, uefi: 191, register: 191, boot: 179, export: 172, lvm: 165, 'network-guest': 157,
  'p2v-agent': 105, 'api-load': 100, 'refit-linux': 92, 'jobs-crash': 74, 'data-disks': 61, jobs: 59,
  catalog: 56, network: 54, errors: 49, 'network-cut': 43, console: 40, agent: 38, fuzz: 70, oracles: 22,
  fleet: 95, api: 35, machines: 19, 'refit-windows': 19, 'slow-link': 19, 'drivers-db': 18, 'inspect-linux': 18, ntfs: 18,
  'inspect-rpm-guest': 15, 'inspect-windows': 15, 'read-ahead': 15, 'api-server': 10, store: 7, guard: 16, 'register-generators': 3,
};
/** a file not in the table yet: most new files boot a guest, so it is not put last */
const NEW_FILE_SECONDS = 90;
/** files that must run with no other file beside them */
// guard: it asserts that a loop nobody holds counts as ours, which holds only with no other test file alive
const ALONE: string[] = ['guard'];
const UNIT_SECONDS = 1;

const nameOf = (file: string) => basename(file).replace(/\.test\.js$/, '');
const estimate = (file: string) => (basename(dirname(file)) === 'unit' ? UNIT_SECONDS : SECONDS[nameOf(file)] ?? NEW_FILE_SECONDS);

function allFiles(): string[] {
  const list = (dir: string) => readdirSync(dir).filter(n => n.endsWith('.test.js')).map(n => join(dir, n));
  return [...list(HERE), ...list(join(HERE, 'unit'))];
}

/** longest first; equal estimates keep name order */
export function order(files: string[]): string[] {
  return [...files].sort((a, b) => estimate(b) - estimate(a) || a.localeCompare(b));
}

interface Snapshot { loops: string[]; mounts: string[]; daemons: string[]; servers: string[]; links: string[]; netns: string[]; qdiscs: string[]; domains: string[] }

/** The whole machine's loops, Ferry/FUSE/namespace mounts (and /run/netns, which `ip netns add` makes one), helper daemons, `ferry serve`/worker processes, network links, namespaces, traffic shapers and libvirt domains; a read that fails throws. */
async function machineSnapshot(): Promise<Snapshot> {
  const lines = async (cmd: string, args: string[]) => String((await execa(cmd, args, { stdin: 'ignore' })).stdout).split('\n').filter(Boolean);
  const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n')
    .filter(l => watchedMount(l) || /ferrytest| nsfs /.test(l))
    .map(l => l.split(' ').slice(0, 3).join(' '));
  // pgrep exits 1 when there is none
  const daemons = String((await execa('pgrep', ['-a', '-r', 'R,S,D,T', '-x', DAEMONS.join('|')], { reject: false, stdin: 'ignore' })).stdout).split('\n').filter(Boolean);
  return {
    loops: await lines('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE']),
    mounts,
    daemons,
    links: (await lines('ip', ['-o', 'link', 'show'])).map(l => l.split(': ')[1].replace(/@.*/, '')),
    netns: (await lines('ip', ['netns', 'list'])).map(l => l.split(' ')[0]),
    qdiscs: (await lines('tc', ['qdisc', 'show'])).filter(l => !DEFAULT_QDISC.test(l)),
    servers: String((await execa('pgrep', ['-a', '-r', 'R,S,D,T', '-x', 'node'], { reject: false, stdin: 'ignore' })).stdout).split('\n').filter(l => SERVER_LINE.test(l)),
    domains: (await Promise.all(LIBVIRT_DOMAIN_DIRS.map(d => readdir(d).catch(() => [] as string[])))).flat().filter(f => f.endsWith('.xml')),
  };
}

/** Lines kept per failing file in the summary at the end (CI keeps only the log's tail). */
const SUMMARY_LINES = 40;

/** What node's spec reporter lists under "failing tests" (the whole output's end when it has none), cut to SUMMARY_LINES. */
export function failureSummary(output: string): string {
  const at = output.lastIndexOf('✖ failing tests:');
  const lines = (at >= 0 ? output.slice(at) : output).split('\n').filter(l => l.trim());
  const kept = at >= 0 ? lines.slice(0, SUMMARY_LINES) : lines.slice(-SUMMARY_LINES);
  return [...kept, ...(lines.length > SUMMARY_LINES ? [`… ${lines.length - SUMMARY_LINES} more lines in its output above`] : [])].join('\n');
}

/** Run the files, `concurrency` at a time in this order, each as `node --test FILE`; its output is printed whole when it ends. */
async function runFiles(files: string[], concurrency: number, times: Map<string, number>, failures: Map<string, string>): Promise<boolean> {
  let ok = true;
  const queue = [...files];
  const worker = async () => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      const t0 = performance.now();
      const r = await execa(process.execPath, ['--test', '--test-reporter=spec', file], { reject: false, all: true, stdin: 'ignore' });
      const seconds = (performance.now() - t0) / 1000;
      times.set(file, seconds);
      if (r.exitCode !== 0) { ok = false; failures.set(file, failureSummary(String(r.all))); }
      process.stdout.write(`\n# ${file.slice(HERE.length + 1)}: ${r.exitCode === 0 ? 'pass' : `FAIL (exit ${r.exitCode ?? r.signal})`} in ${seconds.toFixed(0)} s\n${String(r.all)}\n`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, files.length) }, worker));
  return ok;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let concurrency = 2;
  const i = args.indexOf('--concurrency');
  if (i >= 0) { concurrency = Number(args[i + 1]); args.splice(i, 2); }
  const files = order(args.length ? args.map(a => resolve(a)) : allFiles());
  const alone = files.filter(f => ALONE.includes(nameOf(f)));
  const together = files.filter(f => !alone.includes(f));
  const times = new Map<string, number>();
  const failures = new Map<string, string>();
  const before = await machineSnapshot();
  const t0 = performance.now();
  const ok1 = await runFiles(together, concurrency, times, failures);
  const ok2 = await runFiles(alone, 1, times, failures);
  const wall = (performance.now() - t0) / 1000;
  // with two files at once, a loop on a shared fixture that nothing holds, or a network link,
  // cannot always be put down to one file (guard.ts); once every file has ended, nothing may be left at all
  const after = await machineSnapshot();
  const left = (Object.keys(after) as (keyof Snapshot)[]).flatMap(k => after[k].filter(i => !before[k].includes(i)).map(i => `${k}: ${i}`));
  const ok3 = left.length === 0;
  if (!ok3) process.stdout.write(`# left on the machine after the suite (not there before it):\n${left.map(l => `#   ${l}`).join('\n')}\n`);
  const rows = [...times].sort((a, b) => b[1] - a[1]).map(([f, s]) => `#   ${s.toFixed(0).padStart(5)} s  ${f.slice(HERE.length + 1)}`);
  // repeated here, at the end, where a log cut to its tail still shows why
  for (const [f, text] of failures) process.stdout.write(`# FAILED ${f.slice(HERE.length + 1)}:\n${text}\n`);
  process.stdout.write(`# per-file wall time (concurrency ${concurrency}):\n${rows.join('\n')}\n# suite wall time ${wall.toFixed(0)} s, ${ok1 && ok2 && ok3 ? 'all files passed' : 'SOME FILES FAILED'}\n`);
  process.exitCode = ok1 && ok2 && ok3 ? 0 : 1;
}

// only when run as the script (importing it for order() runs nothing)
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await main();
