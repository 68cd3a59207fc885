// Size planning: fit the source's partitions onto a target disk of another size.
// Growing: the last data partition takes the extra space. Shrinking: data
// partitions give back what their file systems do not need, from the last one
// back. Partitions after a changed one move by the same amount, so the order,
// gaps and alignment of the source stay as they were.
import { doesNotFit } from '../errors.js';
import { isExtended, type Partition, type PartitionTable } from './table.js';

/** data: grows and shrinks; swap: may shrink, never grows; fixed: copied as it is */
export type Role = 'data' | 'swap' | 'fixed';

export interface PlannedPartition extends Partition {
  role: Role;
  /** smallest size (sectors) the rebuilt file system can live in; data only */
  minSize?: number;
}

const ALIGN = 2048; // 1 MiB in 512-byte sectors

/** First sector after the last usable one for a disk of this many sectors. */
export function usableEnd(label: PartitionTable['label'], totalSectors: number): number {
  return label === 'gpt' ? totalSectors - 33 : totalSectors;
}

export function planLayout(table: PartitionTable, parts: PlannedPartition[], sourceBytes: number, targetBytes: number): PartitionTable {
  const ss = table.sectorSize;
  const srcEnd = usableEnd(table.label, Math.floor(sourceBytes / ss));
  const dstEnd = usableEnd(table.label, Math.floor(targetBytes / ss));
  const ext = parts.find(p => isExtended(table, p));
  const plain = parts.filter(p => p !== ext).map(p => ({ ...p })).sort((a, b) => a.start - b.start);
  const lastEnd = plain.reduce((m, p) => Math.max(m, p.start + p.size), 0);

  const resize = (i: number, delta: number) => {
    plain[i].size += delta;
    for (let j = i + 1; j < plain.length; j++) plain[j].start += delta;
  };

  if (dstEnd > srcEnd) {
    const grow = Math.floor((dstEnd - srcEnd) / ALIGN) * ALIGN;
    const last = plain.map(p => p.role).lastIndexOf('data');
    if (last >= 0 && grow > 0) resize(last, grow);
  } else if (lastEnd > dstEnd) {
    let need = lastEnd - dstEnd;
    for (let i = plain.length - 1; i >= 0 && need > 0; i--) {
      const p = plain[i];
      if (p.role === 'fixed' || p.minSize === undefined) continue;
      const spare = Math.floor((p.size - p.minSize) / ALIGN) * ALIGN;
      if (spare <= 0) continue;
      const take = Math.min(spare, Math.ceil(need / ALIGN) * ALIGN);
      resize(i, -take);
      need -= take;
    }
    if (need > 0) throw doesNotFit(targetBytes + need * ss, targetBytes);
  }

  const out: Partition[] = plain.map(({ role: _r, minSize: _m, ...p }) => p);
  if (ext) {
    const logicals = plain.filter(p => p.number >= 5);
    const origLogicals = parts.filter(p => p.number >= 5).sort((a, b) => a.start - b.start);
    let start = ext.start, size = ext.size;
    if (logicals.length) {
      const lead = origLogicals[0].start - ext.start;
      const tail = ext.start + ext.size - (origLogicals.at(-1)!.start + origLogicals.at(-1)!.size);
      start = logicals[0].start - lead;
      const lastLogical = logicals.at(-1)!;
      size = lastLogical.start + lastLogical.size + Math.max(0, Math.min(tail, dstEnd - (lastLogical.start + lastLogical.size))) - start;
    }
    const { role: _r, minSize: _m, ...e } = ext;
    out.push({ ...e, start, size });
  }
  return { ...table, partitions: out.sort((a, b) => a.number - b.number) };
}
