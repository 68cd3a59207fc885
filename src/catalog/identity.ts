// An image's identity: a cheap fingerprint that changes whenever the disk's
// contents may have changed, so a stored inspection is used only while it
// still describes the disk.
//
// Files: the stat tuple (device, inode, size, mtime and ctime in ns) of the
// image and of every backing file in its qemu-img chain. Any write through
// any path (a loop device, qemu, cp over it, a backing file changed under an
// overlay) moves mtime/ctime; a replaced file moves the inode. No byte is
// read, so checking a catalog of large images costs a stat each. A write
// landing in the same timestamp tick (a few ms) right after the stat that
// recorded the identity could hide; from Linux 6.13, ext4, xfs, btrfs and
// tmpfs keep multigrain timestamps (a ctime that was observed is never handed
// out again), so there it cannot. It errs the other way too: touch or chmod
// re-inspects an unchanged image, which is only slower.
//
// Network disks (nbd://, iscsi://): there is no stat. The identity is the
// size plus the sha256 of the first MiB of the disk (partition table, boot
// code) and of the first MiB of every partition, where file systems keep
// their superblocks, group descriptors and log heads: write times, mount
// counts, free block and inode counts, all of which a change that was
// written back (unmounted or synced) moves. This reads about 1 MiB per
// partition instead of the whole disk. The trade-off: a change a guest has
// not yet written back, or one that leaves every one of those blocks alone
// (an in-place rewrite of a file's data with the same size in a file
// system mounted elsewhere), is not seen until those metadata blocks move.
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { imageInfoChain } from '../blockdev/qemu-img.js';
import { readBytes } from '../blockdev/disk.js';
import { workDir } from '../blockdev/mount.js';
import { readTable } from '../layout/table.js';
import type { Endpoint } from '../sources/endpoint.js';
import { openNetworkSource } from '../sources/network.js';
import type { NetworkCredentials } from '../sources/secrets.js';
import { withScope } from '../util/scope.js';

export interface FileStamp { path: string; dev: string; ino: string; size: string; mtimeNs: string; ctimeNs: string }

export type Identity =
  | { kind: 'file'; files: FileStamp[]; chainError?: string }
  | { kind: 'nbd' | 'iscsi'; size: number; head: string; partitions: { start: number; sha256: string }[] };

const MiB = 2 ** 20;

async function stamp(path: string): Promise<FileStamp | undefined> {
  const st = await stat(path, { bigint: true }).catch(() => undefined);
  if (!st) return undefined;
  return { path, dev: String(st.dev), ino: String(st.ino), size: String(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) };
}

/** The identity of a disk image file; undefined when the file does not exist. */
export async function fileIdentity(path: string): Promise<Identity | undefined> {
  const top = await stamp(path);
  if (!top) return undefined;
  let chain: string[];
  try {
    chain = (await imageInfoChain(path)).slice(1).map(i => i.filename);
  } catch (e) {
    // unreadable now: an identity that matches nothing stored, so the image is inspected (and fails, typed)
    return { kind: 'file', files: [top], chainError: (e as Error).message };
  }
  const files = [top];
  for (const p of chain) {
    // a vanished backing file is a change as well: record it as an empty stamp
    files.push(await stamp(p) ?? { path: p, dev: '', ino: '', size: '-1', mtimeNs: '', ctimeNs: '' });
  }
  return { kind: 'file', files };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The identity of a network disk, read through a read-only qemu-storage-daemon export. */
export async function networkIdentity(ep: Exclude<Endpoint, { kind: 'file' }>, credentials: NetworkCredentials): Promise<Identity> {
  return withScope(async scope => {
    const work = await workDir(scope);
    const disk = await openNetworkSource(scope, ep, work, 'identity', { requireDisk: false, credentials });
    const table = await readTable(disk.file);
    const ss = table?.sectorSize ?? 512;
    const partitions: { start: number; sha256: string }[] = [];
    for (const p of table?.partitions ?? []) {
      const start = p.start * ss;
      partitions.push({ start, sha256: sha256(await readBytes(disk.file, start, Math.min(MiB, p.size * ss))) });
    }
    return { kind: ep.kind, size: disk.size, head: sha256(await readBytes(disk.file, 0, MiB)), partitions };
  });
}

/** Identities compare as their canonical JSON. */
export const sameIdentity = (a: Identity, stored: string) => JSON.stringify(a) === stored;
