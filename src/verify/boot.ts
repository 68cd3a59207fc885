// Boot a disk image in QEMU (TCG, no KVM) and watch its serial line for the
// Ferry boot marker that test guests print once they reach userspace:
//
//   FERRY-BOOT-OK root=<uuid of the fs mounted at /> host=<hostname>
//
// The image is never modified: the drive is opened with snapshot=on, so the
// guest's writes go to a temporary overlay that QEMU discards. QEMU is always
// gone when bootImage() settles: on marker (after a short grace for the
// guest's own power-off), on timeout, on abort and on error. If the caller's
// process exits while a boot runs, execa's `cleanup` kills QEMU too.
//
// Why TCG: /dev/kvm exists on the build hosts but ordinary guests hang or
// abort under it (see shared/ARCHITECTURE.md). A small Debian guest reaches
// the marker in about half a minute with TCG.

import { copyFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { spawnLive } from '../util/exec.js';

export type BootFormat = 'qcow2' | 'raw' | 'vmdk' | 'vhdx' | 'vdi' | 'vhd';
export type DiskBus = 'ide' | 'virtio';

export interface BootResult {
  /** The marker line appeared on the serial line. */
  sawMarker: boolean;
  /** `root=` from the marker: UUID of the file system the guest runs from. */
  rootUuid?: string;
  /** `host=` from the marker: the guest's hostname. */
  hostname?: string;
  /** further `key=value` words after host= (e.g. net=eth0:10.0.2.15/24 from the legacy guest) */
  fields?: Record<string, string>;
  /** Everything the guest wrote to its first serial port (the tail, if huge). */
  serialLog: string;
  /** Wall time from QEMU start to the marker, or to the end when there was none. */
  seconds: number;
  /** What ended the boot: the marker, the guest stopping QEMU (power-off or
   *  reboot, -no-reboot) without a marker, or the timeout. */
  endedBy: 'marker' | 'poweroff' | 'timeout' | 'failure';
  /** QEMU's own diagnostics (stderr). */
  qemuStderr: string;
}

export interface BootOptions {
  /** Path of the disk image. */
  image: string;
  /** Image format: qcow2 | raw | vmdk | vhdx | vdi (vhd = QEMU's `vpc`). */
  format: BootFormat | string;
  /** Give up (and kill QEMU) after this long. Default 240000 ms. */
  timeoutMs?: number;
  /** Give up once QEMU has used this much CPU time. Under TCG the guest advances
   *  only while QEMU runs, so this budget does not shrink when the host is busy
   *  (other VMs, a second test file): a wall-clock timeoutMs does. timeoutMs
   *  stays the backstop for a guest that idles without the marker. */
  cpuTimeoutMs?: number;
  /** Guest RAM. Default 1024 MiB. */
  memoryMiB?: number;
  /** How the disk is attached. Default 'ide' (works for unconverted guests). */
  diskBus?: DiskBus;
  /** A NIC on QEMU's user-mode network (no host network is touched); default: no NIC. */
  nic?: { model: string; mac?: string };
  /** End the boot early (endedBy 'failure') when the serial line shows this, e.g. the initramfs giving up on its root. */
  failOn?: RegExp;
  /** QEMU machine type. Default 'pc' (i440fx). */
  machine?: 'pc' | 'q35';
  /** Abort the boot: QEMU is killed and bootImage() rejects with BootError. */
  signal?: AbortSignal;
  /** QEMU binary. Default `qemu-system-x86_64` from PATH. */
  qemuBinary?: string;
  /** 'uefi': boot with OVMF and a fresh copy of its variable store (no NVRAM boot
   *  entries, exactly a new VM). Default 'bios' (SeaBIOS). */
  firmware?: Firmware;
}

export type Firmware = 'bios' | 'uefi';
/** Debian's `ovmf` package: 4 MiB code (read-only) and the empty variable store it is paired with. */
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

/** CPU seconds a process has used (user + system, from /proc/PID/stat), or undefined once it is gone. */
export async function cpuSeconds(pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!stat) return undefined;
  // fields after the command (which may hold spaces), from field 3 on: utime is 14, stime 15
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}
/** USER_HZ: 100 on Linux for every architecture Ferry runs on */
const CLOCK_TICKS = 100;

