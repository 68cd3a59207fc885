// Re-fit a Windows guest to the hardware a profile describes, offline, on the
// target only: the boot storage driver from drivers-db into System32\drivers
// with its service key (Start=0) and CriticalDeviceDatabase entries, HAL and
// kernel swapped to the variant the profile needs (the version rule picks it),
// the old platform's tools services disabled, and the remaining drivers
// staged for a first-boot script started from RunOnce.
//
// Two phases, as for Linux: plan reads everything (hives, files, drivers-db)
// and throws — DRIVER_MISSING naming the medium and service pack, or a hive
// that cannot be read — before anything is written; apply only writes what
// the plan decided and reports each change.
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { FerryError } from '../../src/errors.js';
import type { DriverFile, DriverQuery } from '../../src/drivers/store.js';
import { normalizeArch } from '../../src/drivers/store.js';
import { chooseFile, missingDriverError, WINDOWS_VARIANTS, type DriverWant, type VariantKind } from '../../src/drivers/select.js';
import { Hive, REG_DWORD, REG_EXPAND_SZ, REG_MULTI_SZ, REG_SZ, type RegKey } from '../../src/inspect/windows/hive.js';
import { findCi } from '../../src/inspect/windows/paths.js';
import { readPe } from '../../src/inspect/windows/pe.js';
import type { WindowsOs } from '../../src/inspect/report.js';
import type { Profile, WindowsDriverSpec } from '../../src/profiles/profiles.js';
import type { Change } from '../linux/change.js';
import { mergeIntoHive, showValue, type RegData, type RegEdit } from './registry.js';
import { mediumFor, normalizePatchLevel, ntVersion, storeReleases } from './release.js';
import { toolServices } from './tools.js';

/** what the converter needs of drivers-db (DriverStore has it) */
export interface DriverSource {
  find(q: DriverQuery): DriverFile[];
  objectPath(file: Pick<DriverFile, 'sha256'>): string;
}

interface FileCopy { from: string; host: string; change: Change }
export interface KeyEdit { edit: RegEdit; before: string; after: string; reason: string }
export interface HiveEdits { hive: Hive; prefix: string; edits: KeyEdit[] }

export interface WindowsPlan {
  /** host directory of the file system holding the system root */
  dir: string;
  os: WindowsOs;
  release: string;
  patchLevel: string;
  arch: string;
  mkdirs: string[];
  copies: FileCopy[];
  scripts: { host: string; text: string; change: Change }[];
  system: HiveEdits;
  software: HiveEdits;
  /** drivers-db rows used (marked after apply) */
  used: number[];
  /** not boot-critical problems: drivers queued for first boot that drivers-db does not have */
  warnings: string[];
}

export const windowsHiveUnreadable = (guestPath: string, why: string, partition: number) =>
  new FerryError('WINDOWS_HIVE_UNREADABLE', 3,
    `the Windows registry hive ${guestPath} on partition ${partition} cannot be read (${why}); the guest cannot be re-fitted safely: repair the hive (or restore it from a backup) and try again (nothing was written)`,
    { hive: guestPath, partition });

export const windowsUnknownRelease = (os: WindowsOs) =>
  new FerryError('WINDOWS_UNKNOWN_RELEASE', 3,
    `the Windows guest on partition ${os.partition} (${os.productName ?? 'no product name'}, NT ${os.version ?? '?'}, ${os.arch ?? 'unknown architecture'}) is not a release Ferry can re-fit`,
    { productName: os.productName, version: os.version, arch: os.arch });

const SYSTEM_PREFIX = 'HKEY_LOCAL_MACHINE\\SYSTEM';
const SOFTWARE_PREFIX = 'HKEY_LOCAL_MACHINE\\SOFTWARE';
const CURRENT_VERSION = 'Microsoft\\Windows\\CurrentVersion';

export type ReadKey = (hive: Hive, key: string) => Promise<RegKey | undefined>;

/**
 * SYSTEM and SOFTWARE of the guest at dir opened for planned edits, with the
 * control sets in use (current and default: a set Windows no longer boots is
 * left alone); every read failure is WINDOWS_HIVE_UNREADABLE.
 */
