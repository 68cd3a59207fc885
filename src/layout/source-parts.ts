// Look at each partition of an opened source: which file system it holds,
// whether Ferry rebuilds it or copies its blocks, and how small it may get.
// An LVM physical volume is looked into too: each logical volume is a volume
// of its own, probed and copied like a partition (layout/lvm.ts).
import { attachLoop, volumeWhere } from '../blockdev/loop.js';
import { fsDamaged, lvmPvMissing, partitionOutsideDisk, ToolError } from '../errors.js';
import { probeDevice } from '../fs/detect.js';
import { fsModuleFor } from '../fs/index.js';
import { looksLikeNtfs } from '../fs/ntfs.js';
import type { FsFacts, FsModule } from '../fs/types.js';
import { withScope, type Scope } from '../util/scope.js';
import { checkInside, linearRanges, minPvSectors, readVolumeGroup, whyBlocks, type LogicalVolume, type LvSpace, type VolumeGroup } from './lvm.js';
import { isExtended, readTable, type Partition, type PartitionTable } from './table.js';
import type { PlannedPartition } from './plan.js';

export type Method = 'rebuild' | 'blocks' | 'container' | 'lvm';

/** What a volume (a partition or a logical volume) holds and how it is copied. */
export interface Volume {
  method: Method;
  module?: FsModule;
  facts?: FsFacts;
  /** blkid TYPE even when Ferry does not rebuild it */
  fsType?: string;
}

export interface SourceLv extends Volume {
  lv: LogicalVolume;
  /** [byte offset on the disk, length] of each piece, in the LV's order */
  ranges: [number, number][];
}

export interface SourcePart extends Volume {
  part: Partition;
  /** method 'lvm': the PV's volume group and its logical volumes */
  lvm?: { vg: VolumeGroup; lvs: SourceLv[] };
  /** why a part that looks rebuildable is copied as blocks */
  why?: string;
}

/**
 * A read-only loop device over one partition, owned by scope. Loops are
 * attached only while a step needs them: mkfs.btrfs refuses a UUID that any
 * visible device already carries, so the source twin must not be attached
 * while its rebuilt copy is formatted.
 */
export async function attachPart(scope: Scope, diskFile: string, part: Partition, sectorSize: number, readOnly = true): Promise<string> {
  return attachLoop(scope, diskFile, { offset: part.start * sectorSize, size: part.size * sectorSize, readOnly });
}

export interface SourceLayout {
  /** undefined: the whole disk is one file system, no partition table */
  table?: PartitionTable;
  parts: SourcePart[];
}

async function probeVolume(scope: Scope, dev: string, work: string, probed?: Awaited<ReturnType<typeof probeDevice>>): Promise<Volume> {
  const probe = probed ?? await probeDevice(dev);
  // an NTFS boot sector blkid no longer accepts is damaged NTFS, not unknown data: its module says why
  if (!probe.type && await looksLikeNtfs(dev)) probe.type = 'ntfs';
  const module = fsModuleFor(probe.type);
  if (!module) return { method: 'blocks', fsType: probe.type };
  const facts = await module.probe(scope, dev, work, probe.type!).catch(async (e: unknown) => {
    // what the file system's own tools or the kernel say of a damaged one: the source's fault, not a tool's
    if (e instanceof ToolError && DAMAGE.test(e.stderr)) throw fsDamaged(probe.type!, await volumeWhere(dev), e.message.replace(/^\S+ failed/, `${e.tool} failed`));
    throw e;
  });
  return { method: 'rebuild', module, facts, fsType: probe.type };
}

/** how dumpe2fs, xfs_db, btrfs and mount report a file system that is damaged */
const DAMAGE = /Structure needs cleaning|bad superblock|superblock is corrupt|checksum does not match|Bad magic number|corrupt/i;

