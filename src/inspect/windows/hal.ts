// Which HAL and kernel the guest boots. Setup copies the variant that fits the
// hardware to hal.dll / ntoskrnl.exe (ntkrnlpa.exe for PAE), so the file name
// says nothing; the variant is the OriginalFilename in the file's version
// resource. When that cannot be read, the registry still tells the HAL
// (Enum\Root\ACPI_HAL or PCI_HAL) and whether the kernel is multiprocessor
// (CurrentVersion\CurrentType).
import { readFile } from 'node:fs/promises';
import type { ItemError, WindowsOs } from '../report.js';
import type { RegKey } from './hive.js';
import { findCi } from './paths.js';
import { MACHINE_I386, readPe, type PeInfo } from './pe.js';

type Hal = NonNullable<WindowsOs['hal']>;
type Kernel = NonNullable<WindowsOs['kernel']>;

/** HAL variants by OriginalFilename (hal.dll itself is decided by the OS version) */
const HALS: Record<string, { acpi: boolean; multiprocessor: boolean }> = {
  'halacpi.dll': { acpi: true, multiprocessor: false },   // ACPI PC
  'halaacpi.dll': { acpi: true, multiprocessor: false },  // ACPI uniprocessor PC (APIC)
  'halmacpi.dll': { acpi: true, multiprocessor: true },   // ACPI multiprocessor PC
  'halapic.dll': { acpi: false, multiprocessor: false },  // MPS uniprocessor PC
  'halmps.dll': { acpi: false, multiprocessor: true },    // MPS multiprocessor PC
  'halsp.dll': { acpi: false, multiprocessor: true },     // Compaq SystemPro
};

/** the HAL's hardware ids in Enum\Root\ACPI_HAL|PCI_HAL\0000 → the HAL file setup chose */
const HAL_IDS: Record<string, string> = {
  acpipic_up: 'halacpi.dll', acpiapic_up: 'halaacpi.dll', acpiapic_mp: 'halmacpi.dll',
  e_isa_up: 'hal.dll', mps_up: 'halapic.dll', mps_mp: 'halmps.dll',
};

/** kernel variants by OriginalFilename */
const KERNELS: Record<string, { multiprocessor: boolean; pae: boolean }> = {
  'ntoskrnl.exe': { multiprocessor: false, pae: false },
  'ntkrnlmp.exe': { multiprocessor: true, pae: false },
  'ntkrnlpa.exe': { multiprocessor: false, pae: true },
  'ntkrpamp.exe': { multiprocessor: true, pae: true },
};

function halVariant(variant: string, ntMajor: number, machine: number | undefined): { acpi: boolean; multiprocessor: boolean } {
  const known = HALS[variant];
  if (known) return known;
  // hal.dll: the "Standard PC" HAL on 32-bit NT 5.x; from Vista on and on
  // every 64-bit Windows the one HAL for ACPI multiprocessor machines.
  if (ntMajor >= 6 || (machine !== undefined && machine !== MACHINE_I386)) return { acpi: true, multiprocessor: true };
  return { acpi: false, multiprocessor: false };
}

export interface BootIniEntry { kernel?: string; hal?: string; pae: boolean }

