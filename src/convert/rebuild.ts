// The rebuild path: same partitions and file systems in a fresh sparse image,
// filled with files, not sectors. Source opened read-only from start to end.
import { attachLoop } from '../blockdev/loop.js';
import { startReadAhead } from '../sources/read-ahead.js';
import { createTarget, type NewTarget, type OpenDisk } from '../blockdev/disk.js';
import { copyBlocks } from '../fs/blocks.js';
import { planLayout } from '../layout/plan.js';
import { lvSpaces, minBytesOf, readSourceLayout, toPlanned, type SourceLayout, type SourcePart, type Volume } from '../layout/source-parts.js';
import { planVolumeGroup, targetMetadata, writeVolumeGroup } from '../layout/lvm.js';
import { writeTable, type PartitionTable } from '../layout/table.js';
import { throwIfAborted } from '../util/abort.js';
import type { ProgressSink } from '../util/progress.js';
import { withScope, type Scope } from '../util/scope.js';
import { copyBootCode } from './boot-code.js';
import { checkSpace, type ConvertPlan, type Mode } from './options.js';
import { checkCopyProof, copyUsedRanges } from '../fs/used-copy.js';
import { volumeTag } from '../verify/disks.js';
import { run } from '../util/exec.js';
import { doesNotFit, ntfsNotClean, verifyFailed } from '../errors.js';
import { ntfsUncleanState } from '../fs/ntfs.js';
import { gainsEsp, uefiTable } from './to-uefi.js';

export interface PartitionReport {
  number: number;
  fs?: string;
  uuid?: string;
  label?: string;
  method: 'rebuild' | 'clone' | 'blocks' | 'signature' | 'lvm';
  /** why this path ran (clone: the used-block copy; rebuild: the files) */
  why?: string;
  /** clone with verify: its used blocks were hashed as read and read back from the target before the grow (verify takes that for its files) */
  proven?: boolean;
  sourceStart: number;
  sourceSize: number;
  targetStart: number;
  targetSize: number;
  bytesCopied: number;
  /** an LVM physical volume: its VG, rebuilt with the same UUIDs, and each LV */
  lvm?: { vg: string; uuid: string; extentSize: number; lvs: LvReport[] };
}

export interface LvReport {
  name: string; lvUuid: string; tags: string[];
  /** the file system inside the LV */
  fs?: string; uuid?: string; label?: string;
  method: 'rebuild' | 'clone' | 'blocks' | 'signature';
  why?: string;
  proven?: boolean;
  sourceExtents: number; targetExtents: number;
  /** bytes from the start of the target disk */
  targetOffset: number;
  bytesCopied: number;
}

export interface RebuildReport {
  partitionTable: string;
  targetSize: number;
  bootCode: { mbr: boolean; gapBytes: number };
  partitions: PartitionReport[];
  /** --firmware uefi: the new EFI system partition (sectors), filled after the verify */
  esp?: { number: number; start: number; size: number };
}

const volumeOutput = (v: Volume, blockBytes: number) => v.method === 'rebuild' ? v.facts!.usedBytes : v.method === 'blocks' ? blockBytes : 0;
const estimateOutput = (layout: SourceLayout, ss: number) => layout.parts.reduce((n, p) => n + (p.method === 'lvm'
  ? p.lvm!.lvs.reduce((m, l) => m + volumeOutput(l, l.ranges.reduce((a, r) => a + r[1], 0)), 0)
  : volumeOutput(p, p.part.size * ss)), 0);

/** What the rebuild decided before writing anything: the source's parts and the target's table. */
export interface RebuildLayout {
  /** rebuild: every file system by its files; clone: by its used blocks where it can be (choosePath) */
  mode: Mode;
  /** the conversion will be verified: a used-block copy proves itself as it goes (fs/used-copy.ts) */
  prove: boolean;
  layout: SourceLayout;
  sectorSize: number;
  targetSize: number;
  /** undefined: a bare file system that fills the disk */
  newTable?: PartitionTable;
  /** --firmware uefi on an MBR disk: the new ESP in newTable (not in the source) */
  esp?: { number: number; start: number; size: number };
}

