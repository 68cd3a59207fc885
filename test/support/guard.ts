// The harness guard: what a test leaves on the machine (loop devices, mounts,
// helper daemons, Ferry work dirs) fails that test file.
//
// Two test files run at once, so the guard counts only what is this file's
// (test/support/test-scope.ts gives each file a marker and a root dir):
//   - a daemon is ours when its environment carries our FERRY_TEST_MARK, or,
//     carrying none (libvirt starts its qemu with a clean environment), when its
//     command line names a path under our root;
//   - a mount is ours when its mount point is under our root; one elsewhere in
//     /tmp or /var/tmp (another file's root, a run without the harness) is not;
//     any other (a fuse or ferry- mount somewhere else) is, strictly;
//   - a network namespace is ours unless another file's root registered it
//     (netns.ts) or its name ends in -<pid> of another live process;
//   - a loop is ours when its back-file is under our root; not when it is
//     elsewhere in /tmp or /var/tmp; one on a shared file (a cached fixture in
//     /var/cache/ferry/fixtures, opened read-only by both files) is ours when a
//     process of ours holds it open; another's when only other processes do,
//     it is mounted outside our root, or a live run journal not in our root
//     or a job store in another root (a `ferry serve` job's loops) names it; else ours, if it is still there a moment later (harness.ts:
//     another run may be between its losetup and its first use);
//   - work dirs are read from our own FERRY_TMP;
//   - a network link (veth, dummy, bridge, tap in this namespace), and a tc
//     qdisc by the link it sits on, is ours when our root registered it
//     (netns.ts writes the host end's name into the namespace's registration)
//     or its name ends in -<our pid>; another's when another root registered it
//     or its name ends in -<pid> of another live process; else ours unless
//     another test file is alive (then the runner's end-of-suite check judges);
//   - a libvirt domain (virsh list --all when libvirtd runs, and the domain
//     files under /etc/libvirt/qemu and /run/libvirt/qemu, which stay when it
//     does not) is ours by a path of our root in its XML, another's by a path
//     elsewhere in /tmp, /var/tmp or the roots' dir, else as a link;
//   - `ferry serve`, `ferry worker` and `ferry pxe serve` processes are ours by
//     their marker, as daemons are.
// Links, namespaces, qdiscs and domains there when the file started are never
// its leak (the all* lists), as with loops.
import Database from 'better-sqlite3';
import { execa } from 'execa';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, readdir, readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MARK_VAR, testScope, type TestScope } from './test-scope.js';
import { DAEMONS, DEFAULT_QDISC, LIBVIRT_DOMAIN_DIRS, SERVER_LINE, under, unescape, watchedMount } from './watched.js';

export { DAEMONS, SERVER_LINE, watchedMount };

export interface MachineState {
  loops: string[]; mounts: string[]; daemons: string[]; workDirs: string[];
  /** every loop on the machine, whoever's: one there before a file started is never that file's leak (whose a
   * loop on a shared fixture is can read differently at start and end: another file may have ended meanwhile) */
  allLoops: string[];
  /** network links ("NAME (KIND)") and tc qdiscs in this namespace, network namespaces, libvirt domains ("NAME"), ours */
  links: string[]; qdiscs: string[]; netns: string[]; domains: string[];
  /** `ferry serve`/`worker`/`pxe serve` processes of ours (pid and command line) */
  servers: string[];
  /** the same, whoever's: there at a file's start, never its leak */
  allLinks: string[]; allQdiscs: string[]; allNetns: string[]; allDomains: string[];
}


const TEMP = ['/tmp', '/var/tmp'];

/** FERRY_TEST_MARK of a process: undefined when it has none, null when it is gone */
export async function markOf(pid: number): Promise<string | undefined | null> {
  const env = await readFile(`/proc/${pid}/environ`, 'latin1').catch(() => null);
  if (env === null) return null;
  return env.split('\0').find(v => v.startsWith(`${MARK_VAR}=`))?.slice(MARK_VAR.length + 1);
}