/** the default entry of boot.ini (NT 5.x): /KERNEL=, /HAL=, and whether PAE is on */
export function parseBootIni(text: string, systemRoot: string): BootIniEntry | undefined {
  const lines = text.split(/\r?\n/).map(l => l.trim());
  let section = '';
  let def: string | undefined;
  const entries: { arc: string; options: string }[] = [];
  for (const l of lines) {
    const s = l.match(/^\[(.*)\]$/);
    if (s) { section = s[1].toLowerCase(); continue; }
    if (section === 'boot loader') {
      const m = l.match(/^default\s*=\s*(.*)$/i);
      if (m) def = m[1].trim().toLowerCase();
    } else if (section === 'operating systems') {
      const m = l.match(/^([^=\s]+)\s*=\s*("[^"]*"|\S+)\s*(.*)$/);
      if (m) entries.push({ arc: m[1].toLowerCase(), options: m[3] });
    }
  }
  const root = systemRoot.replace(/^\//, '').toLowerCase();
  const entry = entries.find(e => e.arc === def) ?? entries.find(e => e.arc.endsWith('\\' + root)) ?? entries[0];
  if (!entry) return undefined;
  const opt = (name: string) => entry.options.match(new RegExp(`(?:^|\\s)/${name}(?:=(\\S+))?(?=\\s|$)`, 'i'));
  const nx = opt('noexecute');
  // Data execution prevention needs PAE: /noexecute (other than alwaysoff) turns it on.
  const pae = !opt('nopae') && (!!opt('pae') || (!!nx && (nx[1] ?? '').toLowerCase() !== 'alwaysoff'));
  return { kernel: opt('kernel')?.[1]?.toLowerCase(), hal: opt('hal')?.[1]?.toLowerCase(), pae };
}

export interface HalInput {
  dir: string;
  systemRoot: string;
  /** NT major version (5 for 2000/XP/2003), when known */
  ntMajor?: number;
  /** SYSTEM ...\Enum\Root of the current control set */
  enumRoot?: RegKey;
  /** SOFTWARE CurrentVersion\CurrentType, e.g. "Multiprocessor Free" */
  currentType?: string;
}

export async function readHalAndKernel(input: HalInput, errors: ItemError[]): Promise<{ hal?: Hal; kernel?: Kernel }> {
  const { dir, systemRoot } = input;
  const bootIniFile = await findCi(dir, '/boot.ini');
  const bootIni = bootIniFile
    ? parseBootIni(await readFile(bootIniFile.host, 'latin1'), systemRoot)
    : undefined;
  const sys32 = `${systemRoot}/System32`;
  const halFile = await findCi(dir, `${sys32}/${bootIni?.hal ?? 'hal.dll'}`);
  // The PAE kernel when boot.ini turns PAE on or, without boot.ini (Vista and
  // later boot from BCD), when one exists: DEP is on by default there.
  const paeKernel = await findCi(dir, `${sys32}/ntkrnlpa.exe`);
  const kernelName = bootIni?.kernel ?? (paeKernel && (bootIni ? bootIni.pae : true) ? 'ntkrnlpa.exe' : 'ntoskrnl.exe');
  const kernelFile = await findCi(dir, `${sys32}/${kernelName}`);

  let pe: Record<string, PeInfo | { error: string }> = {};
  try {
    pe = await readPe([halFile?.host, kernelFile?.host].filter((p): p is string => !!p));
  } catch (e) {
    errors.push({ code: 'PE_UNREADABLE', message: `cannot read version resources: ${(e as Error).message}` });
  }
  const resource = (f: typeof halFile): PeInfo | undefined => {
    if (!f) return undefined;
    const info = pe[f.host];
    if (!info) return undefined;
    if ('error' in info) { errors.push({ code: 'PE_UNREADABLE', message: `${f.guest}: ${info.error}` }); return undefined; }
    if (!info.strings.OriginalFilename) { errors.push({ code: 'PE_UNREADABLE', message: `${f.guest} has no OriginalFilename in its version resource` }); return undefined; }
    return info;
  };

  const out: { hal?: Hal; kernel?: Kernel } = {};
  const ntMajor = input.ntMajor ?? 0;

  const halPe = resource(halFile);
  if (halFile && halPe) {
    const variant = halPe.strings.OriginalFilename.trim().toLowerCase();
    out.hal = { file: halFile.guest, variant, ...halVariant(variant, ntMajor, halPe.machine), how: 'version-resource', ...version(halPe) };
  } else {
    const id = ['ACPI_HAL', 'PCI_HAL'].flatMap(k => input.enumRoot?.sub(`${k}\\0000`)?.strings('HardwareID') ?? [])[0]?.toLowerCase();
    const variant = id ? HAL_IDS[id] : undefined;
    if (variant) out.hal = { file: halFile?.guest ?? `${sys32}/hal.dll`, variant, ...halVariant(variant, ntMajor, undefined), how: 'registry' };
  }

  const kernelPe = resource(kernelFile);
  if (kernelFile && kernelPe) {
    const variant = kernelPe.strings.OriginalFilename.trim().toLowerCase();
    const known = KERNELS[variant];
    const i386 = kernelPe.machine === MACHINE_I386;
    out.kernel = {
      file: kernelFile.guest, variant,
      // a 64-bit kernel is always the multiprocessor one
      multiprocessor: known?.multiprocessor ?? !i386,
      // PAE is a 32-bit question; 32-bit Windows 8 and later only has the PAE kernel
      ...(i386 ? { pae: known ? known.pae || ntMajor > 6 : false } : {}),
      how: 'version-resource', ...version(kernelPe),
    };
  } else if (input.currentType) {
    const mp = /multiprocessor/i.test(input.currentType);
    const pae = kernelName === 'ntkrnlpa.exe';
    const variant = pae ? (mp ? 'ntkrpamp.exe' : 'ntkrnlpa.exe') : (mp ? 'ntkrnlmp.exe' : 'ntoskrnl.exe');
    out.kernel = { file: kernelFile?.guest ?? `${sys32}/${kernelName}`, variant, multiprocessor: mp, pae, how: 'registry' };
  }
  return out;
}

function version(info: PeInfo): { fileVersion?: string } {
  const v = info.fileVersion ?? info.strings.FileVersion?.split(/\s/)[0];
  return v ? { fileVersion: v } : {};
}
