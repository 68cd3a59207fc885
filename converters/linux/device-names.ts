// Hardware device names (/dev/sda1, /dev/hda1) change with the disk bus: on
// virtio the same partition is /dev/vda1. fstab entries and the kernel's
// root= that use them are rewritten to the file system's UUID, which no bus
// changes. The swap partition's UUID counts the same.
import { readFile, writeFile } from 'node:fs/promises';
import type { GuestFs } from '../../src/inspect/guest-fs.js';
import { partitionOfDevicePath } from '../../src/inspect/linux/index.js';
import type { FileSystemEntry } from '../../src/inspect/report.js';
import type { Change } from './change.js';

/** the UUID= form of a hardware path, when that partition has a UUID */
export function uuidSpecFor(spec: string, fss: FileSystemEntry[]): string | undefined {
  const n = partitionOfDevicePath(spec);
  const uuid = n === undefined ? undefined : fss.find(f => f.partition === n)?.uuid;
  return uuid ? `UUID=${uuid}` : undefined;
}

export async function rewriteFstab(fs: GuestFs, fss: FileSystemEntry[]): Promise<Change[]> {
  return editLines(fs, '/etc/fstab', line => {
    const m = /^(\s*)(\/dev\/\S+)(\s.*)$/.exec(line);
    const to = m && uuidSpecFor(m[2], fss);
    return to ? `${m![1]}${to}${m![3]}` : line;
  }, 'the device path names the old disk bus; the UUID finds the same file system on any bus');
}

/** root=/dev/sdXN → root=UUID=… on kernel command lines (grub.cfg, BLS entries, /etc/default/grub) */
export function rewriteRootArg(line: string, fss: FileSystemEntry[]): string {
  return line.replace(/(\broot=)(\/dev\/[^\s"']+)/g, (all, key: string, dev: string) => {
    const to = uuidSpecFor(dev, fss);
    return to ? key + to : all;
  });
}

/** apply edit to every line of a guest file; one Change per changed line */
export async function editLines(fs: GuestFs, guestPath: string, edit: (line: string) => string, reason: string): Promise<Change[]> {
  const host = await fs.resolve(guestPath);
  if (!host) return [];
  const text = await readFile(host, 'utf8');
  const changes: Change[] = [];
  const out = text.split('\n').map(line => {
    const after = edit(line);
    if (after !== line) changes.push({ file: guestPath, before: line.trim(), after: after.trim(), reason });
    return after;
  });
  if (changes.length) await writeFile(host, out.join('\n'));
  return changes;
}