export async function openRegistry(dir: string, os: WindowsOs): Promise<{ system: HiveEdits; software: HiveEdits; controlSets: string[]; readKey: ReadKey }> {
  const root = os.systemRoot;
  const openHive = async (name: string) => {
    try { return await Hive.open(dir, `${root}/System32/config/${name}`); } catch (e) {
      throw windowsHiveUnreadable(`${root}/System32/config/${name}`, (e as Error).message, os.partition);
    }
  };
  const readKey: ReadKey = async (hive, key) => {
    try { return await hive.tree(key); } catch (e) { throw windowsHiveUnreadable(hive.guestPath, (e as Error).message, os.partition); }
  };
  const system: HiveEdits = { hive: await openHive('SYSTEM'), prefix: SYSTEM_PREFIX, edits: [] };
  const software: HiveEdits = { hive: await openHive('SOFTWARE'), prefix: SOFTWARE_PREFIX, edits: [] };
  const select = await readKey(system.hive, '\\Select');
  const controlSets = [...new Set([select?.num('Current'), select?.num('Default')].filter((n): n is number => n !== undefined))]
    .map(n => `ControlSet${String(n).padStart(3, '0')}`);
  if (!controlSets.length) throw windowsHiveUnreadable(system.hive.guestPath, 'Select names no current control set', os.partition);
  return { system, software, controlSets, readKey };
}
const RUN_ONCE_VALUE = 'FerryFirstBoot';

/** the Enum\Root\ACPI_HAL hardware id of each HAL */
const HAL_IDS: Record<string, string> = {
  'halacpi.dll': 'acpipic_up', 'halaacpi.dll': 'acpiapic_up', 'halmacpi.dll': 'acpiapic_mp',
  'hal.dll': 'e_isa_up', 'halapic.dll': 'mps_up', 'halmps.dll': 'mps_mp',
};

const sha256Of = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');
const lc = (s: string) => s.toLowerCase();

export interface WindowsPlanInput { dir: string; os: WindowsOs; profile: Profile; drivers: DriverSource }

