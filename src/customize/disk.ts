// Customizing a whole disk: open its file systems writable, find each Linux
// root and Windows system root and set the identity there. A disk with
// neither is refused. Everything that can fail without writing (unknown
// tools, unreadable hives, an adapter the guest lacks) is checked first.
import type { OpenDisk } from '../blockdev/disk.js';
import { openFileSystems } from '../inspect/filesystems.js';
import { findLinuxRoots, readLinux } from '../inspect/linux/index.js';
import { nothingToRefit } from '../refit/refit.js';
import type { Scope } from '../util/scope.js';
import type { Change } from '../../converters/linux/change.js';
import { linuxExtrasProblem } from './linux.js';
import { customizeLinux, customizeProblem, customizeUnsupported, type Customization, type FirstBootReport } from './identity.js';
import { placeRunLinux, runLinuxProblem } from './run-linux.js';
import { ToolStore, type Tool } from './tools.js';
import { applyWindowsCustomization, planWindowsGuests } from './windows.js';

/** the registered tools --run names (TOOL_NOT_FOUND for one the store lacks) */
async function runTools(c: Customization, store: ToolStore): Promise<Tool[]> {
  const out: Tool[] = [];
  for (const ref of c.run ?? []) out.push(await store.resolve(ref));
  return out;
}

export async function customizeDisk(scope: Scope, disk: OpenDisk, work: string, c: Customization, firstBoot?: FirstBootReport): Promise<Change[]> {
  // an unknown tool is refused before the disk is opened writable (a writable mount alone changes it)
  const store = new ToolStore();
  const tools = await runTools(c, store);
  const { table, readable } = await openFileSystems(scope, disk.file, disk.size, work, { writable: true });
  const windows = await planWindowsGuests(readable, work, c, store);
  const roots = await findLinuxRoots(readable);
  if (!roots.length && !windows.length) throw nothingToRefit(disk.describe);
  const linux = [];
  for (const root of roots) {
    const { fs } = await readLinux(root, readable, table?.label, work);
    const problem = (c.domainJoin ? '--domain-join is for Windows guests' : undefined) ?? await runLinuxProblem(fs, tools);
    if (problem) throw customizeUnsupported(problem);
    linux.push(fs);
  }
  const changes: Change[] = [];
  for (const fs of linux) {
    changes.push(...await customizeLinux(fs, c, firstBoot));
    if (tools.length) changes.push(...await placeRunLinux(fs, tools, store));
  }
  for (const w of windows) changes.push(...await applyWindowsCustomization(w, work));
  return changes;
}

/** Refuse, on the read-only image, what customizeDisk would fail on half-way (CUSTOMIZE_UNSUPPORTED). */
export async function checkCustomizable(scope: Scope, disk: OpenDisk, work: string, c: Customization, firstBoot: boolean): Promise<void> {
  const { table, readable } = await openFileSystems(scope, disk.file, disk.size, work);
  const store = new ToolStore();
  const tools = await runTools(c, store);
  const windows = await planWindowsGuests(readable, work, c, store);
  const roots = await findLinuxRoots(readable);
  if (!roots.length && !windows.length) throw nothingToRefit(disk.describe);
  for (const root of roots) {
    const { fs } = await readLinux(root, readable, table?.label, work);
    const problem = (c.domainJoin ? '--domain-join is for Windows guests' : undefined) ?? await customizeProblem(fs, c, firstBoot) ?? await runLinuxProblem(fs, tools);
    if (problem) throw customizeUnsupported(problem);
    const refused = await linuxExtrasProblem(fs, c.authorizedKey, c.timezone);
    if (refused) throw refused;
  }
}
