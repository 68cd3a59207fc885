// A Linux installation found on a disk: its root file system, the other file
// systems its fstab mounts, and everything read from them.
import { posix } from 'node:path';
import { GuestFs } from '../guest-fs.js';
import type { ReadableFs } from '../filesystems.js';
import type { LinuxKernel, LinuxOs } from '../report.js';
import { readBoot } from './bootloader.js';
import { parseFstab } from './fstab.js';
import { findGuestTools } from './guest-tools.js';
import { findKernels } from './kernels.js';
import { readNetwork } from './network.js';
import { readPackages } from './packages.js';
import { readArch, readRelease } from './release.js';

/** file systems that hold a Linux root: /etc/os-release, /usr/lib/os-release or /etc/redhat-release */
export async function findLinuxRoots(fss: ReadableFs[]): Promise<ReadableFs[]> {
  const roots: ReadableFs[] = [];
  for (const f of fss) {
    const g = new GuestFs([{ mountpoint: '/', dir: f.dir }]);
    if (await g.isDir('/etc') && (await g.exists('/etc/os-release') || await g.exists('/usr/lib/os-release') || await g.exists('/etc/redhat-release'))) roots.push(f);
  }
  return roots;
}

export async function inspectLinux(root: ReadableFs, all: ReadableFs[], tableLabel: string | undefined, work: string): Promise<LinuxOs> {
  return (await readLinux(root, all, tableLabel, work)).os;
}

/** the file systems a Linux root's fstab mounts, each at its guest mount point (the root first) */
export async function guestMounts(root: ReadableFs, all: ReadableFs[]): Promise<{ fstab: ReturnType<typeof parseFstab>; mounts: { mountpoint: string; fs: ReadableFs }[]; layout: Record<string, number> }> {
  const rootOnly = new GuestFs([{ mountpoint: '/', dir: root.dir }]);
  const fstab = parseFstab((await rootOnly.readText('/etc/fstab')) ?? '');
  const mounts: { mountpoint: string; fs: ReadableFs }[] = [{ mountpoint: '/', fs: root }];
  const layout: Record<string, number> = { '/': root.entry.partition };
  for (const e of fstab) {
    if (!e.mountpoint.startsWith('/') || e.mountpoint === '/') continue;
    const fs = all.find(f => f !== root && names(f, e.spec));
    if (!fs) continue;
    mounts.push({ mountpoint: posix.normalize(e.mountpoint), fs });
    layout[e.mountpoint] = fs.entry.partition;
  }
  return { fstab, mounts, layout };
}

/** the report and the guest's assembled file tree (a re-fit edits through it) */
export async function readLinux(root: ReadableFs, all: ReadableFs[], tableLabel: string | undefined, work: string): Promise<{ os: LinuxOs; fs: GuestFs }> {
  const { fstab, mounts, layout } = await guestMounts(root, all);
  const fs = new GuestFs(mounts.map(m => ({ mountpoint: m.mountpoint, dir: m.fs.dir })));
  const release = (await readRelease(fs))!;
  // EFI system partitions: the one the guest mounts, else any FAT volume with an EFI directory
  const mountedEsp = mounts.find(m => m.mountpoint === '/boot/efi' || m.mountpoint === '/efi');
  const esps = (mountedEsp ? [mountedEsp.fs.dir] : all.filter(f => f.entry.type === 'vfat').map(f => f.dir)).map(dir => new GuestFs([{ mountpoint: '/', dir }]));
  const boot = await readBoot(fs, esps, tableLabel);
  const kernels = await findKernels(fs);
  markBootEntries(kernels, boot.entries, boot.defaultEntry);
  const packages = await readPackages(fs, work);
  const hostname = (await fs.readText('/etc/hostname'))?.trim() || /HOSTNAME=(\S+)/.exec((await fs.readText('/etc/sysconfig/network')) ?? '')?.[1];
  const errors = [
    ...kernels.flatMap(k => (k.initramfs?.error ? [k.initramfs.error] : [])),
    ...(packages.error ? [packages.error] : []),
  ];
  const os: LinuxOs = {
    type: 'linux', mounts: layout,
    distro: release.distro, name: release.name, version: release.version, codename: release.codename, patchLevel: release.patchLevel,
    arch: await readArch(fs), hostname, machineId: (await fs.readText('/etc/machine-id'))?.trim() || undefined,
    kernels, bootloader: boot.bootloader, firmware: boot.firmware, fstab,
    network: await readNetwork(fs), packages, guestTools: await findGuestTools(fs, packages.list), errors,
  };
  return { os, fs };
}

/** whether an fstab device spec names this file system */
function names(f: ReadableFs, spec: string): boolean {
  const e = f.entry;
  const eq = (a?: string, b?: string) => !!a && !!b && a.toLowerCase() === b.toLowerCase();
  const [key, value] = /^(UUID|LABEL|PARTUUID|PARTLABEL)=(.*)$/i.exec(spec)?.slice(1) ?? [];
  const byLink = /^\/dev\/disk\/by-(uuid|label|partuuid|partlabel)\/(.+)$/.exec(spec);
  const k = (key ?? byLink?.[1])?.toLowerCase();
  const v = (value ?? byLink?.[2])?.replace(/^"|"$/g, '');
  if (k === 'uuid') return eq(e.uuid, v);
  if (k === 'label') return e.label === v;
  if (k === 'partuuid') return eq(f.partUuid, v);
  if (k === 'partlabel') return f.partLabel === v;
  if (f.lvPaths) return f.lvPaths.includes(spec);
  return partitionOfDevicePath(spec) === e.partition;
}

/** a hardware path (/dev/sda1, /dev/hda1, /dev/vda1, /dev/nvme0n1p1) names the partition by its number on the (single) disk */
export function partitionOfDevicePath(spec: string): number | undefined {
  const n = /^\/dev\/(?:[shv]d[a-z]|xvd[a-z])(\d+)$/.exec(spec)?.[1] ?? /^\/dev\/(?:nvme\d+n\d+|mmcblk\d+)p(\d+)$/.exec(spec)?.[1];
  return n === undefined ? undefined : Number(n);
}

function markBootEntries(kernels: LinuxKernel[], entries: { linux?: string; cmdline?: string }[], def?: { linux?: string }): void {
  const kernelOf = (linux?: string) => (linux ? kernels.find(k => posix.basename(k.path) === posix.basename(linux)) : undefined);
  for (const e of [...entries].reverse()) { const k = kernelOf(e.linux); if (k && e.cmdline !== undefined) k.cmdline = e.cmdline; }
  const d = kernelOf(def?.linux);
  if (d) { d.default = true; if (def && 'cmdline' in def) d.cmdline = (def as { cmdline?: string }).cmdline; }
}
