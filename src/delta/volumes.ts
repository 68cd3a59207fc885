// The file systems of an image as a diff or a delta names them: a Linux
// guest's by the mount point its fstab gives ('/', '/boot'), a Windows system
// volume as 'C:', anything else by its partition ('p3', 'p2:vg/lv'). Two
// images are compared volume by volume under those names, so a delta made
// from one disk applies to another whose partitions are numbered differently.
import { openFileSystems, type ReadableFs } from '../inspect/filesystems.js';
import { findLinuxRoots, guestMounts } from '../inspect/linux/index.js';
import { findWindowsRoot } from '../inspect/windows/index.js';
import type { OpenDisk } from '../blockdev/disk.js';
import type { Scope } from '../util/scope.js';

export type OsFamily = 'linux' | 'windows' | 'none';

export interface Volume {
  /** '/', '/boot', 'C:', 'p3' */
  name: string;
  type: string;
  dir: string;
  fs: ReadableFs;
  /** Windows: the system root directory below the volume, e.g. /Windows */
  systemRoot?: string;
}

export interface Volumes { family: OsFamily; volumes: Volume[] }

export async function openVolumes(scope: Scope, disk: OpenDisk, work: string, writable = false): Promise<Volumes> {
  const { readable } = await openFileSystems(scope, disk.file, disk.size, work, { writable });
  return nameVolumes(readable);
}

export async function nameVolumes(readable: ReadableFs[]): Promise<Volumes> {
  const volumes: Volume[] = [];
  const claimed = new Set<ReadableFs>();
  let family: OsFamily = 'none';
  const roots = await findLinuxRoots(readable);
  if (roots.length) {
    family = 'linux';
    // one Linux root is what a delta describes; a second root keeps its partition name
    const { mounts } = await guestMounts(roots[0], readable);
    for (const m of mounts) {
      if (claimed.has(m.fs)) continue;
      claimed.add(m.fs);
      volumes.push({ name: m.mountpoint, type: m.fs.entry.type ?? '', dir: m.fs.dir, fs: m.fs });
    }
  }
  for (const r of readable) {
    if (claimed.has(r) || r.entry.type !== 'ntfs') continue;
    const systemRoot = await findWindowsRoot(r.dir);
    if (!systemRoot || volumes.some(v => v.name === 'C:')) continue;
    if (family === 'none') family = 'windows';
    claimed.add(r);
    volumes.push({ name: 'C:', type: 'ntfs', dir: r.dir, fs: r, systemRoot });
  }
  for (const r of readable) {
    if (claimed.has(r)) continue;
    volumes.push({ name: `p${r.entry.partition}${r.entry.lv ? `:${r.entry.lv}` : ''}`, type: r.entry.type ?? '', dir: r.dir, fs: r });
  }
  return { family, volumes };
}

/** a volume's path as a person reads it: '/boot' + '/grub/grub.cfg', 'C:' + '/Windows/…' */
export function displayPath(volume: string, path: string): string {
  if (volume === '/') return path;
  if (volume.startsWith('/')) return path === '/' ? volume : volume + path;
  return `${volume}${path}`;
}
