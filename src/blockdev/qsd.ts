// qemu-storage-daemon with a FUSE export: any image format (or, later, a
// network disk) becomes a plain file that losetup and sfdisk can use.
import { readFileSync } from 'node:fs';
import { writeFile, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import type { Scope } from '../util/scope.js';
import { ToolError, corruptImage, type FerryError } from '../errors.js';

export type BlockdevOptions = Record<string, unknown>;

/** qemu's driver names for the image formats Ferry speaks. */
export const QEMU_DRIVER: Record<string, string> = {
  raw: 'raw', qcow2: 'qcow2', vmdk: 'vmdk', vhd: 'vpc', vpc: 'vpc', vhdx: 'vhdx', vdi: 'vdi',
};

/** Blockdev chain for an image file: protocol node "proto" under format node "disk". */
export function fileBlockdevs(path: string, format: string, writable: boolean): BlockdevOptions[] {
  const driver = QEMU_DRIVER[format] ?? format;
  return [
    { driver: 'file', 'node-name': 'proto', filename: path, 'read-only': !writable },
    { driver, 'node-name': 'disk', file: 'proto', 'read-only': !writable },
  ];
}

async function processAlive(pid: number): Promise<boolean> {
  try { process.kill(pid, 0); } catch { return false; }
  // The daemonized qsd is init's child: once it has exited it stays a zombie
  // until init reaps it, which some inits do only every second or two. A
  // zombie (one thread left, state Z) has closed its images and its export.
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return !(/^State:\s+Z/m.test(status) && /^Threads:\s+1$/m.test(status));
}

export async function stopDaemon(pid: number, mountpoint: string): Promise<void> {
  if (await processAlive(pid)) {
    process.kill(pid, 'SIGTERM'); // qsd flushes and closes its images on SIGTERM
    for (let i = 0; i < 300 && await processAlive(pid); i++) await new Promise(r => setTimeout(r, 20));
    if (await processAlive(pid)) process.kill(pid, 'SIGKILL');
  }
  // A killed daemon can leave its FUSE mount behind; lazily detach it.
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  if (mounts.split('\n').some(l => l.split(' ')[1] === mountpoint)) {
    await run('fusermount3', ['-u', '-z', mountpoint], { ignoreAbort: true, okCodes: [1] });
  }
}

/**
 * Start a daemon exporting node "disk" of the given blockdevs as a file in dir.
 * Returns the exported file's path; the scope stops the daemon.
 */
export async function exportAsFile(scope: Scope, dir: string, name: string, blockdevs: BlockdevOptions[],
  opts: {
    writable: boolean; describe: string;
    /** --object values (secrets, TLS credentials); they name files, never hold a secret themselves */
    objects?: string[];
    /** extra environment for the daemon (never a secret: it would show in /proc/PID/environ to root) */
    env?: Record<string, string>;
    /** turn the daemon's complaint into a typed error (network sources) */
    diagnose?: (stderr: string) => Promise<FerryError>;
  }): Promise<string> {
  const mountpoint = join(dir, `${name}.img`);
  const pidfile = join(dir, `${name}.pid`);
  await writeFile(mountpoint, '');
  const args: string[] = [];
  for (const o of opts.objects ?? []) args.push('--object', o);
  for (const b of blockdevs) args.push('--blockdev', JSON.stringify(b));
  args.push('--export', JSON.stringify({
    type: 'fuse', id: `exp-${name}`, 'node-name': 'disk', mountpoint, writable: opts.writable,
  }));
  args.push('--pidfile', pidfile, '--daemonize');
  try {
    await run('qemu-storage-daemon', args, { env: opts.env });
  } catch (e) {
    // a stop signal can end the wait after the daemon forked (its pidfile written) but before it
    // is held: stop it here, or it would outlive the run with its FUSE export mounted
    const started = exportPid(mountpoint);
    if (started) await stopDaemon(started, mountpoint);
    await rm(mountpoint, { force: true });
    if (e instanceof ToolError && opts.diagnose) throw await opts.diagnose(e.stderr);
    if (e instanceof ToolError) throw corruptImage(opts.describe, e.stderr.trim().split('\n').pop() ?? 'qemu-storage-daemon refused it');
    throw e;
  }
  const pid = Number((await readFile(pidfile, 'utf8')).trim());
  scope.hold(`qemu-storage-daemon ${name} (pid ${pid})`, { kind: 'daemon', id: mountpoint, pid }, () => stopDaemon(pid, mountpoint));
  return mountpoint;
}

/**
 * Cut an export off at once: the daemon is killed, so reads waiting on it
 * (a network source whose server is gone) fail with an I/O error instead of
 * waiting on. The scope that started it still unmounts what is left.
 */
export async function cutExport(mountpoint: string): Promise<void> {
  const pid = exportPid(mountpoint);
  if (pid) try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
}

// Synchronous on purpose: these serve the connection watchdog, which must run
// while reads of a hung network source hold every libuv thread-pool thread
// (verify reading files in parallel); an fs.promises read would queue behind
// them and the watchdog would never cut the source off. Both files are tiny
// and on /proc or the local work dir, never on the hung export.
const readSmall = (path: string) => { try { return readFileSync(path, 'utf8'); } catch { return ''; } };

/** The daemon behind an export (from its pidfile), if it still has one. */
function exportPid(mountpoint: string): number | undefined {
  const pid = Number(readSmall(mountpoint.replace(/\.img$/, '.pid')).trim());
  return pid > 0 ? pid : undefined;
}

/** Bytes the export's daemon has read so far (sockets included): it grows while a network source delivers. */
export async function exportReadBytes(mountpoint: string): Promise<number | undefined> {
  const pid = exportPid(mountpoint);
  const m = pid ? /^rchar:\s*(\d+)/m.exec(readSmall(`/proc/${pid}/io`)) : null;
  return m ? Number(m[1]) : undefined;
}