/** The LVs of the PV on dev (partition part): each linear one-range LV probed at its offset; multi-range ones copied as blocks. */
async function probeLvm(scope: Scope, diskFile: string, dev: string, pvUuid: string | undefined, part: Partition, ss: number, work: string): Promise<Pick<SourcePart, 'method' | 'lvm' | 'why'> | undefined> {
  const vg = await readVolumeGroup(dev, work);
  if (!vg) return undefined;
  const pv = vg.pvs.find(p => p.id === pvUuid) ?? vg.pvs[0];
  checkInside(vg, pv, part.size * ss / 512, `partition ${part.number}`);
  const why = whyBlocks(vg);
  if (why) return { method: 'blocks', why, lvm: { vg, lvs: [] } };
  const ext = vg.extentSize * 512;
  const lvs: SourceLv[] = [];
  for (const lv of vg.lvs) {
    const ranges = linearRanges(lv, pv.key)!.map(([pe, n]): [number, number] => [part.start * ss + pv.peStart * 512 + pe * ext, n * ext]);
    if (!ranges.length) continue;
    const vol = await probeVolume(scope, await attachLoop(scope, diskFile, { offset: ranges[0][0], size: ranges[0][1], readOnly: true }), work);
    lvs.push({ lv, ranges, ...(ranges.length > 1 ? { method: 'blocks', fsType: vol.fsType } : vol) });
  }
  return { method: 'lvm', lvm: { vg, lvs } };
}

export async function readSourceLayout(diskFile: string, diskSize: number, work: string): Promise<SourceLayout> {
  const table = await readTable(diskFile);
  const partitions: Partition[] = table?.partitions ?? [{ number: 0, start: 0, size: Math.floor(diskSize / 512), type: '' }];
  const ss = table?.sectorSize ?? 512;
  const parts: SourcePart[] = [];
  const pvUuids = new Set<string>();
  // a partition past the disk's end would be read short (a loop stops at the file's end) and copied as if whole
  for (const part of partitions) {
    const end = (part.start + part.size) * ss;
    if (end > diskSize) throw partitionOutsideDisk(part.number, end, diskSize);
  }
  for (const part of partitions) {
    if (table && isExtended(table, part)) { parts.push({ part, method: 'container' }); continue; }
    parts.push(await withScope(async probeScope => {
      const dev = await attachPart(probeScope, diskFile, part, ss);
      const probe = await probeDevice(dev);
      if (probe.type === 'LVM2_member') {
        if (probe.uuid) pvUuids.add(probe.uuid);
        const lvm = await probeLvm(probeScope, diskFile, dev, probe.uuid, part, ss, work);
        if (lvm) return { part, fsType: probe.type, ...lvm };
      }
      return { part, ...await probeVolume(probeScope, dev, work, probe) };
    }));
  }
  // a VG whose PVs are not all on this disk cannot be copied whole
  for (const p of parts) {
    const missing = p.lvm?.vg.pvs.filter(pv => !pvUuids.has(pv.id)).map(pv => pv.id) ?? [];
    if (missing.length) throw lvmPvMissing(p.lvm!.vg.name, missing);
  }
  return { table, parts };
}

/** How each LV of a PV may change size: data LVs (rebuilt, not swap) grow and shrink. */
export function lvSpaces(sp: SourcePart): LvSpace[] {
  const ext = sp.lvm!.vg.extentSize * 512;
  return sp.lvm!.lvs.map(l => l.method === 'rebuild' && l.facts?.type !== 'swap'
    ? { lv: l.lv, role: 'data' as const, minExtents: Math.ceil(l.module!.minBytes(l.facts!) / ext) }
    : { lv: l.lv, role: 'fixed' as const });
}

/** Smallest size in bytes a part's contents may be rebuilt into (its own size when it cannot shrink). */
export function minBytesOf(p: SourcePart, sectorSize: number): number | undefined {
  if (p.method === 'lvm') return minPvSectors(p.lvm!.vg, lvSpaces(p)) * 512;
  if (p.method === 'rebuild') return p.module!.minBytes(p.facts!);
  return p.method === 'blocks' ? p.part.size * sectorSize : undefined;
}

export function toPlanned(parts: SourcePart[], sectorSize: number): PlannedPartition[] {
  return parts.map(p => {
    const min = minBytesOf(p, sectorSize);
    const data = p.method === 'rebuild' ? p.facts?.type !== 'swap' : p.method === 'lvm' && lvSpaces(p).some(s => s.role === 'data');
    return {
      ...p.part,
      role: data ? 'data' : p.method === 'rebuild' ? 'swap' : 'fixed',
      minSize: p.method === 'rebuild' || p.method === 'lvm' ? Math.ceil(min! / sectorSize) : undefined,
    };
  });
}
