// Look at each partition of an opened source: which file system it holds,
// whether Ferry rebuilds it or copies its blocks, and how small it may get.
import { attachLoop } from '../blockdev/loop.js';
import { probeDevice } from '../fs/detect.js';
import { fsModuleFor } from '../fs/index.js';
import { looksLikeNtfs } from '../fs/ntfs.js';
import type { FsFacts, FsModule } from '../fs/types.js';
import { withScope, type Scope } from '../util/scope.js';
import { isExtended, readTable, type Partition, type PartitionTable } from './table.js';
import type { PlannedPartition } from './plan.js';

export type Method = 'rebuild' | 'blocks' | 'container';

export interface SourcePart {
  part: Partition;
  method: Method;
  module?: FsModule;
  facts?: FsFacts;
  /** blkid TYPE even when Ferry does not rebuild it */
  fsType?: string;
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

export async function readSourceLayout(diskFile: string, diskSize: number, work: string): Promise<SourceLayout> {
  const table = await readTable(diskFile);
  const partitions: Partition[] = table?.partitions ?? [{ number: 0, start: 0, size: Math.floor(diskSize / 512), type: '' }];
  const ss = table?.sectorSize ?? 512;
  const parts: SourcePart[] = [];
  for (const part of partitions) {
    if (table && isExtended(table, part)) { parts.push({ part, method: 'container' }); continue; }
    parts.push(await withScope(async probeScope => {
      const dev = await attachPart(probeScope, diskFile, part, ss);
      const probe = await probeDevice(dev);
      // an NTFS boot sector blkid no longer accepts is damaged NTFS, not unknown data: its module says why
      if (!probe.type && await looksLikeNtfs(dev)) probe.type = 'ntfs';
      const module = fsModuleFor(probe.type);
      if (!module) return { part, method: 'blocks' as const, fsType: probe.type };
      const facts = await module.probe(probeScope, dev, work, probe.type!);
      return { part, method: 'rebuild' as const, module, facts, fsType: probe.type };
    }));
  }
  return { table, parts };
}

export function toPlanned(parts: SourcePart[], sectorSize: number): PlannedPartition[] {
  return parts.map(p => ({
    ...p.part,
    role: p.method !== 'rebuild' ? 'fixed' : p.facts?.type === 'swap' ? 'swap' : 'data',
    minSize: p.module && p.facts ? Math.ceil(p.module.minBytes(p.facts) / sectorSize) : undefined,
  }));
}
