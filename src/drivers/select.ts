// Which stored file a conversion uses: the rule of the seed design. For the
// guest's OS release and patch level, take the newest variant of the component
// that is not newer than the guest's patch level, of the kind the target
// hardware needs. A file from a later service pack may need a kernel the guest
// does not have, so "newest" never reaches past the guest. Linux modules load
// only into the kernel they were built for, so there the rule shrinks to "the
// module built for exactly that kernel release".
//
// Pure functions: no store, no I/O; the caller passes the candidates.
import { compareVersions } from '../catalog/version.js';
import { driverMissing } from '../errors.js';
import { normalizeArch, type DriverFile, type OsFamily } from './store.js';

/** What the hardware needs of a HAL or kernel; unset properties do not matter. */
export interface VariantKind { acpi?: boolean; apic?: boolean; multiprocessor?: boolean; pae?: boolean }

export interface DriverWant {
  component: string;
  osFamily: OsFamily;
  /** Windows: '2003', 'xp', '2008r2', '10' … (as import records it); Linux: 'debian 12' (checked only when both sides know it) */
  osRelease?: string;
  /** Windows: the guest's service pack ('SP2', 'Service Pack 2') or build.UBR; unset means RTM */
  patchLevel?: string;
  /** Linux: the guest kernel release (uname -r) the module must be built for */
  kernel?: string;
  arch: string;
  /** an exact variant ('halmacpi.dll', 'cloud-amd64') or the kind of HAL/kernel the hardware needs */
  variant?: string | VariantKind;
}

/** HAL and kernel variants by their original file name. */
export const WINDOWS_VARIANTS: Record<string, Required<VariantKind>> = {
  'hal.dll': { acpi: false, apic: false, multiprocessor: false, pae: false },      // standard PC
  'halapic.dll': { acpi: false, apic: true, multiprocessor: false, pae: false },   // MPS uniprocessor
  'halmps.dll': { acpi: false, apic: true, multiprocessor: true, pae: false },     // MPS multiprocessor
  'halacpi.dll': { acpi: true, apic: false, multiprocessor: false, pae: false },   // ACPI PC (PIC)
  'halaacpi.dll': { acpi: true, apic: true, multiprocessor: false, pae: false },   // ACPI uniprocessor (APIC)
  'halmacpi.dll': { acpi: true, apic: true, multiprocessor: true, pae: false },    // ACPI multiprocessor
  'ntoskrnl.exe': { acpi: false, apic: false, multiprocessor: false, pae: false }, // uniprocessor
  'ntkrnlmp.exe': { acpi: false, apic: false, multiprocessor: true, pae: false },  // multiprocessor
  'ntkrnlpa.exe': { acpi: false, apic: false, multiprocessor: false, pae: true },  // uniprocessor PAE
  'ntkrpamp.exe': { acpi: false, apic: false, multiprocessor: true, pae: true },   // multiprocessor PAE
};

/** 'RTM' → [0], 'SP2' / 'Service Pack 2' → [2], '17763.1234' → [17763, 1234]; otherwise undefined. */
function windowsLevel(p: string): number[] | undefined {
  const s = p.trim().toLowerCase();
  if (s === '' || s === 'rtm' || s === 'gold' || s === 'sp0') return [0];
  const sp = /^(?:sp|service\s*pack\s*)(\d+)[a-z]?$/.exec(s);
  if (sp) return [Number(sp[1])];
  if (/^\d+(\.\d+)*$/.test(s)) return s.split('.').map(Number);
  return undefined;
}

/**
 * Order of patch levels, as a sort comparator: Windows RTM < SP1 < SP2 < SP3
 * ('Service Pack 2' = 'SP2'), builds numerically (17763.1234 < 17763.5000);
 * anything else (Linux package versions) in dpkg's order.
 */
export function patchLevelOrder(a: string, b: string): number {
  const x = windowsLevel(a), y = windowsLevel(b);
  if (x && y) {
    for (let i = 0; i < Math.max(x.length, y.length); i++) {
      const d = (x[i] ?? 0) - (y[i] ?? 0);
      if (d) return d;
    }
    return 0;
  }
  return compareVersions(a, b);
}

const lc = (s: string | undefined) => s?.trim().toLowerCase();

/**
 * A file's variant kind. Since NT 6 and on every 64-bit Windows there is one
 * HAL (hal.dll, ACPI multiprocessor) and one multiprocessor kernel, whatever
 * the file is called.
 */
function kindOf(file: DriverFile): Required<VariantKind> | undefined {
  const kind = WINDOWS_VARIANTS[lc(file.variant) ?? ''];
  if (!kind) return undefined;
  const modern = normalizeArch(file.arch) !== 'x86' || Number(file.version.split('.')[0]) >= 6;
  if (!modern) return kind;
  return lc(file.variant)!.startsWith('hal') ? { acpi: true, apic: true, multiprocessor: true, pae: false } : { ...kind, multiprocessor: true };
}

