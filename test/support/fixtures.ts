// The slow fixtures: built once per machine by test/fixtures/, cached under a path
// keyed by the building script's hash.
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from './harness.js';

async function lastLines(script: string, args: string[] = []): Promise<string[]> {
  const r = await execa('bash', [join(ROOT, 'test', 'fixtures', script), ...args], { stdin: 'ignore', stderr: 'inherit' });
  return String(r.stdout).trim().split('\n');
}

export interface DataDisks { gpt: string; mbr: string; manifest: Manifest }
export interface Manifest { disks: Record<'gpt' | 'mbr', { sha256: string; partitions: ManifestPartition[]; regions?: unknown }> }
export interface ManifestPartition { number: number; fs?: { type: string; uuid?: string; label?: string }; notable?: Record<string, unknown> }

let dataDisks: Promise<DataDisks> | undefined;
export function buildDataDisks(): Promise<DataDisks> {
  dataDisks ??= (async () => {
    const [gpt, mbr, manifest] = await lastLines('build-data-disks.sh');
    return { gpt, mbr, manifest: JSON.parse(await readFile(manifest, 'utf8')) as Manifest };
  })();
  return dataDisks;
}

let guest: Promise<string> | undefined;
/** The bootable Debian 12 guest (raw). */
export function buildDebianGuest(): Promise<string> {
  guest ??= lastLines('build-debian-guest.sh').then(l => l.at(-1)!);
  return guest;
}

export interface LegacyGuest { disk: string; manifest: LegacyManifest }
export interface LegacyManifest {
  rootUuid: string; rootLabel: string; distro: string; version: string; codename: string; patchLevel: string;
  hostname: string; machineId: string; kernel: string; flavour: string; cmdlineHas: string;
  initramfs: { compression: string; modules: string[] }; firmware: string; bootloader: string;
  fstab: { spec: string; by: string; mountpoint: string }[];
  interface: { name: string; source: string; method: string; addresses: string[]; gateway: string };
  macBinding: { name: string; mac: string; source: string };
  package: { name: string; version: string }; packageCount: number; guestTools: string[];
}
let legacy: Promise<LegacyGuest> | undefined;
/** The Debian guest bound to old hardware: IDE/SATA-only initramfs, /dev/sda names, a MAC-bound eth0, open-vm-tools. */
export function buildLegacyGuest(): Promise<LegacyGuest> {
  legacy ??= (async () => {
    const [disk, manifest] = await lastLines('build-legacy-guest.sh');
    return { disk, manifest: JSON.parse(await readFile(manifest, 'utf8')) as LegacyManifest };
  })();
  return legacy;
}

/** What test/fixtures/build-rpm-guest.sh wrote into manifest.json: the values `ferry inspect` must find. */
export interface RpmGuestManifest {
  fixture: 'rpm-guest';
  scriptHash: string;
  disk: { file: string; sha256: string; virtualSize: number; partitionTable: { label: string; id: string }; partUuids: Record<string, string> };
  fileSystems: { partition: number; start: number; size: number; type: string; uuid: string; label?: string; encrypted?: 'luks' }[];
  luks: { partition: number; uuid: string; passphrase: string; version: number };
  os: {
    type: 'linux';
    mounts: Record<string, number>;
    distro: string;
    /** PRETTY_NAME; osReleaseName is NAME */
    name: string;
    osReleaseName: string;
    version: string;
    patchLevel: string;
    arch: string;
    hostname: string;
    machineId: string;
    firmware: 'uefi';
    bootloader: { kind: 'grub-efi'; config: string; espConfig: string };
    defaultKernel: string;
    kernels: {
      version: string; flavour: string; path: string; default: boolean;
      /** the BLS options with GRUB's variables expanded ($tuned_params is set to "" in grub.cfg) */
      cmdline: string;
      initramfs: { path: string; compression: string; earlyCpio: number; modules: string[] };
      /** the drivers the fixture is built to have: a reader may classify more (libata, scsi_mod, …) */
      modules: { storage: string[]; network: string[] };
      missingFromInitramfs: { storage: string[]; network: string[] };
      hasVirtioInInitramfs: boolean;
      allModules: string[];
    }[];
    fstab: { spec: string; by: string; mountpoint: string; type: string; options: string }[];
    network: {
      interfaces: { name: string; source: string; file: string; method: string; addresses: string[]; gateway?: string; dns?: string[] }[];
      macBindings: { name: string; mac: string; source: string; file: string }[];
    };
    packages: { manager: 'rpm'; list: { name: string; version: string; arch: string }[] };
    guestTools: string[];
    selinux: string;
  };
}
export interface RpmGuest { disk: string; manifest: RpmGuestManifest }

