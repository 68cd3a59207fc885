// Re-fit every operating system on a disk to a hardware profile. Two phases:
// plan (read what each guest has and what the profile needs; a driver that
// neither the guest nor drivers-db has stops everything here, before a byte
// is written) and apply (on a writable target only, never on a source).
import { copyFile, mkdir, chmod } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { OpenDisk } from '../blockdev/disk.js';
import { run } from '../util/exec.js';
import type { Scope } from '../util/scope.js';
import { driverMissing, espNotFat, FerryError, usageError } from '../errors.js';
import { DriverStore } from '../drivers/store.js';
import { chooseFile, missingDriverError } from '../drivers/select.js';
import { openFileSystems } from '../inspect/filesystems.js';
import type { GuestFs } from '../inspect/guest-fs.js';
import { findLinuxRoots, readLinux } from '../inspect/linux/index.js';
import type { FileSystemEntry, LinuxOs } from '../inspect/report.js';
import type { Profile } from '../profiles/profiles.js';
import type { Change } from '../../converters/linux/change.js';
import { applyLinuxRefit, planLinuxRefit, type LinuxPlan } from '../../converters/linux/index.js';
import { installRemovableLoader, isEspPartition, type Esp } from '../../converters/linux/efi-loader.js';
import { applyWindowsRefit, planWindowsRefit, type WindowsPlan } from '../../converters/windows/index.js';
import { findWindowsRoot, inspectWindows } from '../inspect/windows/index.js';

export interface RefitOptions {
  /** the new NIC's MAC; bindings to the old one are moved to it */
  mac?: string;
  /** PCI modalias strings of a physical destination (profile `physical`) */
  modaliases?: string[];
}

export interface RefitResult {
  profile: string;
  systems: { type: string; name: string; partition: number }[];
  changes: Change[];
  /** problems that do not stop the guest from booting (e.g. a network driver drivers-db lacks, queued for nothing) */
  warnings?: string[];
}