/** Read the source's layout and plan the target's; checkSpace: refuse when the directory cannot hold it. */
export async function planRebuild(plan: ConvertPlan, source: OpenDisk, work: string, progress: ProgressSink, opts: { checkSpace?: boolean } = {}): Promise<RebuildLayout> {
  const layout = await readSourceLayout(source.file, source.size, work);
  const ss = layout.table?.sectorSize ?? 512;
  const targetSize = plan.size ?? source.size;

  let newTable: PartitionTable | undefined;
  let esp: RebuildLayout['esp'];
  if (layout.table && gainsEsp(plan, layout.table)) {
    ({ table: newTable, esp } = uefiTable(layout.table, toPlanned(layout.parts, ss), source.size, targetSize));
  } else if (layout.table) {
    newTable = planLayout(layout.table, toPlanned(layout.parts, ss), source.size, targetSize);
  } else {
    // a bare file system fills the disk
    const only = layout.parts[0];
    const min = minBytesOf(only, ss) ?? source.size;
    if (only.method === 'lvm') planLvs(only, ss, Math.floor(targetSize / ss));
    if (targetSize < Math.min(min, source.size)) throw doesNotFit(Math.min(min, source.size), targetSize);
  }
  // before anything is written: a volume Windows did not close is refused unless asked for as it is
  for (const p of layout.parts) {
    // the partition itself, or the logical volumes of an LVM PV
    for (const v of [p, ...p.lvm?.lvs ?? []] as Volume[]) {
      const state = ntfsUncleanState(v.facts);
      if (!state.length) continue;
      if (!plan.forceNtfsDirty) throw ntfsNotClean(p.part.number, state);
      progress.note(`partition ${p.part.number}: NTFS volume is ${state.join(' and ')}; copied as it is (--force-ntfs-dirty)`);
    }
  }
  if (opts.checkSpace !== false) await checkSpace(plan.targetPath, estimateOutput(layout, ss));

  for (const p of layout.parts) {
    if (p.method === 'blocks') progress.note(`partition ${p.part.number}: ${p.why ?? (p.fsType ? `file system ${p.fsType} is not rebuilt` : 'no known file system')}; copying its used blocks`);
    for (const l of p.lvm?.lvs ?? []) {
      if (l.method === 'blocks') progress.note(`logical volume ${p.lvm!.vg.name}/${l.lv.name}: ${l.ranges.length > 1 ? `${l.ranges.length} extent ranges` : l.fsType ? `file system ${l.fsType} is not rebuilt` : 'no known file system'}; copying its blocks into one range`);
    }
  }
  return { mode: plan.mode, prove: plan.verify, layout, sectorSize: ss, targetSize, newTable, esp: esp && { number: esp.number, start: esp.start, size: esp.size } };
}

/** The parts that get a format-and-copy of their own (an extended partition is only a container). */
export const partsToCopy = (rl: RebuildLayout): SourcePart[] => rl.layout.parts.filter(p => p.method !== 'container');

/** A fresh target's partition table and boot code. */
export async function prepareTarget(rl: RebuildLayout, source: OpenDisk, targetFile: string): Promise<RebuildReport['bootCode']> {
  if (!rl.layout.table || !rl.newTable) return { mbr: false, gapBytes: 0 };
  await writeTable(targetFile, rl.newTable);
  // BIOS boot code has no place on a disk that now boots UEFI (the gap holds GPT's entries)
  if (rl.esp) return { mbr: false, gapBytes: 0 };
  return copyBootCode(source.file, rl.layout.table, targetFile);
}

/** A network source's volume: its used ranges read into memory alongside the copy, which asks for them piece by piece. */
async function readVolumeAhead(diskFile: string, vol: Volume, sourceDev: string, offset: number): Promise<{ stop(): Promise<number> } | undefined> {
  const ranges = await vol.module?.usedRanges?.(sourceDev).catch(() => undefined);
  return ranges && startReadAhead(diskFile, offset, ranges);
}

/** fresh: created empty by this conversion (reads as zeros); otherwise (a resumed job's, a machine's disk) it may hold old data */
type TargetDisk = Pick<OpenDisk, 'file' | 'format' | 'remote'> & { fresh?: boolean };

/** A writable loop over [offset, offset+size) of the target. */
function attachTarget(scope: Scope, target: TargetDisk, offset: number, size: number): Promise<string> {
  // no direct I/O onto a machine's disk over NBD: its small unaligned writes were read-modify-written
  // under the server's 4 KiB block size and some were lost (mkfs's journal inode came back corrupt)
  return attachLoop(scope, target.file, { offset, size, readOnly: false, directIo: target.format === 'raw' && !target.remote });
}

const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;

/**
 * Which path a rebuildable volume takes and why: its used blocks (clone) where
 * the mode asks for it, its module has a used-block copy, the file system is
 * clean and its target is at least as large as the file system; else its files.
 */