function variantFits(file: DriverFile, want: DriverWant['variant']): boolean {
  if (want === undefined) return true;
  if (typeof want === 'string') return lc(file.variant) === lc(want);
  const kind = kindOf(file);
  if (!kind) return false;
  return (Object.keys(want) as (keyof VariantKind)[]).every(k => want[k] === undefined || kind[k] === want[k]);
}

/** The patch level a file counts as for a guest at `guest`: its newest level not above the guest's, or undefined if all are above. */
function levelFor(file: DriverFile, guest: string): string | undefined {
  if (!file.patchLevels.length) return 'RTM'; // not tied to a patch level: fits any
  return file.patchLevels.filter(p => patchLevelOrder(p, guest) <= 0).sort(patchLevelOrder).pop();
}

/** Prefer the later container version, then the later import. */
const newer = (a: DriverFile, b: DriverFile) =>
  compareVersions(a.containerVersion ?? '', b.containerVersion ?? '') || a.id - b.id;

/** The file the rule picks for `want`, or undefined when nothing suitable is stored. */
export function chooseFile(candidates: readonly DriverFile[], want: DriverWant): DriverFile | undefined {
  const arch = normalizeArch(want.arch);
  const base = candidates.filter(f =>
    f.osFamily === want.osFamily && lc(f.component) === lc(want.component) && normalizeArch(f.arch) === arch
    && variantFits(f, want.variant));

  if (want.osFamily === 'linux') {
    if (!want.kernel) return undefined;
    const fit = base.filter(f => f.version === want.kernel
      && !(f.osRelease && want.osRelease && lc(f.osRelease) !== lc(want.osRelease)));
    return fit.sort(newer).pop();
  }

  const guest = want.patchLevel?.trim() || 'RTM';
  const fit = base
    .filter(f => lc(f.osRelease) === lc(want.osRelease))
    .map(f => ({ f, level: levelFor(f, guest) }))
    .filter((x): x is { f: DriverFile; level: string } => x.level !== undefined);
  fit.sort((a, b) => patchLevelOrder(a.level, b.level) || compareVersions(a.f.version, b.f.version) || newer(a.f, b.f));
  return fit.pop()?.f;
}

/** What the caller knows about where the missing file comes from (from inspection). */
export interface MissingHint {
  /** Linux: the package that ships the module, e.g. linux-image-6.1.0-50-amd64 */
  package?: string;
  packageVersion?: string;
  /** 'Debian', 'rpm' … (defaults from the file name or 'Debian') */
  packageKind?: string;
  /** Windows: the medium, e.g. 'the Windows Server 2003 installation CD' or 'virtio-win ISO' */
  medium?: string;
}

function describeWant(want: DriverWant): string {
  const v = want.variant === undefined ? '' : typeof want.variant === 'string' ? ` variant ${want.variant}`
    : ` variant ${Object.entries(want.variant).filter(([, x]) => x !== undefined).map(([k, x]) => (x ? '' : 'non-') + k).join(' ')}`;
  if (want.osFamily === 'linux') return `kernel module ${want.component} for kernel ${want.kernel ?? '(unknown)'} (${normalizeArch(want.arch)})`;
  return `${want.component}${v} for Windows ${want.osRelease ?? '(unknown release)'} ${want.patchLevel?.trim() || 'RTM'} (${normalizeArch(want.arch)})`;
}

/**
 * DRIVER_MISSING (exit 5): the message names exactly what to import — for
 * Linux the package and its version, for Windows the medium and service pack.
 */
export function missingDriverError(want: DriverWant, hint: MissingHint = {}) {
  let toImport: string;
  if (want.osFamily === 'linux') {
    const rpm = /\.el\d|\.fc\d/.test(want.kernel ?? '');
    // without a hint, the distribution's usual name for the kernel package
    const pkg = hint.package ?? (!want.kernel ? 'the kernel package of the guest' : rpm ? `kernel-core-${want.kernel}` : `linux-image-${want.kernel}`);
    const kind = hint.packageKind ?? (rpm ? 'rpm' : 'Debian');
    toImport = `the ${kind} package ${pkg}${hint.packageVersion ? ` (version ${hint.packageVersion})` : ''}`;
  } else {
    const sp = want.patchLevel?.trim() || 'RTM';
    const medium = hint.medium ?? `the Windows ${want.osRelease ?? ''} ${/^rtm$/i.test(sp) ? 'installation medium' : 'service pack medium'}`.replace(/\s+/g, ' ');
    toImport = `${medium} (${/^rtm$/i.test(sp) ? 'RTM' : sp}, ${normalizeArch(want.arch)}) with --os-release ${want.osRelease ?? 'RELEASE'} --patch-level ${sp}`;
  }
  return driverMissing(describeWant(want), toImport, { want, hint });
}
