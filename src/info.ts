// `ferry info`: what a disk is — format, size, partition table, file systems
// and how full they are — read without changing a byte.
import { openSource, type OpenDisk } from './blockdev/disk.js';
import { reportingLostSources } from './sources/watchdog.js';
import { workDir } from './blockdev/mount.js';
import { readSourceLayout } from './layout/source-parts.js';
import { parseEndpoint } from './sources/endpoint.js';
import { withScope } from './util/scope.js';
import { notRoot } from './errors.js';

export interface DiskInfo {
  source: string;
  format: string;
  virtualSize: number;
  actualSize?: number;
  backing?: string;
  partitionTable: { label: string; id: string } | null;
  partitions: { number: number; start: number; size: number; type: string; name?: string; fs?: string; uuid?: string; label?: string; usedBytes?: number; features?: string[]; method: string }[];
}

export async function info(spec: string): Promise<DiskInfo> {
  if (process.getuid?.() !== 0) throw notRoot();
  const ep = parseEndpoint(spec);
  return reportingLostSources([ep], () => withScope(async scope => {
    const work = await workDir(scope);
    const disk = await openSource(scope, ep, work);
    return describeDisk(spec, disk, work);
  }));
}

/** The info of a disk already opened (also what `ferry probe` shows for each LUN or export). */
export async function describeDisk(spec: string, disk: OpenDisk, work: string): Promise<DiskInfo> {
  const layout = await readSourceLayout(disk.file, disk.size, work);
  const ss = layout.table?.sectorSize ?? 512;
  return {
    source: spec, format: disk.sourceFormat ?? disk.format, virtualSize: disk.size, actualSize: disk.info?.actualSize, backing: disk.info?.backingFilename,
    partitionTable: layout.table ? { label: layout.table.label, id: layout.table.id } : null,
    partitions: layout.parts.map(p => ({
      number: p.part.number, start: p.part.start * ss, size: p.part.size * ss, type: p.part.type, name: p.part.name,
      fs: p.facts?.type ?? p.fsType, uuid: p.facts?.uuid, label: p.facts?.label, usedBytes: p.facts?.usedBytes,
      features: p.facts ? p.module?.features?.(p.facts) : undefined, method: p.method,
    })),
  };
}