export function choosePath(mode: Mode, vol: Volume, targetBytes: number): { path: 'clone' | 'rebuild'; why: string } {
  const type = vol.facts?.type ?? vol.fsType ?? 'data';
  if (mode !== 'clone') return { path: 'rebuild', why: `--mode ${mode}: files copied` };
  const c = vol.module?.clone;
  if (!c || !vol.module?.usedRanges) return { path: 'rebuild', why: `${type} has no used-block copy; its module's own copy runs` };
  const refused = c.refuse(vol.facts!);
  if (refused) return { path: 'rebuild', why: `${type} ${refused}: files copied` };
  const fsBytes = c.sizeBytes(vol.facts!);
  if (targetBytes < fsBytes) return { path: 'rebuild', why: `shrunk to ${mib(targetBytes)}, below the ${mib(fsBytes)} ${type} file system's own size: file-level rebuild` };
  return { path: 'clone', why: targetBytes > fsBytes ? `used blocks copied, then ${type} grown from ${mib(fsBytes)} to ${mib(targetBytes)} with its own tool` : 'used blocks copied, same size' };
}

interface Copied { bytesCopied: number; path?: 'clone' | 'rebuild'; why?: string; proven?: boolean }
/** how volumes are copied: the path asked for, and whether a used-block copy proves itself */
type CopyHow = Pick<RebuildLayout, 'mode' | 'prove'>;

/**
 * Format one volume (a partition or a logical volume) of the target alike and
 * copy its files, or its used blocks, from the source ranges (bytes on the
 * source disk, in order). Everything it attaches is released before it
 * returns.
 */
async function copyVolume({ mode, prove }: CopyHow, vol: Volume, ranges: [number, number][], source: OpenDisk, target: TargetDisk, offset: number, size: number, label: string, work: string, progress: ProgressSink): Promise<Copied> {
  return withScope(async scope => {
    const dev = await attachTarget(scope, target, offset, size);
    const attachSource = ([off, len]: [number, number]) => attachLoop(scope, source.file, { offset: off, size: len, readOnly: true });
    if (vol.method === 'rebuild') {
      const facts = vol.facts!;
      const { path, why } = choosePath(mode, vol, size);
      if (mode === 'clone') progress.note(`${label}: ${path}: ${why}`);
      if (path === 'clone') {
        const sourceDev = await attachSource(ranges[0]);
        const used = await vol.module!.usedRanges!(sourceDev);
        const usedBytes = used.reduce((n, r) => n + r[1], 0);
        progress.phase(`clone ${label}`, usedBytes);
        // a resumed job's target may hold an earlier attempt: free space must read as zeros (no stale block)
        if (target.remote || !target.fresh) await run('blkdiscard', ['-f', '-z', dev]);
        const { written, proof } = await copyUsedRanges(sourceDev, dev, used, progress, { prove });
        if (proof) {
          // before the grow, which rewrites the file system's own metadata blocks
          progress.phase(`prove ${label}`, usedBytes);
          const at = await checkCopyProof(target.file, offset, proof, progress);
          if (at !== undefined) throw verifyFailed([`${label}: used blocks differ from the source's at byte ${at}`]);
        }
        if (size > vol.module!.clone!.sizeBytes(facts)) await vol.module!.clone!.grow({ scope, work, sourceDev, targetDev: dev, facts, progress });
        progress.end();
        return { bytesCopied: written, path, why, ...(proof ? { proven: true } : {}) };
      }
      progress.phase(`copy ${label}`, facts.usedBytes);
      // formatted before the source is attached: mkfs.btrfs refuses a UUID any visible device carries
      await vol.module!.format(dev, facts, size);
      const sourceDev = await attachSource(ranges[0]);
      const ahead = source.remote ? await readVolumeAhead(source.file, vol, sourceDev, ranges[0][0]) : undefined;
      try {
        await vol.module!.copy({ scope, work, sourceDev, targetDev: dev, facts, progress });
      } finally {
        await ahead?.stop();
      }
      progress.end();
      return { bytesCopied: facts.usedBytes, ...(mode === 'clone' ? { path, why } : {}) };
    }
    const total = Math.min(size, ranges.reduce((n, r) => n + r[1], 0));
    progress.phase(`blocks ${label}`, total);
    let at = 0, copied = 0;
    for (const r of ranges) {
      const len = Math.min(r[1], total - at);
      if (len <= 0) break;
      copied += await copyBlocks(await attachSource(r), 0, dev, at, len, progress);
      at += len;
    }
    progress.end();
    return { bytesCopied: copied };
  });
}

const volumeReport = (v: Volume, c: Copied) => ({
  fs: v.facts?.type ?? v.fsType, uuid: v.facts?.uuid, label: v.facts?.label,
  method: v.method === 'rebuild' ? (v.facts?.type === 'swap' ? 'signature' as const : c.path === 'clone' ? 'clone' as const : 'rebuild' as const) : 'blocks' as const,
  ...(c.why ? { why: c.why } : {}), ...(c.proven ? { proven: true } : {}), bytesCopied: c.bytesCopied,
});