/** Resolves with `value` once process `pid` has used `ms` of CPU time (polled each second; `timers` to clear). */
function afterCpu<T>(pid: number | undefined, ms: number, value: T, timers: NodeJS.Timeout[]): Promise<T> {
  return new Promise<T>((resolve) => {
    if (!pid) return;
    const poll = async () => {
      const used = await cpuSeconds(pid);
      if (used !== undefined && used * 1000 >= ms) resolve(value);
      else if (used !== undefined) timers.push(setTimeout(() => void poll(), 1000));
    };
    timers.push(setTimeout(() => void poll(), 1000));
  });
}

/** A boot that could not be run or watched (as opposed to a guest that did not
 *  print the marker, which is a normal result with sawMarker=false). */
export class BootError extends Error {
  override readonly name = 'BootError';
  constructor(
    message: string,
    readonly image: string,
    readonly serialLog = '',
    readonly qemuStderr = '',
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Anchored at the line end so a chunk boundary cannot cut a value short. */
const MARKER = /FERRY-BOOT-OK root=(\S+) host=(\S+)((?: [\w.-]+=\S*)*)[ \t]*\r?\n/;
const QEMU_FORMATS: Readonly<Record<string, string>> = {
  qcow2: 'qcow2',
  raw: 'raw',
  vmdk: 'vmdk',
  vhdx: 'vhdx',
  vdi: 'vdi',
  vhd: 'vpc',
  vpc: 'vpc',
};
const DEFAULT_TIMEOUT_MS = 240_000;
const DEFAULT_MEMORY_MIB = 1024;
/** After the marker, how long the guest may take to power itself off. */
const POWEROFF_GRACE_MS = 20_000;
/** Keep at most this much serial output (the tail). */
const MAX_LOG_CHARS = 4 * 1024 * 1024;

/** The QEMU command line for a boot (exported for unit tests). */
export function qemuArgs(opts: {
  image: string;
  format: string;
  memoryMiB?: number;
  diskBus?: DiskBus;
  nic?: { model: string; mac?: string };
  machine?: 'pc' | 'q35';
  /** UEFI: the per-boot copy of OVMF's variable store (writable pflash) */
  ovmfVars?: string;
}): string[] {
  const format = QEMU_FORMATS[opts.format];
  if (!format) {
    throw new BootError(
      `cannot boot image format '${opts.format}': use one of ${Object.keys(QEMU_FORMATS).join(', ')}`,
      opts.image,
    );
  }
  const bus = opts.diskBus ?? 'ide';
  if (bus !== 'ide' && bus !== 'virtio') {
    throw new BootError(`unknown disk bus '${String(bus)}': use 'ide' or 'virtio'`, opts.image);
  }
  const memory = opts.memoryMiB ?? DEFAULT_MEMORY_MIB;
  if (!Number.isInteger(memory) || memory < 64) {
    throw new BootError(`memoryMiB must be an integer >= 64, got ${memory}`, opts.image);
  }
  // -drive separates options with commas; a comma in a path is written twice.
  const file = opts.image.replaceAll(',', ',,');
  return [
    '-accel', 'tcg',
    '-machine', opts.machine ?? 'pc',
    '-smp', '1',
    '-m', String(memory),
    // -nographic (not just -display none) also makes SeaBIOS print to the
    // serial line, so a guest that never reaches GRUB still leaves a trace.
    '-nographic',
    '-monitor', 'none',
    '-parallel', 'none',
    '-serial', 'stdio',
    '-nic', opts.nic ? `user,model=${opts.nic.model}${opts.nic.mac ? `,mac=${opts.nic.mac}` : ''}` : 'none',
    '-no-reboot',
    ...(opts.ovmfVars ? [
      '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE.replaceAll(',', ',,')}`,
      '-drive', `if=pflash,format=raw,unit=1,file=${opts.ovmfVars.replaceAll(',', ',,')}`,
    ] : []),
    // snapshot=on: writes go to a throw-away overlay; the image stays as it was.
    '-drive', `file=${file},format=${format},if=${bus},media=disk,snapshot=on,cache=unsafe`,
  ];
}

/**
 * Boot `image` and wait for the Ferry boot marker, the guest stopping QEMU,
 * or the timeout. Resolves with what was seen; rejects with BootError only
 * when the boot could not be run (no image, no QEMU, QEMU refused the
 * options, QEMU killed from outside) or was aborted.
 */
export async function bootImage(opts: BootOptions): Promise<BootResult> {
  const { image } = opts;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(timeoutMs > 0)) throw new BootError(`timeoutMs must be > 0, got ${timeoutMs}`, image);
  qemuArgs(opts); // checks the options before anything is made
  try {
    const st = await stat(image);
    if (!st.isFile() && !st.isBlockDevice()) throw new Error('not a file or block device');
  } catch (err) {
    throw new BootError(`cannot boot ${image}: ${(err as Error).message}`, image, '', '', { cause: err });
  }
  if (opts.signal?.aborted) {
    throw new BootError(`boot of ${image} aborted before start`, image, '', '', { cause: opts.signal.reason });
  }

  if (opts.firmware === 'uefi') {
    // a fresh variable store per boot, gone with the boot
    const dir = await mkdtemp(join(process.env.FERRY_TMP ?? tmpdir(), 'ferry-ovmf-'));
    try {
      const vars = join(dir, 'OVMF_VARS.fd');
      await copyFile(OVMF_VARS, vars).catch(err => {
        throw new BootError(`cannot boot UEFI: ${OVMF_VARS} is missing (install ovmf, scripts/setup.sh)`, image, '', '', { cause: err });
      });
      return await runQemu(opts, qemuArgs({ ...opts, ovmfVars: vars }));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return runQemu(opts, qemuArgs(opts));
}

async function runQemu(opts: BootOptions, args: string[]): Promise<BootResult> {
  const { image } = opts;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const qemu = opts.qemuBinary ?? 'qemu-system-x86_64';
  const started = performance.now();
  const elapsed = () => Math.round((performance.now() - started) / 100) / 10;

  // streams read live; we decide what a failure is; QEMU dies with this process
  const subprocess = spawnLive(qemu, args);

  let serialLog = '';
  let qemuStderr = '';
  let scanFrom = 0;
  let marker: RegExpExecArray | null = null;
  let markerSeconds = 0;
  let onMarker: () => void = () => {};
  const markerSeen = new Promise<void>((resolve) => (onMarker = resolve));
  let failed = false;
  let onFailure: () => void = () => {};
  const failureSeen = new Promise<void>((resolve) => (onFailure = resolve));

  const out = new StringDecoder('utf8');
  subprocess.stdout.on('data', (chunk: Buffer) => {
    serialLog += out.write(chunk);
    if (!marker) {
      const m = MARKER.exec(serialLog.slice(scanFrom));
      if (m) {
        marker = m;
        markerSeconds = elapsed();
        onMarker();
      } else {
        if (opts.failOn && !failed && opts.failOn.test(serialLog.slice(scanFrom))) { failed = true; onFailure(); }
        // The marker may straddle chunks: rescan the last line next time.
        scanFrom = Math.max(0, serialLog.length - 256);
      }
    }
    if (serialLog.length > MAX_LOG_CHARS) {
      const drop = serialLog.length - MAX_LOG_CHARS;
      serialLog = serialLog.slice(drop);
      scanFrom = Math.max(0, scanFrom - drop);
    }
  });
  const err = new StringDecoder('utf8');
  subprocess.stderr.on('data', (chunk: Buffer) => {
    if (qemuStderr.length < 64 * 1024) qemuStderr += err.write(chunk);
  });

  const timers: NodeJS.Timeout[] = [];
  const after = <T>(ms: number, value: T) =>
    new Promise<T>((resolve) => timers.push(setTimeout(() => resolve(value), ms)));
  let onAbort: () => void = () => {};
  const aborted = new Promise<'abort'>((resolve) => {
    onAbort = () => resolve('abort');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
  });
  // `subprocess` itself is a promise of the result (never rejects: reject:false).
  const exited = subprocess.then((result) => ({ kind: 'exit' as const, result }));

  let ended: 'marker' | 'exit' | 'timeout' | 'abort' | 'failure';
  try {
    const first = await Promise.race([
      markerSeen.then(() => 'marker' as const),
      failureSeen.then(() => 'failure' as const),
      exited.then(() => 'exit' as const),
      after(timeoutMs, 'timeout' as const),
      ...(opts.cpuTimeoutMs ? [afterCpu(subprocess.pid, opts.cpuTimeoutMs, 'timeout' as const, timers)] : []),
      aborted,
    ]);
    ended = first;
    if (first === 'marker') {
      // Let the guest power off by itself (keeps the serial log complete),
      // but do not wait for ever.
      const next = await Promise.race([exited.then(() => 'exit' as const), after(POWEROFF_GRACE_MS, 'grace' as const), aborted]);
      if (next === 'abort') ended = 'abort';
    }
  } finally {
    for (const t of timers) clearTimeout(t);
    opts.signal?.removeEventListener('abort', onAbort);
    // Always make sure QEMU is gone before we settle.
    if (subprocess.exitCode === null && subprocess.signalCode === null) subprocess.kill('SIGKILL');
  }
  const { result } = await exited;
  serialLog += out.end();
  qemuStderr += err.end();

  if (ended === 'abort') {
    throw new BootError(`boot of ${image} aborted`, image, serialLog, qemuStderr, { cause: opts.signal?.reason });
  }
  const found = marker as RegExpExecArray | null;
  if (found) {
    return {
      sawMarker: true,
      rootUuid: found[1],
      hostname: found[2],
      fields: Object.fromEntries(found[3].trim().split(' ').filter(Boolean).map(w => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)])),
      serialLog,
      seconds: markerSeconds,
      endedBy: 'marker',
      qemuStderr,
    };
  }
  if (ended === 'timeout' || ended === 'failure') {
    return { sawMarker: false, serialLog, seconds: elapsed(), endedBy: ended, qemuStderr };
  }
  // QEMU ended on its own, without a marker.
  if (result.exitCode === undefined && !result.isTerminated) {
    const why = result.code === 'ENOENT' ? `${qemu} not found: install qemu-system-x86 (scripts/setup.sh)` : result.shortMessage ?? 'spawn failed';
    throw new BootError(`cannot start QEMU: ${why}`, image, serialLog, qemuStderr, { cause: result.cause });
  }
  if (result.isTerminated) {
    throw new BootError(
      `QEMU was killed by ${result.signal ?? 'a signal'} from outside while booting ${image}`,
      image,
      serialLog,
      qemuStderr,
    );
  }
  if (result.exitCode !== 0) {
    const last = qemuStderr.trim().split('\n').slice(-3).join(' | ');
    throw new BootError(
      `QEMU failed (exit ${result.exitCode}) booting ${image}: ${last || 'no message'}`,
      image,
      serialLog,
      qemuStderr,
    );
  }
  // Exit 0: the guest powered off or rebooted (-no-reboot) without the marker.
  return { sawMarker: false, serialLog, seconds: elapsed(), endedBy: 'poweroff', qemuStderr };
}
