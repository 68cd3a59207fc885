// GRUB's x86_64-efi platform files (kernel.img, moddep.lst, *.mod, *.lst) as a
// drivers-db set, for `convert --firmware uefi` on a guest that lacks them.
// One row per file: component = the file name, variant = GRUB_EFI_VARIANT,
// version = the GRUB package version. A set is used only for exactly the
// guest's GRUB version (its grub-common/grub-pc, built from the same source):
// GRUB's EFI image and the modules it loads then match the guest's own GRUB.
import { chmod, copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { LinuxOs } from '../inspect/report.js';
import type { DriverFile, DriverStore } from './store.js';

export const GRUB_EFI_VARIANT = 'grub-x86_64-efi';
/** where GRUB keeps its x86_64-efi platform files, in a guest and in the package (Debian and RPM alike) */
export const GRUB_EFI_DIR = 'usr/lib/grub/x86_64-efi';
/** files of a package's GRUB_EFI_DIR (not its monolithic/ images): what grub-mkimage and GRUB at run time read */
export const GRUB_EFI_FILE = /^(?:usr\/)?lib\/grub\/x86_64-efi\/([^/]+)$/;
/** grub-mkimage needs these besides the modules */
const REQUIRED = ['kernel.img', 'moddep.lst'];

/** Packages that carry GRUB's version in a guest, and the one that ships the x86_64-efi files, per package manager. */
const PACKAGES = {
  dpkg: { version: ['grub-common', 'grub-pc', 'grub-pc-bin', 'grub2-common'], efi: 'grub-efi-amd64-bin', kind: 'Debian' },
  rpm: { version: ['grub2-common', 'grub2-tools', 'grub2-pc'], efi: 'grub2-efi-x64-modules', kind: 'rpm' },
} as const;

const noEpoch = (v: string) => v.replace(/^\d+:/, '');

export interface GrubEfiWant {
  /** the guest's GRUB package version (epoch dropped); undefined when it has no GRUB package */
  version?: string;
  /** the package that ships GRUB's x86_64-efi files for this guest */
  package: string;
  packageKind: string;
}

export function grubEfiWant(os: LinuxOs): GrubEfiWant {
  const p = os.packages.manager === 'rpm' ? PACKAGES.rpm : PACKAGES.dpkg;
  const have = p.version.map(n => os.packages.list.find(x => x.name === n)).find(x => x?.version);
  return { version: have?.version ? noEpoch(have.version) : undefined, package: p.efi, packageKind: p.kind };
}

/** What the store holds that a set can be chosen from (chooseGrubEfiSet). */
export const grubEfiCandidates = (store: DriverStore) => store.find({ osFamily: 'linux', variant: GRUB_EFI_VARIANT, arch: 'amd64' });

/** The set for exactly `version` (amd64), the later import per file; empty when incomplete. Pure, as chooseFile. */
export function chooseGrubEfiSet(candidates: readonly DriverFile[], version: string): DriverFile[] {
  const byName = new Map<string, DriverFile>();
  for (const f of [...candidates].sort((a, b) => a.id - b.id)) {
    if (f.osFamily === 'linux' && f.variant === GRUB_EFI_VARIANT && f.arch === 'amd64' && noEpoch(f.version) === version) byName.set(f.component, f);
  }
  return REQUIRED.every(n => byName.has(n)) ? [...byName.values()] : [];
}

/** Copy a stored set into `dir` (a GRUB platform directory grub-mkimage -d reads) and mark it used. */
export async function materializeGrubEfi(store: DriverStore, set: DriverFile[], dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const f of set) {
    await copyFile(store.objectPath(f), join(dir, f.component));
    await chmod(join(dir, f.component), 0o644); // objects are 0444; the guest's own files are 0644
    store.markUsed(f.id);
  }
}