/** The volumes whose copy proved itself, named as verify names them (volumeTag) */
export function provenVolumes(report: Pick<RebuildReport, 'partitions'> | undefined): Set<string> {
  const out = new Set<string>();
  for (const p of report?.partitions ?? []) {
    if (p.proven) out.add(volumeTag(p.number));
    for (const l of p.lvm?.lvs ?? []) if (l.proven) out.add(volumeTag(p.number, l.name));
  }
  return out;
}

/** Where each LV of an LVM part goes on the target partition of this many sectors. */
export function planLvs(sp: SourcePart, ss: number, targetSectors: number) {
  return planVolumeGroup(sp.lvm!.vg, lvSpaces(sp), targetSectors * ss / 512);
}

/** The target's PV: the same VG metadata, LVs in single ranges; then each LV copied like a partition. */
async function rebuildLvm(how: CopyHow, sp: SourcePart, np: { start: number; size: number }, ss: number, source: OpenDisk, target: TargetDisk, work: string, progress: ProgressSink): Promise<LvReport[]> {
  const { vg } = sp.lvm!;
  const pvSectors = np.size * ss / 512;
  const plan = planLvs(sp, ss, np.size);
  await withScope(async scope => {
    const dev = await attachTarget(scope, target, np.start * ss, np.size * ss);
    await writeVolumeGroup(dev, work, vg, targetMetadata(vg, plan, pvSectors, dev));
  });
  const ext = vg.extentSize * 512;
  const reports: LvReport[] = [];
  for (const p of plan.lvs) {
    throwIfAborted();
    const sl = sp.lvm!.lvs.find(l => l.lv.name === p.lv.name)!;
    const offset = np.start * ss + vg.pvs[0].peStart * 512 + p.start * ext;
    const copied = await copyVolume(how, sl, sl.ranges, source, target, offset, p.extents * ext, `${vg.name}/${p.lv.name}${sl.fsType ? ` ${sl.fsType}` : ''}`, work, progress);
    reports.push({ name: p.lv.name, lvUuid: p.lv.id, tags: p.lv.tags, ...volumeReport(sl, copied), sourceExtents: p.lv.extents, targetExtents: p.extents, targetOffset: offset });
  }
  return reports;
}

/**
 * Rebuild one partition of the target: its file system (or its blocks), or,
 * for an LVM physical volume, its volume group and every logical volume.
 */
export async function rebuildPartition(rl: RebuildLayout, sp: SourcePart, source: OpenDisk, target: TargetDisk, work: string, progress: ProgressSink): Promise<PartitionReport> {
  const ss = rl.sectorSize;
  const np = rl.newTable ? rl.newTable.partitions.find(p => p.number === sp.part.number)! : { ...sp.part, size: Math.floor(rl.targetSize / ss) };
  const where = { number: sp.part.number, sourceStart: sp.part.start, sourceSize: sp.part.size, targetStart: np.start, targetSize: np.size };
  if (sp.method === 'lvm') {
    const lvs = await rebuildLvm(rl, sp, np, ss, source, target, work, progress);
    const vg = sp.lvm!.vg;
    return { ...where, fs: 'LVM2_member', uuid: vg.pvs[0].id, method: 'lvm', lvm: { vg: vg.name, uuid: vg.id, extentSize: vg.extentSize * 512, lvs }, bytesCopied: lvs.reduce((n, l) => n + l.bytesCopied, 0) };
  }
  // the whole source partition (a block copy stops at the end of the target's)
  const copied = await copyVolume(rl, sp, [[sp.part.start * ss, sp.part.size * ss]], source, target, np.start * ss, np.size * ss, `p${sp.part.number}${sp.fsType ? ` ${sp.fsType}` : ''}`, work, progress);
  return { ...where, ...volumeReport(sp, copied) };
}

/**
 * Build the target under its partial name; the caller verifies and commits it.
 * The same pieces run as a job's checkpointed steps (jobs/steps.ts).
 */
export async function rebuild(owner: Scope, plan: ConvertPlan, source: OpenDisk, work: string, progress: ProgressSink): Promise<{ report: RebuildReport; target: NewTarget }> {
  const rl = await planRebuild(plan, source, work, progress);
  const reports: PartitionReport[] = [];
  let bootCode = { mbr: false, gapBytes: 0 };
  let target: NewTarget | undefined;
  await withScope(async session => {
    target = Object.assign(await createTarget(owner, session, plan.targetPath, plan.format, rl.targetSize, work), { fresh: true });
    bootCode = await prepareTarget(rl, source, target.file);
    for (const sp of partsToCopy(rl)) {
      throwIfAborted();
      reports.push(await rebuildPartition(rl, sp, source, target, work, progress));
    }
  });
  return { report: { partitionTable: rl.newTable?.label ?? 'none', targetSize: rl.targetSize, bootCode, partitions: reports, ...(rl.esp ? { esp: rl.esp } : {}) }, target: target! };
}