export async function planWindowsRefit(input: WindowsPlanInput): Promise<WindowsPlan> {
  const { dir, os, profile, drivers } = input;
  // a guest whose hives cannot be read is not changed at all
  const hiveError = os.errors.find(e => /^HIVE_/.test(e.code));
  if (hiveError) throw windowsHiveUnreadable(/\/[^\s:]+/.exec(hiveError.message)?.[0] ?? `${os.systemRoot}/System32/config`, hiveError.message, os.partition);
  const releases = storeReleases(os);
  const arch = normalizeArch(os.arch ?? '');
  if (!releases.length || !['x86', 'amd64', 'arm64'].includes(arch)) throw windowsUnknownRelease(os);
  const patchLevel = normalizePatchLevel(os.patchLevel);
  const [ntMajor, ntMinor] = ntVersion(os);
  const root = os.systemRoot;
  const { system, software, controlSets: setNames, readKey } = await openRegistry(dir, os);

  const plan: WindowsPlan = { dir, os, release: releases[0], patchLevel, arch, mkdirs: [], copies: [], scripts: [], system, software, used: [], warnings: [] };

  /** set values of a key in every boot control set, recording only values that change */
  const setValues = async (h: HiveEdits, key: string, values: Record<string, RegData>, reason: string, keyIfAbsent = true) => {
    const existing = await readKey(h.hive, `\\${key}`);
    if (!existing && !keyIfAbsent) return;
    const changed = Object.entries(values).filter(([name, v]) => !sameValue(existing, name, v));
    if (!changed.length) return;
    const before = !existing ? 'absent' : changed.map(([name]) => `${name}=${describe(existing, name)}`).join(' ');
    const after = changed.map(([name, v]) => `${name}=${showValue(v)}`).join(' ');
    h.edits.push({ edit: { key, values: Object.fromEntries(changed) }, before, after, reason });
  };
  const inSets = async (rel: string, values: Record<string, RegData>, reason: string, keyIfAbsent = true) => {
    for (const cs of setNames) await setValues(system, `${cs}\\${rel}`, values, reason, keyIfAbsent);
  };

  const pick = (component: string, variant?: string | VariantKind): DriverFile | undefined => {
    const candidates = drivers.find({ component, osFamily: 'windows' });
    for (const osRelease of releases) {
      const f = chooseFile(candidates, { component, osFamily: 'windows', osRelease, patchLevel, arch, variant });
      if (f) return f;
    }
    return undefined;
  };
  const want = (component: string, variant?: VariantKind): DriverWant => ({ component, osFamily: 'windows', osRelease: releases[0], patchLevel, arch, variant });
  /** the .inf and .cat beside a driver in its container */
  const companions = (f: DriverFile): DriverFile[] => {
    const stem = lc(f.component).replace(/\.sys$/, '');
    const folder = posix.dirname(f.pathInContainer);
    return drivers.find({ osFamily: 'windows', container: f.container })
      .filter(c => [`${stem}.inf`, `${stem}.cat`].includes(lc(c.component)) && posix.dirname(c.pathInContainer) === folder
        && lc(c.osRelease ?? '') === lc(f.osRelease ?? '') && c.arch === f.arch);
  };
  const fromDb = (f: DriverFile) => `${posix.basename(f.pathInContainer)} ${f.version}${f.variant ? ` (${f.variant})` : ''} from drivers-db (${f.container}${f.containerVersion ? ` ${f.containerVersion}` : ''}: ${f.pathInContainer})`;

  const driversDir = await findCi(dir, `${root}/System32/drivers`);
  if (!driversDir) throw new FerryError('WINDOWS_LAYOUT', 3, `the Windows guest on partition ${os.partition} has no ${root}/System32/drivers folder; it cannot be re-fitted`, { partition: os.partition });

  /** copy a drivers-db file over (or into) a guest path, unless it already holds those bytes */
  const placeFile = async (f: DriverFile, host: string, guest: string, before: string | undefined, reason: string) => {
    const from = drivers.objectPath(f);
    const exists = await findCi(dir, guest);
    if (exists && await sha256Of(exists.host) === f.sha256) return;
    plan.copies.push({ from, host: exists?.host ?? host, change: { file: exists?.guest ?? guest, before: before ?? (exists ? 'another file' : 'absent'), after: fromDb(f), reason } });
    plan.used.push(f.id);
  };

  // staged drivers for the first-boot script: folder name → files
  const staged = new Map<string, DriverFile[]>();
  const ferryDir = `${root}/Ferry`;
  const stage = async (service: string, files: DriverFile[]) => {
    for (const f of files) {
      const guest = `${ferryDir}/drivers/${service}/${posix.basename(f.pathInContainer)}`;
      const there = await findCi(dir, guest);
      if (there && await sha256Of(there.host) === f.sha256) continue; // staged by an earlier re-fit
      plan.copies.push({ from: drivers.objectPath(f), host: join(dir, guest), change: { file: guest, before: 'absent', after: fromDb(f), reason: `queued for the first-boot script, which installs ${service} through Plug and Play` } });
      plan.used.push(f.id);
    }
    staged.set(service, [...(staged.get(service) ?? []), ...files]);
  };

  // --- boot storage drivers: file, service key (Start=0), CriticalDeviceDatabase
  const cddUsed = ntMajor < 6 || (ntMajor === 6 && ntMinor <= 1); // Windows 8 (6.2) and later have none
  // one entry per id: when two drivers list it, the later (the controller driver after the port driver) owns it
  const cdd = new Map<string, WindowsDriverSpec>();
  for (const spec of profile.windows.bootDrivers) for (const id of spec.pciIds) cdd.set(lc(id), spec);
  for (const spec of profile.windows.bootDrivers) {
    const guestFile = `${driversDir.guest}/${spec.file}`;
    const present = await findCi(dir, guestFile);
    if (!(spec.inbox && present)) {
      const f = pick(lc(spec.file));
      if (!f) throw missingDriverError(want(lc(spec.file)), { medium: mediumFor(spec.file, releases[0], arch, os, !!spec.inbox) });
      await placeFile(f, join(driversDir.host, spec.file), guestFile, undefined,
        `the boot disk is ${profile.diskBus} on the new hardware; Windows loads ${spec.service} from System32\\drivers at boot`);
      if (!spec.inbox) { const c = companions(f); if (c.length) await stage(spec.service, c); }
    }
    await planService(spec, inSets, system.hive, setNames[0], readKey, ntMajor);
    if (cddUsed) {
      for (const id of spec.pciIds.filter(i => cdd.get(lc(i)) === spec)) {
        const values: Record<string, RegData> = { Service: { sz: spec.service } };
        if (spec.classGuid) values.ClassGUID = { sz: spec.classGuid };
        await inSets(`Control\\CriticalDeviceDatabase\\${id}`, values,
          `binds ${id} (${profile.diskBus}) to ${spec.service} before Plug and Play runs, so the boot disk is found`);
      }
    }
  }

  // --- HAL and kernel: 32-bit NT 5.x only (later Windows has one HAL and one kernel for all)
  if (ntMajor > 0 && ntMajor < 6 && arch === 'x86') await planHalKernel(plan, profile, { pick, want, placeFile, inSets, setNames, readKey, system, software, setValues });

  // --- the old platform's tools
  for (const t of toolServices(profile.guestTools.disable, os.services)) {
    if (t.start === 4) continue;
    await inSets(`Services\\${t.service}`, { Start: { dword: 4 } }, `${t.tool} belongs to the old platform; on ${profile.name} it would fail at every start`, false);
  }

  // --- remaining (network) drivers: staged for the first boot, not boot-critical
  for (const spec of profile.windows.netDrivers) {
    if (spec.inbox) {
      if (!await findCi(dir, `${driversDir.guest}/${spec.file}`))
        plan.warnings.push(`${spec.file} (${spec.service}) ships with Windows but is not in ${driversDir.guest}; install it from ${mediumFor(spec.file, releases[0], arch, os, true)} or the ${profile.nicModel} NIC will have no driver`);
      continue;
    }
    const f = pick(lc(spec.file));
    if (!f) {
      plan.warnings.push(`drivers-db has no ${lc(spec.file)} for Windows ${releases[0]} ${patchLevel} (${arch}): the ${profile.nicModel} NIC will have no driver until it is installed; import ${mediumFor(spec.file, releases[0], arch, os, false)} and re-fit again, or install it in the guest`);
      continue;
    }
    await stage(spec.service, [f, ...companions(f)]);
  }

  if (staged.size) {
    plan.mkdirs.push(...[...staged.keys()].map(s => join(dir, ferryDir, 'drivers', s)));
    const script = firstBootScript(staged, ntMajor, profile.name);
    const scriptGuest = `${ferryDir}/firstboot.cmd`;
    const old = await findCi(dir, scriptGuest);
    if (!old || await readFile(old.host, 'latin1') !== script) plan.scripts.push({ host: join(dir, scriptGuest), text: script, change: { file: scriptGuest, before: old ? 'an earlier first-boot script' : 'absent', after: `first-boot script installing ${[...staged.keys()].join(', ')}`, reason: 'drivers that are not needed to boot are installed by Windows itself at the first start' } });
    const command = `%SystemRoot%\\system32\\cmd.exe /c "%SystemRoot%\\Ferry\\firstboot.cmd"`;
    await setValues(software, `${CURRENT_VERSION}\\RunOnce`, { [RUN_ONCE_VALUE]: { expand: command } }, 'runs the first-boot script once, at the next logon');
    if (ntMajor < 6) {
      // XP/2003 have no pnputil: Plug and Play looks for drivers in DevicePath
      const cv = await software.hive.values(`\\${CURRENT_VERSION}`);
      const current = cv?.str('DevicePath') ?? '%SystemRoot%\\inf';
      const dirs = [...staged.keys()].map(s => `%SystemRoot%\\Ferry\\drivers\\${s}`);
      const have = current.split(';').map(lc);
      const add = dirs.filter(d => !have.includes(lc(d)));
      if (add.length) await setValues(software, CURRENT_VERSION, { DevicePath: { expand: [current, ...add].join(';') } }, 'Plug and Play finds the queued drivers when the new devices appear');
    }
  }
  return plan;
}