/** Whether a path belongs to this file: its root is ours; elsewhere in /tmp, /var/tmp or the roots' dir is another's; undefined: cannot tell */
function pathOwner(path: string, s: TestScope): boolean | undefined {
  if (under(path, s.root)) return true;
  if ([...TEMP, s.scopes].some(d => under(path, d))) return false;
  return undefined;
}

/** A daemon is ours by its marker, or, without one, by a path of ours on its command line. */
export function daemonIsOurs(mark: string | undefined, cmdline: string, s: TestScope = testScope): boolean {
  if (mark !== undefined) return mark === s.mark;
  return cmdline.includes(`${s.root}/`);
}

/** pid and command line of the processes named `name` (not zombies: a stopped --daemonize qsd is one until init reaps it) that are ours (and whose line matches `only`, when given) */
export async function ourProcesses(names: string[], s: TestScope = testScope, only?: RegExp): Promise<string[]> {
  const out: string[] = [];
  for (const name of names) {
    const r = await execa('pgrep', ['-a', '-x', '-r', 'R,S,D,T', name], { reject: false });
    for (const line of String(r.stdout).split('\n').filter(Boolean)) {
      if (only && !only.test(line)) continue;
      const pid = Number(line.split(' ')[0]);
      const mark = await markOf(pid);
      if (mark !== null && daemonIsOurs(mark, line, s)) out.push(line);
    }
  }
  return out;
}

