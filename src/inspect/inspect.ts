// `ferry inspect`: what a disk holds — its file systems and every operating
// system on them — read statically. The source is opened read-only, file
// systems are mounted read-only without journal replay, and no guest program
// runs. A part that cannot be read becomes an error entry in the report; only
// a source that cannot be opened at all fails the command.
import { openSource } from '../sources/open.js';
import { workDir } from '../blockdev/mount.js';
import { notRoot } from '../errors.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { reportingLostSources } from '../sources/watchdog.js';
import { withScope } from '../util/scope.js';
import { openFileSystems } from './filesystems.js';
import { findLinuxRoots, inspectLinux } from './linux/index.js';
import type { InspectReport, OperatingSystem } from './report.js';
import { findWindowsRoot, inspectWindows } from './windows/index.js';

export async function inspect(spec: string): Promise<InspectReport> {
  if (process.getuid?.() !== 0) throw notRoot();
  const ep = parseEndpoint(spec);
  return reportingLostSources([ep], () => withScope(async scope => {
    const work = await workDir(scope);
    // a blank or unrecognisable disk is still inspected: it just has no file systems
    const disk = await openSource(scope, ep, work, 'source', undefined, { allowBlank: true });
    const { table, entries, readable } = await openFileSystems(scope, disk.file, disk.size, work);
    const systems: OperatingSystem[] = [];
    for (const root of await findLinuxRoots(readable)) systems.push(await inspectLinux(root, readable, table?.label, work));
    for (const f of readable) {
      if (f.entry.type !== 'ntfs') continue;
      const systemRoot = await findWindowsRoot(f.dir);
      if (systemRoot) systems.push(await inspectWindows(f.dir, systemRoot, f.entry.partition, work));
    }
    const report: InspectReport = {
      source: spec, format: disk.sourceFormat ?? disk.format, virtualSize: disk.size,
      partitionTable: table ? { label: table.label, id: table.id } : null,
      fileSystems: entries, operatingSystems: systems, inspectedAt: new Date().toISOString(),
    };
    if (!systems.length) report.note = entries.some(e => e.type) ? 'no operating system found' : 'no partition table or file system found; no operating system';
    return report;
  }));
}
