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
import { checkInside, linearRanges, readVolumeGroup } from '../layout/lvm.js';
import type { Scope } from '../util/scope.js';
import type { FileSystemEntry } from './report.js';

export interface ReadableFs {
  entry: FileSystemEntry;
  /** host directory with its files */
  dir: string;
  /** the block device it was read from (FAT: dir is an unpacked copy, written back through mtools on this) */
  dev?: string;
  /** PARTUUID / PARTLABEL from the partition table, for fstab lookups */
  partUuid?: string;
  partLabel?: string;
  /** a logical volume: the device paths the guest names it by */
  lvPaths?: string[];
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
    if (probe.type === 'LVM2_member') {
      // each logical volume is a file system of its own, at its offset on the disk
      Object.assign(entry, { type: probe.type, uuid: probe.uuid });
      for (const v of await logicalVolumes(dev, part, ss, work, entry)) {
        entries.push(v.entry);
        await openOne(scope, diskFile, v.entry, join(work, `fs${part.number}-${v.entry.lv!.replace('/', '-')}`), opts, readable, { lvPaths: v.paths });
      }
      continue;
    }
    await openOne(scope, diskFile, entry, join(work, `fs${part.number}`), opts, readable, { partUuid: partUuidOf(table, part), partLabel: part.name }, { dev, probe });
  }
  return { table, entries, readable };
}

/** Probe one volume and make it readable; an unreadable one becomes an error in its entry. */
async function openOne(scope: Scope, diskFile: string, entry: FileSystemEntry, dir: string, opts: { writable?: boolean }, readable: ReadableFs[],
  names: Pick<ReadableFs, 'partUuid' | 'partLabel' | 'lvPaths'>, probed?: { dev: string; probe: Awaited<ReturnType<typeof probeDevice>> }): Promise<void> {
  const dev = probed?.dev ?? await attachLoop(scope, diskFile, { offset: entry.start, size: entry.size, readOnly: !opts.writable });
  const probe = probed?.probe ?? await probeDevice(dev);
  Object.assign(entry, { type: probe.type, uuid: probe.uuid, label: probe.label });
  if (probe.type === 'crypto_LUKS') { entry.encrypted = 'luks'; return; }
  if (probe.type === 'BitLocker') { entry.encrypted = 'bitlocker'; return; }
  if (!probe.type || probe.type === 'swap' || probe.usage !== 'filesystem') return;
  const what = entry.lv ? `logical volume ${entry.lv}` : `partition ${entry.partition}`;
  try {
    await makeReadable(scope, dev, dir, probe.type, entry.size, !!opts.writable);
    if (probe.type !== 'vfat') {
      const s = await statfs(dir);
      entry.usedBytes = (s.blocks - s.bfree) * s.bsize;
    }
    readable.push({ entry, dir, dev, ...names });
  } catch (e) {
    entry.error = { code: 'FS_UNREADABLE', message: `${what} says it is ${probe.type} but cannot be read: ${lastLine(e)}` };
  }
}

/** The single-range linear LVs of the PV on dev, as entries at their offsets with the device paths a guest names them by. */
async function logicalVolumes(dev: string, part: Partition, ss: number, work: string, pvEntry: FileSystemEntry): Promise<{ entry: FileSystemEntry; paths: string[] }[]> {
  try {
    const vg = await readVolumeGroup(dev, work);
    if (!vg) return [];
    const pv = vg.pvs.find(p => p.id === pvEntry.uuid) ?? vg.pvs[0];
    checkInside(vg, pv, part.size * ss / 512, `partition ${part.number}`);
    pvEntry.label = vg.name;
    const out: { entry: FileSystemEntry; paths: string[] }[] = [];
    for (const lv of vg.lvs) {
      const ranges = linearRanges(lv, pv.key);
      if (ranges?.length !== 1) continue;
      const start = part.start * ss + (pv.peStart + ranges[0][0] * vg.extentSize) * 512;
      out.push({ entry: { partition: part.number, lv: `${vg.name}/${lv.name}`, start, size: ranges[0][1] * vg.extentSize * 512 }, paths: lvDevicePaths(vg.name, lv.name) });
    }
    return out;
  } catch (e) {
    pvEntry.error = { code: (e as { code?: string }).code ?? 'FS_UNREADABLE', message: lastLine(e) };
    return [];
  }
}

/** How a guest names an LV: /dev/VG/LV and /dev/mapper/VG-LV (a dash inside a name doubled). */
export const lvDevicePaths = (vg: string, lv: string) => [`/dev/${vg}/${lv}`, `/dev/mapper/${vg.replace(/-/g, '--')}-${lv.replace(/-/g, '--')}`];

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
    // the target's twin of the source may be mounted too: xfs then needs nouuid;
    // noatime: a re-fit that only reads a file must not change its access time
    // (a rebuilt file's ctime is the copy's, so relatime would update it on the first read)
    await mountFs(scope, dev, dir, type, type === 'xfs' ? ['nouuid', 'noatime'] : ['noatime']);
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