/** the service key of a boot driver: kernel driver, boot start, in its load-order group */
async function planService(spec: WindowsDriverSpec, inSets: (rel: string, v: Record<string, RegData>, reason: string) => Promise<void>,
  hive: Hive, cs: string, readKey: (h: Hive, k: string) => Promise<RegKey | undefined>, ntMajor: number): Promise<void> {
  const existing = await readKey(hive, `\\${cs}\\Services\\${spec.service}`);
  const values: Record<string, RegData> = { Type: { dword: 1 }, Start: { dword: 0 }, ErrorControl: { dword: 1 } };
  if (spec.group) values.Group = { sz: spec.group };
  // keep an ImagePath that already names the file (System32\DRIVERS\atapi.sys)
  const image = existing?.str('ImagePath');
  if (!image || !lc(image).endsWith(`\\${lc(spec.file)}`)) values.ImagePath = { expand: `system32\\drivers\\${spec.file}` };
  await inSets(`Services\\${spec.service}`, values, `${spec.service} drives the boot disk on the new hardware: it must start with the kernel (Start=0)`);
  // a SCSI miniport on NT 5.x finds its PCI device only when told it is PnP on the PCI bus (interface type 5)
  if (!spec.inbox && ntMajor > 0 && ntMajor < 6 && lc(spec.group ?? '') === 'scsi miniport')
    await inSets(`Services\\${spec.service}\\Parameters\\PnpInterface`, { '5': { dword: 1 } }, `${spec.service} is a Plug and Play miniport on the PCI bus`);
}