/** The re-fit options a user gives (convert --profile, reconfigure), checked before anything is opened. */
export function checkRefitRequest(profile: Profile, mac: string | undefined, hasInventory: boolean): void {
  if (mac && !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw usageError(`--mac ${mac} is not a MAC address; write it like 52:54:00:12:34:56`);
  if (profile.fromInventory && !hasInventory) throw usageError(`profile ${profile.name} is derived from the machine's inventory; give --inventory FILE`);
}

export const nothingToRefit = (what: string) =>
  new FerryError('NO_OS_FOUND', 3, `${what} holds no operating system Ferry can re-fit (no Linux root with /etc/os-release and no Windows system root was found)`, { image: what });

interface Planned { os: LinuxOs; fs: GuestFs; plan: LinuxPlan; partition: number; root: string }

async function plan(scope: Scope, disk: OpenDisk, work: string, profile: Profile, o: RefitOptions, writable: boolean): Promise<{ planned: Planned[]; windows: WindowsPlan[]; fileSystems: FileSystemEntry[]; esp?: Esp }> {
  const { table, entries, readable } = await openFileSystems(scope, disk.file, disk.size, work, { writable });
  // UEFI firmware reads only FAT: an ESP holding anything else cannot boot, whatever the re-fit does
  const espPart = table?.partitions.find(p => isEspPartition(table, p));
  const espEntry = espPart && entries.find(e => e.partition === espPart.number);
  if (espEntry && espEntry.type !== 'vfat') throw espNotFat(espEntry.partition, espEntry.type);
  const espDir = espEntry && readable.find(r => r.entry === espEntry)?.dir;
  const esp = espEntry && espDir ? { diskFile: disk.file, offset: espEntry.start, size: espEntry.size, dir: espDir } : undefined;
  const planned: Planned[] = [];
  for (const root of await findLinuxRoots(readable)) {
    const { os, fs } = await readLinux(root, readable, table?.label, work);
    const p = await planLinuxRefit(fs, os, profile, o.modaliases);
    const unclaimed = p.kernels.find(k => k.unclaimed?.length);
    if (unclaimed) throw pciDriverMissing(unclaimed.kver, unclaimed.unclaimed!, os);
    await fillFromDriversDb(os, p);
    planned.push({ os, fs, plan: p, partition: root.entry.partition, root: root.dir });
  }
  const windows: WindowsPlan[] = [];
  for (const r of readable.filter(x => x.entry.type === 'ntfs')) {
    const systemRoot = await findWindowsRoot(r.dir);
    if (!systemRoot) continue;
    const os = await inspectWindows(r.dir, systemRoot, r.entry.partition, work);
    const store = DriverStore.open();
    try { windows.push(await planWindowsRefit({ dir: r.dir, os, profile, drivers: store })); } finally { store.close(); }
  }
  if (!planned.length && !windows.length) throw nothingToRefit(disk.describe);
  return { planned, windows, fileSystems: entries, esp };
}

/** `pci:v00008086d000010D3…` → `8086:10d3` */
const pciId = (modalias: string) => {
  const m = /^pci:v0000([0-9A-F]{4})d0000([0-9A-F]{4})/i.exec(modalias);
  return m ? `${m[1]}:${m[2]}`.toLowerCase() : modalias;
};

/** a device of the machine that no driver of the guest's kernel claims: it would not boot, or not reach the network */
function pciDriverMissing(kver: string, modaliases: string[], os: LinuxOs): FerryError {
  const ids = modaliases.map(pciId);
  const pkg = os.packages.list.find(x => x.name === `linux-image-${kver}`);
  return driverMissing(`driver for PCI device${ids.length > 1 ? 's' : ''} ${ids.join(', ')} in kernel ${kver} (no module of the guest's kernel claims ${modaliases.join(', ')})`,
    `a driver package built for kernel ${kver}${pkg ? ` (the guest has ${pkg.name} ${pkg.version})` : ''} that supports PCI ${ids.join(', ')}`,
    { pci: ids, modaliases, kernel: kver });
}

/** a module the guest's kernel lacks comes from drivers-db, built for exactly that kernel; else DRIVER_MISSING */
async function fillFromDriversDb(os: LinuxOs, p: LinuxPlan): Promise<void> {
  const missing = p.kernels.flatMap(k => k.missing.map(name => ({ k, name })));
  if (!missing.length) return;
  const store = DriverStore.open();
  try {
    for (const { k, name } of missing) {
      const want = { component: name, osFamily: 'linux' as const, kernel: k.kver, arch: os.arch ?? 'x86_64' };
      const file = chooseFile(store.find({ component: name, osFamily: 'linux', version: k.kver }), want);
      if (!file) {
        const pkg = os.packages.list.find(x => x.name === `linux-image-${k.kver}` || x.name === 'kernel-core' && x.version && k.kver.includes(x.version.replace(/^\d+:/, '')));
        throw missingDriverError(want, { package: pkg?.name, packageVersion: pkg?.version, packageKind: os.packages.manager === 'rpm' ? 'rpm' : 'Debian' });
      }
      store.markUsed(file.id);
      k.modules.push({ name, relPath: `updates/ferry/${basename(file.pathInContainer)}`, hostFile: store.objectPath(file) });
      k.load.push(name);
      k.missing = k.missing.filter(m => m !== name);
      k.fromDriversDb = [...(k.fromDriversDb ?? []), name];
    }
  } finally { store.close(); }
}

/** Plan on a read-only disk (the source of a conversion): throws DRIVER_MISSING, writes nothing. */
export async function preflightRefit(scope: Scope, disk: OpenDisk, work: string, profile: Profile, o: RefitOptions): Promise<void> {
  await plan(scope, disk, work, profile, o, false);
}

/** Plan and apply on a writable disk (a finished target or an overlay). */
export async function refitDisk(scope: Scope, disk: OpenDisk, work: string, profile: Profile, o: RefitOptions): Promise<RefitResult> {
  const { planned, windows, fileSystems, esp } = await plan(scope, disk, work, profile, o, true);
  const changes: Change[] = [];
  for (const p of planned) {
    changes.push(...await installDbModules(p));
    changes.push(...await applyLinuxRefit({ fs: p.fs, os: p.os, fileSystems, profile, plan: p.plan, mac: o.mac, work }));
  }
  if (planned.length && esp) changes.push(...await installRemovableLoader(scope, esp));
  for (const w of windows) {
    changes.push(...await applyWindowsRefit({ plan: w, work }));
    if (w.used.length) {
      const store = DriverStore.open();
      try { for (const id of new Set(w.used)) store.markUsed(id); } finally { store.close(); }
    }
  }
  const systems = [
    ...planned.map(p => ({ type: 'linux', name: p.os.name, partition: p.partition })),
    ...windows.map(w => ({ type: 'windows', name: w.os.productName ?? 'Windows', partition: w.os.partition })),
  ];
  const warnings = windows.flatMap(w => w.warnings);
  return { profile: profile.name, systems, changes, ...(warnings.length ? { warnings } : {}) };
}

/** modules taken from drivers-db also go into the guest's own tree, indexed by the host's depmod */
async function installDbModules(p: Planned): Promise<Change[]> {
  const changes: Change[] = [];
  for (const k of p.plan.kernels) {
    if (!k.fromDriversDb?.length) continue;
    for (const m of k.modules.filter(x => k.fromDriversDb!.includes(x.name))) {
      const guestPath = `/lib/modules/${k.kver}/${m.relPath}`;
      // the kernel's module tree exists (its modules.dep was read); updates/ferry below it may not yet
      const dst = join((await p.fs.resolve(`/lib/modules/${k.kver}`))!, m.relPath);
      await mkdir(dirname(dst), { recursive: true });
      await copyFile(m.hostFile, dst);
      await chmod(dst, 0o644);
      changes.push({ file: guestPath, before: 'absent', after: `from drivers-db (${m.name} for ${k.kver})`, reason: 'the guest kernel has no such module; the new hardware needs it' });
    }
    const root = await p.fs.resolve('/');
    await run('depmod', ['-b', root!, k.kver]);
  }
  return changes;
}
