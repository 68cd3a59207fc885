// Boot code that lives outside partitions: the MBR's 440 bytes and the gap
// between the partition table and the first partition (GRUB's core.img on
// BIOS systems). sfdisk has written the new table; these bytes go around it.
import { readBytes, writeBytes } from '../blockdev/disk.js';
import type { PartitionTable } from '../layout/table.js';

const MBR_CODE = 440;

/** Byte range of the post-table gap, or undefined when there is none. */
export function gapRange(table: PartitionTable): { offset: number; length: number } | undefined {
  const ss = table.sectorSize;
  // GPT: header at LBA 1 and 128 entries of 128 bytes; the gap starts after them.
  const firstFree = table.label === 'gpt' ? 2 + Math.ceil((128 * 128) / ss) : 1;
  const firstStart = Math.min(...table.partitions.map(p => p.start));
  if (!isFinite(firstStart) || firstStart <= firstFree) return undefined;
  return { offset: firstFree * ss, length: (firstStart - firstFree) * ss };
}

export async function copyBootCode(sourceFile: string, sourceTable: PartitionTable, targetFile: string): Promise<{ mbr: boolean; gapBytes: number }> {
  const code = await readBytes(sourceFile, 0, MBR_CODE);
  const hasCode = code.some(b => b !== 0);
  if (hasCode) await writeBytes(targetFile, 0, code);
  const gap = gapRange(sourceTable);
  let gapBytes = 0;
  if (gap) {
    const bytes = await readBytes(sourceFile, gap.offset, gap.length);
    if (bytes.some(b => b !== 0)) { await writeBytes(targetFile, gap.offset, bytes); gapBytes = bytes.length; }
  }
  return { mbr: hasCode, gapBytes };
}
