// Static inspection of a Windows installation on a mounted (read-only) NTFS
// file system: the registry hives are read with hivex's tools, HAL and kernel
// from their version resources. Nothing of the guest is executed or written.
//
// A damaged guest never fails the inspection: a hive that is missing or
// corrupt becomes an entry in .errors and every field that does not depend
// on it is still filled.
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../../errors.js';
import type { ItemError, WindowsOs } from '../report.js';
import { readApplications, UNINSTALL, UNINSTALL_32 } from './apps.js';
import { bootStorageDrivers, readCriticalDevices, readServices } from './drivers.js';
import { readHalAndKernel } from './hal.js';
import { Hive, HiveError, RegKey } from './hive.js';
import { NET_CLASS, readNics } from './network.js';
import { findCi } from './paths.js';
import { readArch, readHostname, readVersion } from './version.js';

/** the guest path of the Windows system root (e.g. '/Windows' or '/WINDOWS') if dir (a mounted NTFS file system) holds one, found case-insensitively */
export async function findWindowsRoot(dir: string): Promise<string | undefined> {
  const names = await readdir(dir).catch(() => [] as string[]);
  // the usual names first, then any top-level directory (Windows may be installed to C:\W2K3)
  const usual = ['windows', 'winnt'];
  const ordered = [
    ...names.filter(n => usual.includes(n.toLowerCase())),
    ...names.filter(n => !usual.includes(n.toLowerCase())),
  ];
  for (const name of ordered) {
    const st = await lstat(join(dir, name)).catch(() => undefined);
    if (!st?.isDirectory()) continue;
    if (await findCi(dir, `/${name}/System32/config/SYSTEM`) && await findCi(dir, `/${name}/System32/ntoskrnl.exe`)) return `/${name}`;
  }
  return undefined;
}

/** read everything WindowsOs holds; never throws for a damaged guest: corrupt hive etc. become entries in .errors (code HIVE_CORRUPT, HIVE_MISSING, …) */
export async function inspectWindows(dir: string, systemRoot: string, partition: number, _work: string): Promise<WindowsOs> {
  const os: WindowsOs = {
    type: 'windows', partition, systemRoot,
    bootStorageDrivers: [], services: [], criticalDevices: [], nics: [], applications: [], errors: [],
  };
  const note = noter(os.errors);
  const keep = async <T>(p: Promise<T>): Promise<T | undefined> => {
    try { return await p; } catch (e) { note(e); return undefined; }
  };
  const config = `${systemRoot}/System32/config`;

  // SYSTEM: the control set that Select\Current names
  const system = await keep(Hive.open(dir, `${config}/SYSTEM`));
  let sys: Partial<Record<'computerName' | 'env' | 'services' | 'cddb' | 'connections' | 'adapterClass' | 'enumRoot', RegKey>> = {};
  if (system) {
    const select = await keep(system.tree('\\Select'));
    const current = select?.num('Current');
    if (select && current === undefined) note(new HiveError('HIVE_CORRUPT', `${system.guestPath}: Select has no Current value`));
    const cs = `\\ControlSet${String(current ?? 1).padStart(3, '0')}`;
    const parts = {
      computerName: `${cs}\\Control\\ComputerName\\ComputerName`,
      env: `${cs}\\Control\\Session Manager\\Environment`,
      services: `${cs}\\Services`,
      cddb: `${cs}\\Control\\CriticalDeviceDatabase`,
      connections: `${cs}\\Control\\Network\\${NET_CLASS}`,
      adapterClass: `${cs}\\Control\\Class\\${NET_CLASS}`,
      // only the HALs' keys: Enum\Root is large
      acpiHal: `${cs}\\Enum\\Root\\ACPI_HAL`,
      pciHal: `${cs}\\Enum\\Root\\PCI_HAL`,
    };
    const got = Object.fromEntries(await Promise.all(Object.entries(parts).map(async ([k, path]) => [k, await keep(system.tree(path))] as const)));
    if (!got.services && !os.errors.length) note(new HiveError('HIVE_CORRUPT', `${system.guestPath} has no ${cs}\\Services (Select\\Current = ${current})`));
    sys = { ...got } as typeof sys;
    // Enum\Root as the HAL code expects it, holding only the two HAL keys
    const enumRoot = new RegKey('Root');
    for (const k of [got.acpiHal, got.pciHal]) if (k) enumRoot.subkeys.set(k.name.toLowerCase(), k);
    sys.enumRoot = enumRoot;
  }

  // SOFTWARE
  const software = await keep(Hive.open(dir, `${config}/SOFTWARE`));
  const [currentVersion, networkCards, uninstall, uninstall32] = software
    ? await Promise.all([
      keep(software.values('\\Microsoft\\Windows NT\\CurrentVersion')),
      keep(software.tree('\\Microsoft\\Windows NT\\CurrentVersion\\NetworkCards')),
      keep(software.tree(UNINSTALL)),
      keep(software.tree(UNINSTALL_32)),
    ])
    : [];

  if (currentVersion) Object.assign(os, readVersion(currentVersion));
  if (sys.env) { const arch = readArch(sys.env); if (arch) os.arch = arch; }
  const hostname = readHostname(sys.computerName, sys.services?.sub('Tcpip\\Parameters'));
  if (hostname) os.hostname = hostname;

  const ntMajor = Number((currentVersion?.str('CurrentVersion') ?? '').split('.')[0]) || undefined;
  const hk = await keep(readHalAndKernel({ dir, systemRoot, ntMajor, enumRoot: sys.enumRoot, currentType: currentVersion?.str('CurrentType') }, os.errors));
  if (hk?.hal) os.hal = hk.hal;
  if (hk?.kernel) os.kernel = hk.kernel;

  if (sys.services) os.services = readServices(sys.services);
  if (sys.cddb) os.criticalDevices = readCriticalDevices(sys.cddb);
  os.bootStorageDrivers = bootStorageDrivers(os.services, os.criticalDevices);
  os.nics = readNics({
    networkCards, adapterClass: sys.adapterClass, connections: sys.connections,
    interfaces: sys.services?.sub('Tcpip\\Parameters\\Interfaces'),
  });
  os.applications = readApplications([uninstall, uninstall32]);
  return inReportOrder(os);
}

/** the same object with its keys in the order report.ts declares them, for readable JSON */
function inReportOrder(os: WindowsOs): WindowsOs {
  const order: (keyof WindowsOs)[] = ['type', 'partition', 'systemRoot', 'productName', 'edition', 'version', 'build', 'patchLevel',
    'arch', 'hostname', 'hal', 'kernel', 'bootStorageDrivers', 'services', 'criticalDevices', 'nics', 'applications', 'errors'];
  const out: Record<string, unknown> = {};
  for (const k of order) if (os[k] !== undefined) out[k] = os[k];
  for (const [k, v] of Object.entries(os)) if (!(k in out) && v !== undefined) out[k] = v;
  return out as unknown as WindowsOs;
}

/** record an error once: a hive that fails for every key is one entry, not eight */
function noter(errors: ItemError[]): (e: unknown) => void {
  const hives = new Set<string>();
  return (e: unknown) => {
    if (e instanceof HiveError) {
      const hive = e.message.split(':')[0].split(' ')[0];
      if (e.code === 'HIVE_CORRUPT' && hives.has(hive)) return;
      hives.add(hive);
      errors.push(e.toItem());
    } else if (e instanceof FerryError) {
      errors.push({ code: e.code, message: e.message });
    } else {
      errors.push({ code: 'INSPECT_FAILED', message: (e as Error)?.message ?? String(e) });
    }
  };
}