interface HalHelpers {
  pick: (component: string, variant?: VariantKind) => DriverFile | undefined;
  want: (component: string, variant?: VariantKind) => DriverWant;
  placeFile: (f: DriverFile, host: string, guest: string, before: string | undefined, reason: string) => Promise<void>;
  inSets: (rel: string, v: Record<string, RegData>, reason: string, keyIfAbsent?: boolean) => Promise<void>;
  setValues: (h: HiveEdits, key: string, v: Record<string, RegData>, reason: string, keyIfAbsent?: boolean) => Promise<void>;
  setNames: string[];
  readKey: (h: Hive, k: string) => Promise<RegKey | undefined>;
  system: HiveEdits;
  software: HiveEdits;
}

async function planHalKernel(plan: WindowsPlan, profile: Profile, h: HalHelpers): Promise<void> {
  const { dir, os } = plan;
  const acpi = profile.windows.hal.acpi;
  // one CPU means a uniprocessor HAL and kernel; 0 (from the inventory) keeps the profile's word
  const mp = profile.windows.hal.multiprocessor && profile.cpus !== 1;
  const kindName = `${acpi ? 'ACPI' : 'non-ACPI'} ${mp ? 'multiprocessor' : 'uniprocessor'}`;
  const sys32 = `${os.systemRoot}/System32`;
  const medium = mediumFor('hal.dll', plan.release, plan.arch, os, true);

  const halFile = os.hal?.file ?? `${sys32}/hal.dll`;
  if (!os.hal || os.hal.acpi !== acpi || os.hal.multiprocessor !== mp) {
    // an APIC HAL where there is a choice: every machine Ferry targets has an I/O APIC
    const hal = h.pick('hal.dll', { acpi, multiprocessor: mp, apic: true }) ?? h.pick('hal.dll', { acpi, multiprocessor: mp });
    if (!hal) throw missingDriverError(h.want('hal.dll', { acpi, multiprocessor: mp }), { medium });
    const found = await findCi(dir, halFile);
    await h.placeFile(hal, found?.host ?? join(dir, halFile), found?.guest ?? halFile,
      os.hal ? `${os.hal.variant}${os.hal.fileVersion ? ` ${os.hal.fileVersion}` : ''}` : undefined,
      `the new hardware (${profile.name}, ${profile.cpus || 'inventory'} CPU(s)) needs an ${kindName} HAL`);
    const id = HAL_IDS[lc(hal.variant ?? '')];
    if (id) await h.inSets(`Enum\\Root\\${acpi ? 'ACPI_HAL' : 'PCI_HAL'}\\0000`, { HardwareID: { multi: [id] } }, `Plug and Play's record of the HAL follows the new ${hal.variant}`, false);
  }

  const kernel = os.kernel;
  const pae = kernel?.pae ?? /ntkrnlpa\.exe$/i.test(kernel?.file ?? '');
  const inUse = kernel?.file ?? `${sys32}/${pae ? 'ntkrnlpa.exe' : 'ntoskrnl.exe'}`;
  if (!kernel || kernel.multiprocessor !== mp) {
    const k = h.pick('ntoskrnl.exe', { multiprocessor: mp, pae });
    if (!k) throw missingDriverError(h.want('ntoskrnl.exe', { multiprocessor: mp, pae }), { medium });
    const found = await findCi(dir, inUse);
    await h.placeFile(k, found?.host ?? join(dir, inUse), found?.guest ?? inUse,
      kernel ? `${kernel.variant}${kernel.fileVersion ? ` ${kernel.fileVersion}` : ''}` : undefined,
      `boot.ini boots this kernel; the new hardware needs a ${mp ? 'multiprocessor' : 'uniprocessor'}${pae ? ' PAE' : ''} kernel matching the HAL`);
  }
  // the other kernel (PAE or not) follows too, when drivers-db has it: boot.ini may be switched back later
  const otherName = pae ? 'ntoskrnl.exe' : 'ntkrnlpa.exe';
  const other = await findCi(dir, `${sys32}/${otherName}`);
  if (other && lc(other.guest) !== lc(inUse)) {
    const pe = (await readPe([other.host]))[other.host];
    const variant = pe && !('error' in pe) ? lc(pe.strings.OriginalFilename?.trim() ?? '') : '';
    const kind = WINDOWS_VARIANTS[variant];
    if (!kind || kind.multiprocessor !== mp) {
      const k = h.pick('ntoskrnl.exe', { multiprocessor: mp, pae: !pae });
      if (k) await h.placeFile(k, other.host, other.guest, variant || undefined, `the ${!pae ? 'PAE' : 'non-PAE'} kernel boot.ini can switch to must match the ${mp ? 'multiprocessor' : 'uniprocessor'} HAL too`);
      else plan.warnings.push(`${other.guest} (${variant || 'unknown variant'}) is not in use and was left as it is: drivers-db has no ${mp ? 'multiprocessor' : 'uniprocessor'} ${!pae ? 'PAE ' : ''}kernel for Windows ${plan.release} ${plan.patchLevel}; do not switch boot.ini to it`);
    }
  }
  if (!kernel || kernel.multiprocessor !== mp) {
    const type = `${mp ? 'Multiprocessor' : 'Uniprocessor'} Free`;
    const cv = await h.software.hive.values('\\Microsoft\\Windows NT\\CurrentVersion');
    if (cv?.str('CurrentType') && cv.str('CurrentType') !== type)
      await h.setValues(h.software, 'Microsoft\\Windows NT\\CurrentVersion', { CurrentType: { sz: type } }, 'the kernel type the guest reports follows the kernel');
  }
}

