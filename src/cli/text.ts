// Human-readable summaries for the terminal.
import type { ConvertResult } from '../convert/convert.js';
import type { DiskInfo } from '../info.js';
import { formatChanges } from './refit.js';
import { formatCustomizeChanges } from './customize.js';

export const human = (n: number) => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};

export function formatConvert(r: ConvertResult): string {
  const lines = [`created ${r.target} (${r.format}, ${human(r.virtualSize)} virtual, ${human(r.allocatedBytes)} allocated) in ${r.seconds.toFixed(1)} s`];
  for (const p of r.layout?.partitions ?? []) {
    lines.push(`  p${p.number} ${(p.fs ?? '-').padEnd(6)} ${p.method.padEnd(9)} ${human(p.targetSize * 512).padStart(10)} ${p.uuid ?? ''}`);
    for (const l of p.lvm?.lvs ?? []) lines.push(`    ${p.lvm!.vg}/${l.name} ${(l.fs ?? '-').padEnd(6)} ${l.method.padEnd(9)} ${human(l.targetExtents * p.lvm!.extentSize).padStart(10)} ${l.uuid ?? ''}`);
  }
  if (r.layout?.bootCode.mbr || r.layout?.bootCode.gapBytes) lines.push(`  boot code: MBR ${r.layout.bootCode.mbr ? 'copied' : 'empty'}, gap ${human(r.layout.bootCode.gapBytes)}`);
  const proven = (r.verify?.filesystems ?? []).filter(f => f.by === 'copy proof').map(f => f.lv ?? `p${f.number}`);
  lines.push(!r.verified ? '  not verified (--no-verify)'
    : `  verified: equivalent to the source${proven.length ? ` (${proven.join(', ')}: used blocks hashed as copied and read back from the target)` : ''}`);
  if (r.inventory) lines.push(`  inventory kept: ${r.inventory}`);
  if (r.refit) lines.push(...formatChanges(r.refit).map(l => `  ${l}`));
  if (r.customized) lines.push(`  customized: ${r.customized.length} change(s)`, ...formatCustomizeChanges(r.customized).map(l => `  ${l}`));
  return lines.join('\n') + '\n';
}

export function formatInfo(r: DiskInfo): string {
  const lines = [`${r.source}: ${r.format}, ${human(r.virtualSize)}${r.actualSize ? ` (${human(r.actualSize)} on disk)` : ''}`,
    `partition table: ${r.partitionTable ? `${r.partitionTable.label} ${r.partitionTable.id}` : 'none'}`];
  for (const p of r.partitions) {
    lines.push(`  p${p.number} start ${p.start} size ${human(p.size)} type ${p.type}${p.fs ? ` ${p.fs}` : ''}${p.uuid ? ` UUID=${p.uuid}` : ''}${p.label ? ` LABEL=${p.label}` : ''}${p.usedBytes !== undefined ? ` used ${human(p.usedBytes)}` : ''}`);
    if (p.lvm) lines.push(`    volume group ${p.lvm.vg} UUID=${p.lvm.uuid}`);
    for (const l of p.lvm?.lvs ?? []) {
      lines.push(`    ${p.lvm!.vg}/${l.name} size ${human(l.size)}${l.fs ? ` ${l.fs}` : ''}${l.fsUuid ? ` UUID=${l.fsUuid}` : ''}${l.label ? ` LABEL=${l.label}` : ''}${l.usedBytes !== undefined ? ` used ${human(l.usedBytes)}` : ''}${l.tags.length ? ` tags ${l.tags.join(',')}` : ''}`);
    }
  }
  return lines.join('\n') + '\n';
}
