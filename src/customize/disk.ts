// Customizing a whole disk: open its file systems writable, find each Linux
// root and set the identity there. A disk with no Linux root is refused.
import type { OpenDisk } from '../blockdev/disk.js';
import { openFileSystems } from '../inspect/filesystems.js';
import { findLinuxRoots, readLinux } from '../inspect/linux/index.js';
import { nothingToRefit } from '../refit/refit.js';
import type { Scope } from '../util/scope.js';
import type { Change } from '../../converters/linux/change.js';
import { linuxExtrasProblem } from './linux.js';
import { customizeLinux, customizeProblem, customizeUnsupported, type Customization, type FirstBootReport } from './identity.js';

export async function customizeDisk(scope: Scope, disk: OpenDisk, work: string, c: Customization, firstBoot?: FirstBootReport): Promise<Change[]> {
  const { table, readable } = await openFileSystems(scope, disk.file, disk.size, work, { writable: true });
  const roots = await findLinuxRoots(readable);
  if (!roots.length) throw nothingToRefit(disk.describe);
  const changes: Change[] = [];
  for (const root of roots) {
    const { fs } = await readLinux(root, readable, table?.label, work);
    changes.push(...await customizeLinux(fs, c, firstBoot));
  }
  return changes;
}

/** Refuse, on the read-only image, what customizeDisk would fail on half-way (CUSTOMIZE_UNSUPPORTED). */
export async function checkCustomizable(scope: Scope, disk: OpenDisk, work: string, c: Customization, firstBoot: boolean): Promise<void> {
  const { table, readable } = await openFileSystems(scope, disk.file, disk.size, work);
  const roots = await findLinuxRoots(readable);
  if (!roots.length) throw nothingToRefit(disk.describe);
  for (const root of roots) {
    const { fs } = await readLinux(root, readable, table?.label, work);
    const problem = await customizeProblem(fs, c, firstBoot);
    if (problem) throw customizeUnsupported(problem);
    const refused = await linuxExtrasProblem(fs, c.authorizedKey, c.timezone);
    if (refused) throw refused;
  }
}
