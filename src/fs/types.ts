// What every file-system module offers: probe its facts on the source, say how
// small it can be, format a target alike, and copy the files across.
import type { Scope } from '../util/scope.js';
import type { ProgressSink } from '../util/progress.js';

export interface FsFacts {
  /** blkid TYPE: ext4, xfs, btrfs, vfat, swap, … */
  type: string;
  uuid?: string;
  label?: string;
  /** bytes in use on the source (what a copy moves) */
  usedBytes: number;
  /** module-specific facts needed to format alike (features, block sizes, …) */
  detail: Record<string, unknown>;
}

export interface CopyContext {
  scope: Scope;
  work: string;
  sourceDev: string;
  targetDev: string;
  facts: FsFacts;
  progress: ProgressSink;
}

export interface FsModule {
  /** blkid TYPE values this module handles */
  types: string[];
  /** gather facts from the (read-only) source device */
  probe(scope: Scope, dev: string, work: string, type: string): Promise<FsFacts>;
  /** smallest partition (bytes) the rebuilt file system can live in */
  minBytes(facts: FsFacts): number;
  /** create the same kind of file system (type, UUID, label, features) on dev */
  format(dev: string, facts: FsFacts, sizeBytes: number): Promise<void>;
  /** copy every file with all its attributes */
  copy(ctx: CopyContext): Promise<void>;
  /** how verify reads it: a kernel mount with these options, FAT via mtools, or only its signature */
  verifyAs: { kind: 'mount'; options: (type: string) => string[]; /** mount -t, when not the blkid type (ntfs-3g) */ fsType?: string } | { kind: 'fat' } | { kind: 'signature' };
  /** on-disk features that a guest's kernel or boot loader must understand, sorted */
  features?(facts: FsFacts): string[];
  /** differences beyond the file tree (subvolumes, inode flags), both mounted */
  compareExtra?(src: string, dst: string): Promise<string[]>;
  /** the byte ranges of dev the file system uses (its free-space map inverted), sorted; for reading a slow source ahead and for the used-block copy */
  usedRanges?(dev: string): Promise<ByteRange[]>;
  /** the used-block path (--mode clone): its used ranges copied as they lie, then the file system grown to its device */
  clone?: {
    /** why this volume must not be copied by its blocks (e.g. not cleanly unmounted); undefined when it may */
    refuse(facts: FsFacts): string | undefined;
    /** the bytes of the file system itself (it may end before its partition does) */
    sizeBytes(facts: FsFacts): number;
    /** grow the copied file system to fill its larger device, with the file system's own tool */
    grow(ctx: CopyContext): Promise<void>;
  };
}

/** [offset, length] in bytes */
export type ByteRange = [number, number];

/** The complement of sorted, non-overlapping free extents (in blocks) within [0, total), as byte ranges. */
export function usedFromFree(free: [number, number][], totalBlocks: number, blockSize: number): ByteRange[] {
  const used: ByteRange[] = [];
  let at = 0;
  for (const [start, len] of free) {
    if (start > at) used.push([at * blockSize, (start - at) * blockSize]);
    at = Math.max(at, start + len);
  }
  if (at < totalBlocks) used.push([at * blockSize, (totalBlocks - at) * blockSize]);
  return used;
}

export const MiB = 2 ** 20;
