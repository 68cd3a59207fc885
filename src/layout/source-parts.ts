// Look at each partition of an opened source: which file system it holds,
// whether Ferry rebuilds it or copies its blocks, and how small it may get.
import { attachLoop } from '../blockdev/loop.js';
import { probeDevice } from '../fs/detect.js';
import { fsModuleFor } from '../fs/index.js';
import type { FsFacts, FsModule } from '../fs/types.js';
import type { Scope } from '../util/scope.js';
import { isExtended, readTable, type Partition, type PartitionTable } from './table.js';
import type { PlannedPartition } from './plan.js';

export type Method = 'rebuild' | 'blocks' | 'container';

export interface SourcePart {
  part: Partition;
  method: Method;
  /** read-only loop device over the partition (not for extended containers) */
  dev?: string;
  module?: FsModule;
  facts?: FsFacts;
  /** blkid TYPE even when Ferry does not rebuild it */
  fsType?: string;
}

export interface SourceLayout {
  /** undefined: the whole disk is one file system, no partition table */
  table?: PartitionTable;
  parts: SourcePart[];
}

export async function readSourceLayout(scope: Scope, diskFile: string, diskSize: number, work: string): Promise<SourceLayout> {
  const table = await readTable(diskFile);
  const partitions: Partition[] = table?.partitions ?? [{ number: 0, start: 0, size: Math.floor(diskSize / 512), type: '' }];
  const ss = table?.sectorSize ?? 512;
  const parts: SourcePart[] = [];
  for (const part of partitions) {
    if (table && isExtended(table, part)) { parts.push({ part, method: 'container' }); continue; }
    const dev = await attachLoop(scope, diskFile, { offset: part.start * ss, size: part.size * ss, readOnly: true });
    const probe = await probeDevice(dev);
    const module = fsModuleFor(probe.type);
    if (!module) { parts.push({ part, method: 'blocks', dev, fsType: probe.type }); continue; }
    const facts = await module.probe(scope, dev, work, probe.type!);
    parts.push({ part, method: 'rebuild', dev, module, facts, fsType: probe.type });
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
