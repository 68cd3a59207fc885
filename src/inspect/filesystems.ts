// Every file system of an opened disk, each made readable on the host without
// writing to it: a kernel mount read-only with journal replay off, NTFS through
// ntfs-3g read-only, FAT (no kernel driver here) unpacked with mtools.
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { attachLoop } from '../blockdev/loop.js';
import { mountFs } from '../blockdev/mount.js';
import { probeDevice } from '../fs/detect.js';
import { fsModuleFor } from '../fs/index.js';
import { extractVfat } from '../fs/vfat.js';
import { isExtended, readTable, type Partition, type PartitionTable } from '../layout/table.js';
import type { Scope } from '../util/scope.js';
import type { FileSystemEntry } from './report.js';

export interface ReadableFs {
  entry: FileSystemEntry;
  /** host directory with its files */
  dir: string;
  /** PARTUUID / PARTLABEL from the partition table, for fstab lookups */
  partUuid?: string;
  partLabel?: string;
}

/** FAT volumes larger than this are only listed in the report, not unpacked */
const FAT_UNPACK_LIMIT = 512 * 2 ** 20;

/** writable: for a re-fit of a target (never a source): loops and mounts read-write, journals replayed */
export async function openFileSystems(scope: Scope, diskFile: string, diskSize: number, work: string, opts: { writable?: boolean } = {}): Promise<{ table?: PartitionTable; entries: FileSystemEntry[]; readable: ReadableFs[] }> {
  const table = await readTable(diskFile);
  const ss = table?.sectorSize ?? 512;
  const parts: Partition[] = table?.partitions.filter(p => !isExtended(table, p)) ?? [{ number: 0, start: 0, size: Math.floor(diskSize / 512), type: '' }];
  const entries: FileSystemEntry[] = [];
  const readable: ReadableFs[] = [];
  for (const part of parts) {
    const entry: FileSystemEntry = { partition: part.number, start: part.start * ss, size: part.size * ss };
    entries.push(entry);
    const dev = await attachLoop(scope, diskFile, { offset: part.start * ss, size: part.size * ss, readOnly: !opts.writable });
    const probe = await probeDevice(dev);
    Object.assign(entry, { type: probe.type, uuid: probe.uuid, label: probe.label });
    if (probe.type === 'crypto_LUKS') { entry.encrypted = 'luks'; continue; }
    if (probe.type === 'BitLocker') { entry.encrypted = 'bitlocker'; continue; }
    if (!probe.type || probe.type === 'swap' || probe.usage !== 'filesystem') continue;
    const dir = join(work, `fs${part.number}`);
    try {
      await makeReadable(scope, dev, dir, probe.type, part.size * ss, !!opts.writable);
      if (probe.type !== 'vfat') {
        const s = await statfs(dir);
        entry.usedBytes = (s.blocks - s.bfree) * s.bsize;
      }
      readable.push({ entry, dir, partUuid: partUuidOf(table, part), partLabel: part.name });
    } catch (e) {
      entry.error = { code: 'FS_UNREADABLE', message: `partition ${part.number} says it is ${probe.type} but cannot be read: ${lastLine(e)}` };
    }
  }
  return { table, entries, readable };
}

async function makeReadable(scope: Scope, dev: string, dir: string, type: string, size: number, writable: boolean): Promise<void> {
  if (type === 'vfat') {
    if (size > FAT_UNPACK_LIMIT) throw new Error(`FAT volume of ${size} bytes is larger than Ferry unpacks for inspection`);
    await extractVfat(dev, dir);
    return;
  }
  if (type === 'ntfs') {
    await mountFs(scope, dev, dir, 'ntfs-3g', writable ? [] : ['ro']);
    return;
  }
  if (writable) {
    // the target's twin of the source may be mounted too: xfs then needs nouuid
    await mountFs(scope, dev, dir, type, type === 'xfs' ? ['nouuid'] : []);
    return;
  }
  const module = fsModuleFor(type);
  const options = module?.verifyAs.kind === 'mount' ? module.verifyAs.options(type) : [];
  await mountFs(scope, dev, dir, type, ['ro', ...options]);
}

/** PARTUUID as the kernel names it: GPT partition GUID, or MBR "<disk id>-<nn>" */
function partUuidOf(table: PartitionTable | undefined, part: Partition): string | undefined {
  if (!table) return undefined;
  if (table.label === 'gpt') return part.uuid?.toLowerCase();
  return `${table.id.replace(/^0x/, '').padStart(8, '0')}-${String(part.number).padStart(2, '0')}`.toLowerCase();
}

const lastLine = (e: unknown) => String((e as Error).message ?? e).trim().split('\n').filter(Boolean).at(-1) ?? 'unknown error';
