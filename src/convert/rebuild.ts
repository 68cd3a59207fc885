// The rebuild path: same partitions and file systems in a fresh sparse image,
// filled with files, not sectors. Source opened read-only from start to end.
import { attachLoop } from '../blockdev/loop.js';
import { startReadAhead } from '../sources/read-ahead.js';
import { createTarget, type NewTarget, type OpenDisk } from '../blockdev/disk.js';
import { copyBlocks } from '../fs/blocks.js';
import { planLayout } from '../layout/plan.js';
import { attachPart, readSourceLayout, toPlanned, type SourceLayout, type SourcePart } from '../layout/source-parts.js';
import { writeTable, type PartitionTable } from '../layout/table.js';
import { throwIfAborted } from '../util/abort.js';
import type { ProgressSink } from '../util/progress.js';
import { withScope, type Scope } from '../util/scope.js';
import { copyBootCode } from './boot-code.js';
import { checkSpace, type ConvertPlan } from './options.js';
import { doesNotFit, ntfsNotClean } from '../errors.js';
import { ntfsUncleanState } from '../fs/ntfs.js';
import { gainsEsp, uefiTable } from './to-uefi.js';

export interface PartitionReport {
  number: number;
  fs?: string;
  uuid?: string;
  label?: string;
  method: 'rebuild' | 'blocks' | 'signature';
  sourceStart: number;
  sourceSize: number;
  targetStart: number;
  targetSize: number;
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

const estimateOutput = (layout: SourceLayout, ss: number) =>
  layout.parts.reduce((n, p) => n + (p.method === 'rebuild' ? p.facts!.usedBytes : p.method === 'blocks' ? p.part.size * ss : 0), 0);

/** What the rebuild decided before writing anything: the source's parts and the target's table. */
export interface RebuildLayout {
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
    const min = only.module && only.facts ? only.module.minBytes(only.facts) : source.size;
    if (targetSize < Math.min(min, source.size)) throw doesNotFit(Math.min(min, source.size), targetSize);
  }
  // before anything is written: a volume Windows did not close is refused unless asked for as it is
  for (const p of layout.parts) {
    const state = ntfsUncleanState(p.facts);
    if (!state.length) continue;
    if (!plan.forceNtfsDirty) throw ntfsNotClean(p.part.number, state);
    progress.note(`partition ${p.part.number}: NTFS volume is ${state.join(' and ')}; copied as it is (--force-ntfs-dirty)`);
  }
  if (opts.checkSpace !== false) await checkSpace(plan.targetPath, estimateOutput(layout, ss));

  for (const p of layout.parts) {
    if (p.method === 'blocks') progress.note(`partition ${p.part.number}: ${p.fsType ? `file system ${p.fsType} is not rebuilt` : 'no known file system'}; copying its used blocks`);
  }
  return { layout, sectorSize: ss, targetSize, newTable, esp: esp && { number: esp.number, start: esp.start, size: esp.size } };
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

/** A network source's partition: its used ranges read into memory alongside the copy, which asks for them piece by piece. */
async function readPartitionAhead(diskFile: string, sp: SourcePart, sourceDev: string, ss: number): Promise<{ stop(): Promise<number> } | undefined> {
  const ranges = await sp.module?.usedRanges?.(sourceDev).catch(() => undefined);
  return ranges && startReadAhead(diskFile, sp.part.start * ss, ranges);
}

/**
 * Format one partition of the target alike and copy its files (or its used
 * blocks) from the source. Everything it attaches is released before it
 * returns, so a finished partition is complete on the target file.
 */
export async function rebuildPartition(rl: RebuildLayout, sp: SourcePart, source: OpenDisk, target: Pick<OpenDisk, 'file' | 'format' | 'remote'>, work: string, progress: ProgressSink): Promise<PartitionReport> {
  const ss = rl.sectorSize;
  const np = rl.newTable ? rl.newTable.partitions.find(p => p.number === sp.part.number)! : { ...sp.part, size: Math.floor(rl.targetSize / ss) };
  const offset = np.start * ss, size = np.size * ss;
  return withScope(async partScope => {
    // no direct I/O onto a machine's disk over NBD: its small unaligned writes were read-modify-written
    // under the server's 4 KiB block size and some were lost (mkfs's journal inode came back corrupt)
    const dev = await attachLoop(partScope, target.file, { offset, size, readOnly: false, directIo: target.format === 'raw' && !target.remote });
    const label = `p${sp.part.number}${sp.fsType ? ` ${sp.fsType}` : ''}`;
    let bytesCopied = 0;
    if (sp.method === 'rebuild') {
      const facts = sp.facts!;
      progress.phase(`copy ${label}`, facts.usedBytes);
      // formatted before the source partition is attached: mkfs.btrfs refuses a UUID any visible device carries
      await sp.module!.format(dev, facts, size);
      const sourceDev = await attachPart(partScope, source.file, sp.part, ss);
      const ahead = source.remote ? await readPartitionAhead(source.file, sp, sourceDev, ss) : undefined;
      try {
        await sp.module!.copy({ scope: partScope, work, sourceDev, targetDev: dev, facts, progress });
      } finally {
        await ahead?.stop();
      }
      bytesCopied = facts.usedBytes;
    } else {
      const len = Math.min(sp.part.size, np.size) * ss;
      progress.phase(`blocks ${label}`, len);
      bytesCopied = await copyBlocks(await attachPart(partScope, source.file, sp.part, ss), 0, dev, 0, len, progress);
    }
    progress.end();
    return {
      number: sp.part.number, fs: sp.facts?.type ?? sp.fsType, uuid: sp.facts?.uuid, label: sp.facts?.label,
      method: sp.method === 'blocks' ? 'blocks' : sp.facts?.type === 'swap' ? 'signature' : 'rebuild',
      sourceStart: sp.part.start, sourceSize: sp.part.size, targetStart: np.start, targetSize: np.size, bytesCopied,
    };
  });
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
    target = await createTarget(owner, session, plan.targetPath, plan.format, rl.targetSize, work);
    bootCode = await prepareTarget(rl, source, target.file);
    for (const sp of partsToCopy(rl)) {
      throwIfAborted();
      reports.push(await rebuildPartition(rl, sp, source, target, work, progress));
    }
  });
  return { report: { partitionTable: rl.newTable?.label ?? 'none', targetSize: rl.targetSize, bootCode, partitions: reports, ...(rl.esp ? { esp: rl.esp } : {}) }, target: target! };
}
