// Partition tables read and written with sfdisk (MBR incl. extended/logical, GPT).
import { run } from '../util/exec.js';

export type Label = 'dos' | 'gpt';

export interface Partition {
  /** partition number as the OS names it (logicals start at 5) */
  number: number;
  /** in sectors */
  start: number;
  size: number;
  /** MBR: hex id like "83"; GPT: type GUID */
  type: string;
  uuid?: string;
  name?: string;
  attrs?: string;
  bootable?: boolean;
}

export interface PartitionTable {
  label: Label;
  id: string;
  sectorSize: number;
  firstLba?: number;
  partitions: Partition[];
}

interface SfdiskJson {
  partitiontable: {
    label: Label; id: string; device: string; sectorsize?: number; firstlba?: number;
    partitions?: { node: string; start: number; size: number; type: string; uuid?: string; name?: string; attrs?: string; bootable?: boolean }[];
  };
}

export const EXTENDED_TYPES = new Set(['5', 'f', '85']);
export const isExtended = (t: PartitionTable, p: Partition) => t.label === 'dos' && EXTENDED_TYPES.has(p.type.toLowerCase());

/** Read the table of a disk (a file or a device). Returns undefined when there is none. */
export async function readTable(disk: string): Promise<PartitionTable | undefined> {
  const r = await run('sfdisk', ['--json', disk], { okCodes: [1] });
  if (r.exitCode !== 0 || !r.stdout.trim()) return undefined;
  const t = (JSON.parse(r.stdout) as SfdiskJson).partitiontable;
  // sfdisk lists an MBR slot of size 0 when any of its other bytes is set (a CHS value); like the kernel, that is no partition
  const partitions = (t.partitions ?? []).filter(p => p.size > 0).map(p => ({
    number: Number(/(\d+)$/.exec(p.node)?.[1] ?? 0),
    start: p.start, size: p.size, type: p.type,
    uuid: p.uuid, name: p.name, attrs: p.attrs, bootable: p.bootable,
  }));
  return { label: t.label, id: t.id, sectorSize: t.sectorsize ?? 512, firstLba: t.firstlba, partitions };
}

const quote = (s: string) => `"${s.replace(/"/g, '')}"`;

/** The sfdisk script that recreates the table (same ids, types, names, starts). */
export function tableScript(t: PartitionTable, disk: string): string {
  const lines = [`label: ${t.label}`, `label-id: ${t.id}`, 'unit: sectors', `sector-size: ${t.sectorSize}`];
  if (t.label === 'gpt' && t.firstLba) lines.push(`first-lba: ${t.firstLba}`);
  lines.push('');
  // Naming each line after its partition node keeps the numbers (gaps included).
  const sep = /\d$/.test(disk) ? 'p' : '';
  const ordered = [...t.partitions].sort((a, b) => a.number - b.number);
  for (const p of ordered) {
    const f = [`start=${p.start}`, `size=${p.size}`, `type=${p.type}`];
    if (p.uuid) f.push(`uuid=${p.uuid}`);
    if (p.name) f.push(`name=${quote(p.name)}`);
    if (p.attrs) f.push(`attrs=${quote(p.attrs)}`);
    if (p.bootable) f.push('bootable');
    lines.push(`${disk}${sep}${p.number} : ${f.join(', ')}`);
  }
  return lines.join('\n') + '\n';
}

export async function writeTable(disk: string, t: PartitionTable): Promise<void> {
  await run('sfdisk', ['--no-reread', '--no-tell-kernel', '--wipe', 'never', '-q', disk], { input: tableScript(t, disk) });
}
