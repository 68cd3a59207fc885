// What the files of an unpacked container are: Linux kernel modules (by their
// place under lib/modules/<kernel release>/), GRUB's x86_64-efi platform files
// (usr/lib/grub/x86_64-efi/ of grub-efi-amd64-bin: one set per GRUB version),
// Windows drivers in the virtio-win layout (<driver>/<os label>/<arch>/<file>)
// and Windows HAL and kernel files
// (by name, their variant and version from the PE version resource).
// Everything else in a container is ignored.
import { readFileSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { readPe, type PeInfo } from '../inspect/windows/pe.js';
import { GRUB_EFI_FILE, GRUB_EFI_VARIANT } from './grub-efi.js';
import { WINDOWS_VARIANTS } from './select.js';
import { normalizeArch, type DriverMeta } from './store.js';
import { releaseFromVersion, type Container, type Entry } from './unpack.js';

export interface ImportOptions {
  /** patch level(s) of the medium, e.g. 'SP2' (else guessed from the container's name) */
  patchLevel?: string;
  /** OS release for files whose container does not say it, e.g. '2003' */
  osRelease?: string;
}

export interface Classified { entry: Entry; meta: DriverMeta }

export interface Classification { files: Classified[]; ignored: number; notes: string[] }

const MODULE = /(?:^|\/)(?:usr\/)?lib\/modules\/([^/]+)\/(?:.*\/)?([^/]+)\.ko(?:\.(?:xz|zst|gz))?$/;

/** Kernel flavour from a kernel release: 6.1.0-27-cloud-amd64 → cloud-amd64, 5.14.0-427.13.1.el9_4.x86_64 → x86_64. */
export function kernelFlavour(kver: string): string | undefined {
  const deb = /^\d+\.\d+(?:\.\d+)?-[\d.]+-(.+)$/.exec(kver);
  if (deb) return deb[1];
  return /\.(x86_64|i[3-6]86|aarch64|ppc64le|s390x|noarch)(?:\+\w+)?$/.exec(kver)?.[1];
}

/** virtio-win's OS folder names → the release names the store uses. */
export const WINDOWS_LABELS: Record<string, string> = {
  '2k': '2000', xp: 'xp', '2k3': '2003', vista: 'vista', '2k8': '2008', '2k8r2': '2008r2', w7: '7', w8: '8', 'w8.1': '8.1',
  '2k12': '2012', '2k12r2': '2012r2', w10: '10', '2k16': '2016', '2k19': '2019', '2k22': '2022', w11: '11', '2k25': '2025',
};
const WINDOWS_ARCHES: Record<string, string> = { x86: 'x86', i386: 'x86', amd64: 'amd64', x64: 'amd64', arm64: 'arm64' };
const DRIVER_FILE = /\.(sys|inf|cat)$/i;

/** NT version of a HAL/kernel → release, where the version alone is unambiguous. */
const NT_RELEASES: Record<string, string> = { '5.0': '2000', '5.1': 'xp', '5.2': '2003' };

/** 'SP2' from a name like 'WindowsServer2003-SP2-x86.iso' or 'sp2.cab'. */
export function patchLevelFromName(name: string): string | undefined {
  const m = /(?:^|[^a-z])sp(\d)(?![0-9])/i.exec(name);
  if (m) return `SP${m[1]}`;
  if (/(?:^|[^a-z])rtm(?:[^a-z]|$)/i.test(name)) return 'RTM';
  return undefined;
}

/** A .inf's text: Windows writes many of them as UTF-16 with a BOM. */
function readInf(path: string): string {
  const b = readFileSync(path);
  if (b[0] === 0xff && b[1] === 0xfe) return b.subarray(2).toString('utf16le');
  return b.toString('latin1');
}

/** `DriverVer = 09/13/2023,100.94.104.24600` → '100.94.104.24600' */
export function driverVer(infText: string): string | undefined {
  return /^\s*DriverVer\s*=\s*[^,\r\n]*,\s*([0-9][0-9.]*)/im.exec(infText)?.[1];
}

export async function classify(c: Container, entries: Entry[], opts: ImportOptions = {}): Promise<Classification> {
  const files: Classified[] = [];
  const notes: string[] = [];
  let ignored = 0;
  const common = { container: c.name, containerVersion: c.version };
  const namedLevel = opts.patchLevel ?? patchLevelFromName(c.name);
  const windowsPe: Entry[] = [];
  const virtio: { entry: Entry; release: string; arch: string }[] = [];

  for (const e of entries) {
    const mod = MODULE.exec(e.rel);
    if (mod) {
      const [, kver, name] = mod;
      const flavour = kernelFlavour(kver);
      const pkgArch = c.arch && !['all', 'noarch'].includes(c.arch) ? c.arch : undefined;
      const arch = pkgArch ?? flavour?.split('-').pop();
      if (!arch) { notes.push(`${e.rel}: no architecture (neither the package nor the kernel release names one); skipped`); continue; }
      files.push({ entry: e, meta: {
        ...common, component: name.replace(/-/g, '_'), osFamily: 'linux', version: kver, variant: flavour,
        arch: normalizeArch(arch), osRelease: c.osRelease ?? releaseFromVersion(kver) ?? opts.osRelease,
        patchLevels: opts.patchLevel ? [opts.patchLevel] : [], pathInContainer: e.rel,
      } });
      continue;
    }
    const grub = GRUB_EFI_FILE.exec(e.rel);
    if (grub) {
      // a GRUB set is chosen by the guest's GRUB version: only a package says which one it is
      if (!c.version) { notes.push(`${e.rel}: GRUB files need their package's version; import the package (.deb/.rpm) itself; skipped`); continue; }
      files.push({ entry: e, meta: {
        ...common, component: grub[1], osFamily: 'linux', version: c.version, variant: GRUB_EFI_VARIANT, arch: 'amd64',
        osRelease: c.osRelease ?? opts.osRelease, patchLevels: [], pathInContainer: e.rel,
      } });
      continue;
    }
    const parts = e.rel.split('/');
    const file = parts[parts.length - 1];
    const label = parts.length >= 3 ? WINDOWS_LABELS[parts[parts.length - 3].toLowerCase()] : undefined;
    const arch = parts.length >= 3 ? WINDOWS_ARCHES[parts[parts.length - 2].toLowerCase()] : undefined;
    if (label && arch && DRIVER_FILE.test(file)) { virtio.push({ entry: e, release: label, arch }); continue; }
    if (WINDOWS_VARIANTS[file.toLowerCase()]) { windowsPe.push(e); continue; }
    ignored++;
  }

  // virtio-win drivers: the version is the DriverVer of the .inf beside the file
  const sysFiles = virtio.filter(v => /\.sys$/i.test(v.entry.rel));
  const pe = await readPe([...sysFiles, ...windowsPe.map(entry => ({ entry }))].map(x => x.entry.abs));
  for (const v of virtio) {
    const dir = dirname(v.entry.abs);
    const stem = basename(v.entry.rel).replace(/\.[^.]+$/, '').toLowerCase();
    const infs = entries.filter(x => dirname(x.abs) === dir && /\.inf$/i.test(x.rel));
    const inf = infs.find(x => basename(x.rel).toLowerCase() === `${stem}.inf`) ?? (infs.length === 1 ? infs[0] : undefined);
    const peInfo = pe[v.entry.abs] as PeInfo | { error: string } | undefined;
    const version = (inf && driverVer(readInf(inf.abs))) ?? (peInfo && 'fileVersion' in peInfo ? peInfo.fileVersion : undefined);
    if (!version) notes.push(`${v.entry.rel}: no DriverVer in a .inf beside it and no version resource; stored as version 'unknown'`);
    files.push({ entry: v.entry, meta: {
      ...common, component: basename(v.entry.rel).toLowerCase(), osFamily: 'windows', osRelease: v.release,
      version: version ?? 'unknown', arch: v.arch, patchLevels: namedLevel ? [namedLevel] : [], pathInContainer: v.entry.rel,
    } });
  }

  // HAL and kernel files: the variant is the original file name in the version resource
  for (const e of windowsPe) {
    const info = pe[e.abs];
    if (!info || 'error' in info) { notes.push(`${e.rel}: not a readable PE file (${info && 'error' in info ? info.error : 'no answer'}); skipped`); continue; }
    const original = info.strings.OriginalFilename?.trim().toLowerCase();
    const variant = original && WINDOWS_VARIANTS[original] ? original : basename(e.rel).toLowerCase();
    const version = info.fileVersion ?? info.strings.FileVersion?.split(/\s/)[0];
    if (!version) { notes.push(`${e.rel}: no version in its version resource; skipped`); continue; }
    const nt = version.split('.').slice(0, 2).join('.');
    const osRelease = opts.osRelease ?? NT_RELEASES[nt];
    if (!osRelease) notes.push(`${e.rel}: Windows NT ${nt} does not name one release; pass --os-release (stored without one)`);
    // a file inside sp2.cab belongs to SP2 even on a medium whose name says nothing
    const level = opts.patchLevel ?? patchLevelFromName(c.name) ?? e.rel.split('/').map(patchLevelFromName).find(Boolean);
    if (!level) notes.push(`${e.rel}: no patch level (pass --patch-level, e.g. SP2); stored as fitting any`);
    files.push({ entry: e, meta: {
      ...common, component: variant.startsWith('hal') ? 'hal.dll' : 'ntoskrnl.exe', osFamily: 'windows', osRelease,
      version, variant, arch: info.machine === 0x14c ? 'x86' : info.machine === 0x8664 ? 'amd64' : info.machine === 0xaa64 ? 'arm64' : `0x${info.machine.toString(16)}`,
      patchLevels: level ? [level] : [], pathInContainer: e.rel,
    } });
  }
  return { files, ignored, notes };
}