/** pids holding each loop device open, with their markers (only looked up when a loop on a shared file needs it) */
async function loopHolders(): Promise<Map<string, (string | undefined)[]>> {
  const held = new Map<string, (string | undefined)[]>();
  for (const p of await readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const fds = await readdir(`/proc/${p}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await readlink(`/proc/${p}/fd/${fd}`).catch(() => '');
      if (!target.startsWith('/dev/loop')) continue;
      const mark = await markOf(Number(p));
      if (mark === null) continue;
      held.set(target, [...(held.get(target) ?? []), mark]);
    }
  }
  return held;
}

/** Loops still held (hold without its release) in run journals outside our root: other files' (<root>/run) and /run/ferry/runs (runs without the harness), plus other files' job stores. */
async function othersLoops(s: TestScope): Promise<Set<string>> {
  const dirs = [...(await readdir(s.scopes).catch(() => [] as string[])).map(r => join(s.scopes, r, 'run')), '/run/ferry/runs'];
  const held = new Set<string>();
  for (const dir of dirs) {
    if (under(dir, s.root)) continue;
    for (const f of await readdir(dir).catch(() => [] as string[])) {
      const count = new Map<string, number>();
      for (const line of (await readFile(join(dir, f), 'utf8').catch(() => '')).split('\n')) {
        let e: { op?: string; r?: { kind?: string; id?: string } };
        try { e = JSON.parse(line) as typeof e; } catch { continue; } // a line cut by a kill
        if (e.r?.kind !== 'loop' || !e.r.id) continue;
        count.set(e.r.id, (count.get(e.r.id) ?? 0) + (e.op === 'hold' ? 1 : e.op === 'release' ? -1 : 0));
      }
      for (const [dev, n] of count) if (n > 0) held.add(dev);
    }
  }
  for (const dev of await otherJobLoops(s)) held.add(dev);
  return held;
}

/** Loops that jobs of `ferry serve` in other files' roots hold right now: a job journals into its store (job_resources), not into the run dir. */
async function otherJobLoops(s: TestScope): Promise<string[]> {
  const dbs: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (e.isFile() && e.name === 'ferry.db') dbs.push(join(dir, e.name));
      else if (e.isDirectory() && depth > 0) await walk(join(dir, e.name), depth - 1);
    }
  };
  for (const r of await readdir(s.scopes).catch(() => [] as string[])) {
    if (!under(join(s.scopes, r), s.root)) await walk(join(s.scopes, r), 3); // <root>/home, <root>/ferrytest-*/home
  }
  const loops: string[] = [];
  for (const file of dbs) {
    try {
      const db = new Database(file, { readonly: true, fileMustExist: true, timeout: 2000 });
      try {
        loops.push(...(db.prepare(`SELECT res_id FROM job_resources WHERE kind = 'loop'`).all() as { res_id: string }[]).map(x => x.res_id));
      } finally { db.close(); }
    } catch { /* a store being made or gone meanwhile, or without jobs: nothing held there */ }
  }
  return loops;
}

export interface LoopFacts {
  /** processes holding it open: their markers (undefined: none) */
  holders: (string | undefined)[];
  /** where it (or a partition of it) is mounted */
  mountedAt: string[];
  /** a live run journal in another file's root names it */
  inOtherJournal: boolean;
  /** another test file's process is alive (suite run two at a time) */
  otherFileAlive?: boolean;
}

/** another test file's scope (t<pid>) whose process still runs */
function otherScopeAlive(s: TestScope): boolean {
  let names: string[] = [];
  try { names = readdirSync(s.scopes); } catch { return false; }
  return names.some(n => { const pid = Number(/^t(\d+)$/.exec(n)?.[1]); return !!pid && pid !== process.pid && existsSync(`/proc/${pid}`); });
}

/** A loop is ours by its back-file; on a shared file (a fixture), unless it shows another file's hand. */
export function loopIsOurs(backFile: string, facts: () => LoopFacts, s: TestScope = testScope): boolean {
  const byPath = pathOwner(backFile.replace(/ \(deleted\)$/, ''), s);
  if (byPath !== undefined) return byPath;
  const f = facts();
  // every process of this file carries its marker: a holder without it (another file, a run without the harness) is someone else's
  if (f.holders.includes(s.mark)) return true;
  if (f.holders.length) return false;
  if (f.mountedAt.some(m => pathOwner(m, s) === false)) return false;
  if (f.inOtherJournal) return false;
  // nothing shows whose it is: with another test file running (a test's own losetup of a
  // fixture) it cannot be told apart, and the runner's end-of-suite check (test/run.ts) judges it
  return !f.otherFileAlive;
}

/** Every test process's root: ours and our siblings, and roots nested one level in them (a runner that entered a scope of its own, as test/run.ts once did, puts its files' roots in its root). */
async function testRoots(s: TestScope): Promise<string[]> {
  const roots = (await readdir(s.scopes).catch(() => [] as string[])).map(r => join(s.scopes, r));
  const nested = await Promise.all(roots.map(async r => (await readdir(join(r, 'ferrytests')).catch(() => [] as string[])).map(n => join(r, 'ferrytests', n))));
  return [...roots, ...nested.flat()];
}

/** A network namespace (/run/netns/NAME) is ours unless another file registered it or its name ends in another live process's pid. */
export async function netnsIsOurs(name: string, s: TestScope = testScope): Promise<boolean> {
  for (const r of await testRoots(s)) {
    const registered = await readFile(join(r, 'netns', name), 'utf8').then(() => true, () => false);
    if (registered) return under(r, s.root);
  }
  const pid = Number(/-(\d+)$/.exec(name)?.[1]);
  if (pid && pid !== process.pid && await readFile(`/proc/${pid}/stat`).then(() => true, () => false)) return false;
  return true;
}

/** Link names that test roots registered (netns.ts: the host end of a pair), each with whether the root is ours. */
async function registeredLinks(s: TestScope): Promise<Map<string, boolean>> {
  const links = new Map<string, boolean>();
  for (const r of await testRoots(s)) {
    const dir = join(r, 'netns');
    for (const ns of await readdir(dir).catch(() => [] as string[])) {
      for (const name of (await readFile(join(dir, ns), 'utf8').catch(() => '')).split('\n').filter(Boolean)) links.set(name, under(r, s.root));
    }
  }
  return links;
}

/** A name ending in -<pid>: ours when the pid is ours, another's when that process lives; undefined: no such ending, or a dead pid */
function ownerByPid(name: string): boolean | undefined {
  const pid = Number(/-(\d+)$/.exec(name)?.[1]);
  if (!pid) return undefined;
  if (pid === process.pid) return true;
  return existsSync(`/proc/${pid}`) ? false : undefined;
}

/** A link is ours by a registration or a -<pid> name; with neither, ours unless another test file runs. */
export function linkIsOurs(name: string, registered: Map<string, boolean>, s: TestScope = testScope): boolean {
  return registered.get(name) ?? ownerByPid(name) ?? !otherScopeAlive(s);
}

/** A domain is ours by a path under our root in its XML; another's by one under another temp dir; else by its name, as a link. */
export function domainIsOurs(name: string, xml: string, s: TestScope = testScope): boolean {
  const paths = [...xml.matchAll(/(?:file|dev|dir|path)=['"]([^'"]+)['"]|<(?:path|source)>([^<]+)</g)].map(m => m[1] ?? m[2]);
  const owners = paths.map(p => pathOwner(p, s));
  if (owners.includes(true)) return true;
  if (owners.includes(false)) return false;
  return ownerByPid(name) ?? !otherScopeAlive(s);
}

/** Every libvirt domain on qemu:///system with its XML: virsh's list when libvirtd runs, and the files it keeps them in (there when it does not run). */
async function libvirtDomains(): Promise<Map<string, string>> {
  const domains = new Map<string, string>();
  for (const dir of ['/etc/libvirt/qemu', '/run/libvirt/qemu']) {
    for (const f of await readdir(dir).catch(() => [] as string[])) {
      if (f.endsWith('.xml')) domains.set(f.slice(0, -4), await readFile(join(dir, f), 'utf8').catch(() => ''));
    }
  }
  if ((await execa('pgrep', ['-x', 'libvirtd'], { reject: false })).exitCode === 0) {
    const r = await execa('virsh', ['-c', 'qemu:///system', 'list', '--all', '--name'], { reject: false, stdin: 'ignore', timeout: 10_000 });
    for (const name of String(r.stdout).split('\n').map(n => n.trim()).filter(Boolean)) {
      if (domains.has(name)) continue;
      domains.set(name, String((await execa('virsh', ['-c', 'qemu:///system', 'dumpxml', name], { reject: false, stdin: 'ignore', timeout: 10_000 })).stdout));
    }
  }
  return domains;
}


/** This namespace's links ("NAME (KIND)"), its non-default qdiscs and the network namespaces, each with whose they are. */
async function network(s: TestScope) {
  const registered = await registeredLinks(s);
  const linkList = JSON.parse(String((await execa('ip', ['-j', '-d', 'link', 'show'], { stdin: 'ignore' })).stdout) || '[]') as { ifname: string; linkinfo?: { info_kind?: string } }[];
  const allLinks = linkList.map(l => `${l.ifname} (${l.linkinfo?.info_kind ?? 'device'})`);
  const links = linkList.filter(l => linkIsOurs(l.ifname, registered, s)).map(l => `${l.ifname} (${l.linkinfo?.info_kind ?? 'device'})`);
  const allQdiscs = String((await execa('tc', ['qdisc', 'show'], { stdin: 'ignore' })).stdout).split('\n').map(l => l.trim()).filter(l => l && !DEFAULT_QDISC.test(l));
  const qdiscs = allQdiscs.filter(l => linkIsOurs(/ dev (\S+)/.exec(l)?.[1] ?? '', registered, s));
  const allNetns = String((await execa('ip', ['netns', 'list'], { stdin: 'ignore' })).stdout).split('\n').map(l => l.split(' ')[0]).filter(Boolean);
  const netns: string[] = [];
  for (const n of allNetns) if (await netnsIsOurs(n, s)) netns.push(n);
  return { links, allLinks, qdiscs, allQdiscs, netns, allNetns };
}

export async function machineState(s: TestScope = testScope): Promise<MachineState> {
  const mountLines = (await readFile('/proc/self/mounts', 'utf8')).split('\n').filter(Boolean);
  const mounts: string[] = [];
  for (const l of mountLines) {
    const at = unescape(l.split(' ')[1] ?? '');
    if (!watchedMount(l)) continue;
    // `ip netns add` bind-mounts /run/netns on itself once for the whole machine, and it stays (netns.ts);
    // a namespace's own mount in it is counted as the namespace (netns)
    if (under(at, '/run/netns')) continue;
    if (pathOwner(at, s) !== false) mounts.push(l);
  }

  const loopLines = String((await execa('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE'], { reject: false })).stdout).split('\n').filter(Boolean);
  const loops: string[] = [];
  const allLoops = loopLines.map(l => l.trim().split(/\s+/).join(' '));
  let holders: Map<string, (string | undefined)[]> | undefined;
  let others: Set<string> | undefined;
  const backOf = new Map(loopLines.map(l => { const [dev, ...rest] = l.trim().split(/\s+/); return [dev, rest.join(' ')]; }));
  for (const l of loopLines) {
    const [dev] = l.trim().split(/\s+/);
    // a loop on a loop (a partition of an exported disk): whose its back-file's loop is
    let back = backOf.get(dev)!;
    for (let i = 0; i < 4 && backOf.has(back); i++) back = backOf.get(back)!;
    if (pathOwner(back.replace(/ \(deleted\)$/, ''), s) === undefined) {
      holders ??= await loopHolders();
      others ??= await othersLoops(s);
    }
    const facts = (): LoopFacts => ({
      holders: holders?.get(dev) ?? [],
      mountedAt: mountLines.filter(m => { const src = m.split(' ')[0]; return src === dev || src.startsWith(`${dev}p`); }).map(m => unescape(m.split(' ')[1])),
      inOtherJournal: !!others?.has(dev),
      otherFileAlive: otherScopeAlive(s),
    });
    if (loopIsOurs(back, facts, s)) loops.push(l);
  }

  const daemons = await ourProcesses(DAEMONS, s);
  const servers = await ourProcesses(['node'], s, SERVER_LINE);
  const workDirs = (await readdir(process.env.FERRY_TMP ?? tmpdir()).catch(() => [] as string[])).filter(n => n.startsWith('ferry-'));
  const net = await network(s);
  const allDomains: string[] = [], domains: string[] = [];
  for (const [name, xml] of await libvirtDomains()) {
    allDomains.push(name);
    if (domainIsOurs(name, xml, s)) domains.push(name);
  }
  return { loops, mounts, daemons, workDirs, allLoops, servers, domains, allDomains, ...net };
}

/** kinds judged against everything on the machine at the start (whoever's), not only against what was ours then */
const MACHINE_WIDE = { loops: 'allLoops', links: 'allLinks', qdiscs: 'allQdiscs', netns: 'allNetns', domains: 'allDomains' } as const;

/** Differences between two states: what appeared since `before`. */
export function leftBehind(before: MachineState, after: MachineState): string[] {
  const out: string[] = [];
  for (const k of ['loops', 'mounts', 'daemons', 'servers', 'workDirs', 'netns', 'links', 'qdiscs', 'domains'] as const) {
    for (const item of after[k]) {
      const all = k in MACHINE_WIDE ? before[MACHINE_WIDE[k as keyof typeof MACHINE_WIDE]] : undefined;
      const old = k === 'loops' ? before.allLoops.includes(item.trim().split(/\s+/).join(' ')) : (all ?? before[k]).includes(item);
      if (!old) out.push(`${k}: ${item}`);
    }
  }
  return out;
}