/** a batch file run once at the first logon: installs the staged drivers, then removes its RunOnce trace */
export function firstBootScript(staged: Map<string, DriverFile[]>, ntMajor: number, profile: string): string {
  const lines = [
    '@echo off',
    `rem Ferry first-boot script: installs the drivers queued by the re-fit to profile ${profile}.`,
    'set FERRY=%SystemRoot%\\Ferry',
    'set LOG=%FERRY%\\firstboot.log',
    'echo %DATE% %TIME% Ferry first boot >> "%LOG%"',
  ];
  for (const [service, files] of staged) {
    for (const inf of files.filter(f => /\.inf$/i.test(f.pathInContainer))) {
      const path = `%FERRY%\\drivers\\${service}\\${posix.basename(inf.pathInContainer)}`;
      if (ntMajor >= 6) lines.push(`pnputil -i -a "${path}" >> "%LOG%" 2>&1`);
      else lines.push(`rem ${service}: ${path} is on DevicePath; Plug and Play installs it when it finds the device`);
    }
  }
  if (ntMajor < 6) lines.push('if exist "%FERRY%\\devcon.exe" "%FERRY%\\devcon.exe" rescan >> "%LOG%" 2>&1');
  lines.push('echo %DATE% %TIME% done >> "%LOG%"', '');
  return lines.join('\r\n');
}

export interface WindowsApplyInput { plan: WindowsPlan; work: string }

export async function applyWindowsRefit({ plan, work }: WindowsApplyInput): Promise<Change[]> {
  const changes: Change[] = [];
  for (const d of plan.mkdirs) await mkdir(d, { recursive: true });
  for (const c of plan.copies) {
    await mkdir(posix.dirname(c.host), { recursive: true });
    await copyFile(c.from, c.host);
    changes.push(c.change);
  }
  for (const s of plan.scripts) {
    await writeFile(s.host, s.text);
    changes.push(s.change);
  }
  for (const [i, h] of [plan.system, plan.software].entries()) {
    await mergeIntoHive(h.hive.path, h.prefix, h.edits.map(e => e.edit), join(work, `refit-p${plan.os.partition}-${i}.reg`));
    for (const e of h.edits) changes.push({ file: `${h.hive.guestPath} \\${e.edit.key}`, before: e.before, after: e.after, reason: e.reason });
  }
  return changes;
}

/** does the key already hold this value (strings compare as text, REG_SZ and REG_EXPAND_SZ alike) */
export function sameValue(key: RegKey | undefined, name: string, v: RegData): boolean {
  const have = key?.value(name);
  if (!key || !have) return false;
  if ('dword' in v) return have.type === REG_DWORD && key.num(name) === v.dword;
  if ('multi' in v) return have.type === REG_MULTI_SZ && JSON.stringify(key.strings(name)) === JSON.stringify(v.multi);
  const text = 'sz' in v ? v.sz : v.expand;
  return (have.type === REG_SZ || have.type === REG_EXPAND_SZ) && key.str(name) === text;
}

export function describe(key: RegKey, name: string): string {
  const v = key.value(name);
  if (!v) return '(none)';
  if (v.type === REG_MULTI_SZ) return `[${key.strings(name).join(', ')}]`;
  return String(key.num(name) ?? key.str(name) ?? `(type ${v.type})`);
}
