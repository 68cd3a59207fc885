// `ferry info`: what a disk is — format, size, partition table, file systems
// and how full they are — read without changing a byte.
import type { OpenDisk } from './blockdev/disk.js';
import { openSource } from './sources/open.js';
import { reportingLostSources } from './sources/watchdog.js';
import { workDir } from './blockdev/mount.js';
import { readSourceLayout, type SourcePart } from './layout/source-parts.js';
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
  partitions: { number: number; start: number; size: number; type: string; name?: string; fs?: string; uuid?: string; label?: string; usedBytes?: number; features?: string[]; method: string; lvm?: LvmInfo }[];
}

/** An LVM physical volume's volume group and its logical volumes (each LV's file system like a partition's). */
export interface LvmInfo {
  vg: string; uuid: string; pvUuid: string; tags: string[]; extentSize: number;
  lvs: { name: string; uuid: string; tags: string[]; size: number; ranges: number; fs?: string; fsUuid?: string; label?: string; usedBytes?: number; method: string }[];
}

function lvmInfo(p: SourcePart): LvmInfo | undefined {
  if (!p.lvm) return undefined;
  const { vg, lvs } = p.lvm;
  return {
    vg: vg.name, uuid: vg.id, pvUuid: vg.pvs[0].id, tags: vg.tags, extentSize: vg.extentSize * 512,
    lvs: lvs.map(l => ({
      name: l.lv.name, uuid: l.lv.id, tags: l.lv.tags, size: l.lv.extents * vg.extentSize * 512, ranges: l.ranges.length,
      fs: l.facts?.type ?? l.fsType, fsUuid: l.facts?.uuid, label: l.facts?.label, usedBytes: l.facts?.usedBytes, method: l.method,
    })),
  };
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
      features: p.facts ? p.module?.features?.(p.facts) : undefined, method: p.method, lvm: lvmInfo(p),
    })),
  };
}