let rpmGuest: Promise<RpmGuest> | undefined;
/** The rpm-family (Rocky 9.4-like, UEFI, LUKS data volume) inspection fixture (raw) and its manifest. */
export function buildRpmGuest(): Promise<RpmGuest> {
  rpmGuest ??= (async () => {
    const lines = await lastLines('build-rpm-guest.sh');
    const manifest = lines.at(-1)!;
    return { disk: lines.at(-2)!, manifest: JSON.parse(await readFile(manifest, 'utf8')) as RpmGuestManifest };
  })();
  return rpmGuest;
}

export interface PhonyWindowsDisk {
  image: string;
  sha256: string;
  fileSystems: { partition: number; type: string; label: string; uuid: string; start: number; size: number }[];
  /** the WindowsOs an inspection must report (without errors) */
  expect: Record<string, any> & { partition: number; systemRoot: string; hostname: string };
  staleHostname: string | null;
  /** the damaged copy only: the hive that was cut in half */
  damagedHive?: string;
}
export interface PhonyWindows { win2003: PhonyWindowsDisk; win2019: PhonyWindowsDisk; damaged: PhonyWindowsDisk; manifest: string }
let phonyWindows: Promise<PhonyWindows> | undefined;
/** Disks that look like Windows Server 2003 SP2 (x86) and 2019 (x64) to a static inspector, and a 2019 copy with a truncated SOFTWARE hive. */
export function buildPhonyWindows(): Promise<PhonyWindows> {
  phonyWindows ??= (async () => {
    const lines = await lastLines('build-phony-windows.sh');
    const manifest = lines.at(-1)!;
    const m = JSON.parse(await readFile(manifest, 'utf8')) as { disks: Record<string, PhonyWindowsDisk> };
    return { win2003: m.disks.win2003, win2019: m.disks.win2019, damaged: m.disks['win2019-damaged'], manifest };
  })();
  return phonyWindows;
}

let lvmGuest: Promise<string> | undefined;
/** The bootable Debian 12 guest whose root (ext4) and /srv (xfs) are LVM logical volumes of VG ferryvg (raw). */
export function buildLvmGuest(): Promise<string> {
  lvmGuest ??= lastLines('build-lvm-guest.sh').then(l => l.at(-1)!);
  return lvmGuest;
}

/** What test/fixtures/build-ntfs-disk.sh wrote into manifest.json. */
export interface NtfsDiskManifest {
  scriptHash: string;
  disks: Record<'ntfs' | 'ntfs-hiber', { image: string; sha256: string }>;
  partition: { number: number; start: number; size: number; label: string; serial: string; usedBytes: number };
  deletedBytes: number;
  files: {
    acl: string; aclHex: string; streams: string; streamNames: string[]; compressedDir: string; compressed: string[];
    sparse: string; hardLinks: string[]; hidden: string;
  };
}
let ntfsDisk: Promise<NtfsDiskManifest> | undefined;
/** The NTFS data disk (GPT; ACLs, streams, compressed, sparse, hard-linked and deleted files) and a hibernated copy. */
export function buildNtfsDisk(): Promise<NtfsDiskManifest> {
  ntfsDisk ??= lastLines('build-ntfs-disk.sh').then(async l => JSON.parse(await readFile(l.at(-1)!, 'utf8')) as NtfsDiskManifest);
  return ntfsDisk;
}

export interface UefiGuests { uefi: string; bios: string; info: Record<string, string> }
let uefiGuests: Promise<UefiGuests> | undefined;
/** Two Debian 12 guests from one tree: uefi.raw (GPT, ESP with only \EFI\debian\grubx64.efi) and bios.raw (MBR, BIOS GRUB, the guest's own x86_64-efi modules). */
export function buildUefiGuests(): Promise<UefiGuests> {
  uefiGuests ??= (async () => {
    const [uefi, bios, info] = await lastLines('build-uefi-guest.sh');
    const pairs = (await readFile(info, 'utf8')).trim().split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]);
    return { uefi, bios, info: Object.fromEntries(pairs) };
  })();
  return uefiGuests;
}

/** Debian's grub-efi-amd64-bin .deb of exactly `version` (apt-get download, cached): GRUB's x86_64-efi modules to import into drivers-db. */
export async function fetchGrubEfiDeb(version: string): Promise<string> {
  return (await lastLines('fetch-grub-efi-deb.sh', [version])).at(-1)!;
}

let customizeGuest: Promise<string> | undefined;
/** The Debian 12 guest with openssh-server (host keys of its own), ping and a probe unit that prints identity and peer reachability, booted with ferry.stay (raw). */
export function buildCustomizeGuest(): Promise<string> {
  customizeGuest ??= lastLines('build-customize-guest.sh').then(l => l.at(-1)!);
  return customizeGuest;
}
