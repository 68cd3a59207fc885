// Reclaiming what a dead runner held. A job records every loop device, mount,
// qemu-storage-daemon and work dir it acquires (util/scope.ts hold()); when its
// runner process is gone (kill -9, a power cut of the service), a starting
// runner undoes them, newest first, checking each is still the very thing
// recorded (a loop number or pid may have been reused since).
import { readdir, readFile, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { unmount } from '../blockdev/mount.js';
import { stopDaemon } from '../blockdev/qsd.js';
import { run } from '../util/exec.js';
import type { HeldResource, JobStore } from './types.js';

/** This process as a runner: host:pid:start time (the start time tells a reused pid apart). */
export async function runnerId(pid = process.pid): Promise<string> {
  return `${hostname()}:${pid}:${await startTime(pid) ?? 0}`;
}

async function startTime(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // the command name in parentheses may hold spaces; fields after it are plain
  return stat?.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}

/** Whether the runner that wrote `id` still runs (a runner on another host is assumed to). */
export async function runnerAlive(id: string | undefined): Promise<boolean> {
  if (!id) return false;
  const [host, pid, started] = id.split(':');
  if (host !== hostname()) return true;
  return (await startTime(Number(pid))) === started;
}

/** /proc/self/mounts escapes spaces and the like as \ooo. */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

interface MountEntry { source: string; at: string; type: string }

async function mountEntries(): Promise<MountEntry[]> {
  return (await readFile('/proc/self/mounts', 'utf8')).split('\n').filter(Boolean)
    .map(l => l.split(' ')).map(([source, at, type]) => ({ source: unescape(source), at: unescape(at), type }));
}

async function mountPoints(): Promise<string[]> {
  return (await mountEntries()).map(m => m.at);
}

const pause = (ms: number) => new Promise(r => setTimeout(r, ms));

/** Processes with a file open (or their cwd) on the file system mounted at dir. */
async function usersOf(dir: string): Promise<number[]> {
  const r = await run('fuser', ['-M', '-m', dir], { ignoreAbort: true, okCodes: [1] });
  return [...r.stdout.matchAll(/\d+/g)].map(m => Number(m[0])).filter(pid => pid !== process.pid);
}

async function reclaimMount(dir: string, log: (line: string) => void): Promise<boolean> {
  if (!(await mountPoints()).includes(dir)) return false;
  // the dead runner's children (a cp in the middle of a copy) outlive it and keep the mount busy;
  // one writing through a loop device can take seconds to die (it finishes its I/O first)
  for (let i = 0; ; i++) {
    const users = await usersOf(dir);
    if (!users.length) break;
    if (i === 0) {
      const names = await Promise.all(users.map(async pid => `${(await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim()} (pid ${pid})`));
      log(`killing what the dead run left using ${dir}: ${names.join(', ')}`);
      for (const pid of users) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    if (i >= 300) throw new Error(`processes ${users.join(', ')} still use ${dir} 60 s after SIGKILL`);
    await pause(200);
  }
  await unmount(dir, { times: 50, everyMs: 200 });
  return true;
}

async function reclaimLoop(dev: string, backing?: string): Promise<boolean> {
  const r = await run('losetup', ['-n', '-O', 'BACK-FILE', dev], { ignoreAbort: true, okCodes: [1] });
  const back = r.stdout.trim().replace(/ \(deleted\)$/, '');
  if (!back || (backing && back !== backing)) return false;
  for (let i = 0; ; i++) {
    try {
      await run('losetup', ['-d', dev], { ignoreAbort: true });
      return true;
    } catch (e) {
      if (i >= 30) throw e;
      await pause(100);
    }
  }
}

async function reclaimDaemon(mountpoint: string, pid?: number): Promise<boolean> {
  const comm = pid ? (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim() : '';
  const cmdline = pid ? await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '') : '';
  const ours = comm === 'qemu-storage-da' && cmdline.includes(mountpoint);
  const mounted = (await mountPoints()).includes(mountpoint);
  if (!ours && !mounted) return false;
  // SIGTERM first: the daemon flushes a qcow2 target's metadata, so its finished partitions stay good
  if (ours) await stopDaemon(pid!, mountpoint);
  else await run('fusermount3', ['-u', '-z', mountpoint], { ignoreAbort: true, okCodes: [1] });
  return true;
}

/** a helper process (dnsmasq) that outlived its owner: killed only if it is still that very process */
async function reclaimProcess(pid: number | undefined, comm: string | undefined, marker: string): Promise<boolean> {
  if (!pid) return false;
  const name = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
  const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
  if (name !== comm || !cmdline.some(w => w.includes(marker))) return false;
  try { process.kill(pid, 'SIGTERM'); } catch { return false; }
  for (let i = 0; i < 100 && (await readFile(`/proc/${pid}/comm`, 'utf8').then(() => true, () => false)); i++) await pause(50);
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  return true;
}

/**
 * A dead run's work dir (or partial file). What is still mounted, attached or
 * running inside it is that run's too, recorded or not: a SIGKILL can land
 * between a mount and its record. Undone from the top down: file systems
 * mounted inside (and the loop devices under them), loop devices on files
 * inside, the daemons whose pidfiles are there (their FUSE exports with them).
 */
async function reclaimFile(path: string, log: (line: string) => void): Promise<boolean> {
  const within = (p: string) => p === path || p.startsWith(`${path}/`);
  const mounted = (await mountEntries()).filter(m => within(m.at) && !m.type.startsWith('fuse')).sort((a, b) => b.at.length - a.at.length);
  for (const m of mounted) {
    await reclaimMount(m.at, log);
    if (/^\/dev\/loop\d+$/.test(m.source)) await reclaimLoop(m.source);
  }
  const loops = (await run('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE'], { ignoreAbort: true })).stdout.split('\n')
    .map(l => { const [dev, ...back] = l.trim().split(' '); return { dev, back: back.join(' ').trim().replace(/ \(deleted\)$/, '') }; })
    .filter(l => l.back && within(l.back));
  for (const l of loops) await reclaimLoop(l.dev, l.back);
  for (const name of (await readdir(path).catch(() => [] as string[])).filter(n => n.endsWith('.pid'))) {
    const pid = Number((await readFile(join(path, name), 'utf8').catch(() => '')).trim());
    if (pid > 0) await reclaimDaemon(join(path, name.replace(/\.pid$/, '.img')), pid);
  }
  // never walk into something still mounted (a mount that would not go): rm would delete its files
  const inside = (await mountPoints()).filter(within);
  if (inside.length) throw new Error(`${inside.join(', ')} is still mounted inside ${path}`);
  await rm(path, { recursive: true, force: true });
  return true;
}

export async function reclaimOne(r: HeldResource, log: (line: string) => void = () => undefined): Promise<boolean> {
  switch (r.kind) {
    case 'mount': return reclaimMount(r.id, log);
    case 'loop': return reclaimLoop(r.id, r.detail);
    case 'daemon': return reclaimDaemon(r.id, r.pid);
    case 'file': return reclaimFile(r.id, log);
    case 'process': return reclaimProcess(r.pid, r.detail, r.id);
  }
}

/**
 * Undo everything the job's dead run held, newest first; each record is
 * dropped once undone (or found gone). Returns what could not be undone.
 */
export async function reclaimJob(store: JobStore, jobId: string, log: (line: string) => void): Promise<string[]> {
  const problems: string[] = [];
  for (const r of store.resources(jobId).reverse()) {
    const what = `${r.kind} ${r.id}${r.pid ? ` (pid ${r.pid})` : ''}`;
    try {
      const did = await reclaimOne(r, log);
      store.releaseResource(jobId, r);
      log(did ? `reclaimed ${what}` : `${what} was already gone`);
    } catch (e) {
      problems.push(`${what}: ${(e as Error).message}`);
      log(`could not reclaim ${what}: ${(e as Error).message}`);
    }
  }
  return problems;
}
