// What `ferry inspect` reports: one JSON document describing a disk's file
// systems and every operating system found on them. Read statically: no guest
// code runs and the source is opened read-only.
//
// A part that cannot be read (a corrupt hive, an rpm database the host's rpm
// cannot open, a garbage file system) does not fail the whole report: its
// entry carries an `error` with a typed reason and the rest still comes out.

/** Why one item of the report could not be read. */
export interface ItemError {
  /** e.g. FS_UNREADABLE, HIVE_CORRUPT, RPMDB_UNREADABLE, INITRAMFS_UNREADABLE, ENCRYPTED */
  code: string;
  message: string;
}

export interface FileSystemEntry {
  /** partition number (0: the whole disk is one file system) */
  partition: number;
  /** an LVM logical volume inside the partition (a PV): "vg/lv" */
  lv?: string;
  /** byte offset and size of the partition (of the logical volume) */
  start: number;
  size: number;
  /** blkid TYPE (ext4, xfs, btrfs, vfat, ntfs, swap, crypto_LUKS, BitLocker, …); absent when unknown */
  type?: string;
  uuid?: string;
  label?: string;
  /** bytes in use, when the file system could be mounted or measured */
  usedBytes?: number;
  /** LUKS / BitLocker: the contents cannot be read without a key */
  encrypted?: 'luks' | 'bitlocker';
  error?: ItemError;
}

export interface KernelModuleSet {
  /** module names (no .ko suffix, '-' normalised to '_') */
  storage: string[];
  network: string[];
}

export interface Initramfs {
  path: string;
  /** compression of the main archive: gzip, xz, zstd, lz4, lzma, bzip2 or none */
  compression?: string;
  /** uncompressed cpio archives in front of the main one (early microcode) */
  earlyCpio: number;
  /** every kernel module in it, normalised names, sorted */
  modules: string[];
  error?: ItemError;
}

export interface LinuxKernel {
  /** uname -r, e.g. 6.1.0-27-amd64 */
  version: string;
  /** Debian: amd64, cloud-amd64 (after the ABI number); RHEL family: x86_64, x86_64+debug (the architecture suffix) */
  flavour?: string;
  /** guest path of the image, e.g. /boot/vmlinuz-6.1.0-27-amd64 */
  path: string;
  /** the boot loader starts this one by default */
  default: boolean;
  /** its command line, when the boot loader names one */
  cmdline?: string;
  initramfs?: Initramfs;
  /** storage and network drivers this kernel has as modules */
  modules: KernelModuleSet;
  /** of those, the ones its initramfs does not contain */
  missingFromInitramfs: KernelModuleSet;
}

export interface FstabEntry {
  spec: string;
  /** how spec names the device */
  by: 'path' | 'uuid' | 'label' | 'partuuid' | 'partlabel' | 'other';
  mountpoint: string;
  type: string;
  options: string;
}

export interface NetInterface {
  name: string;
  /** which configuration system: ifupdown, netplan, networkmanager, networkd, ifcfg */
  source: string;
  /** guest path of the file */
  file: string;
  method: 'static' | 'dhcp' | 'manual' | 'loopback' | 'other';
  addresses: string[];
  gateway?: string;
  dns?: string[];
}

export interface MacBinding {
  /** interface name bound */
  name: string;
  mac: string;
  /** udev-rules, systemd-link, netplan, networkmanager, ifcfg */
  source: string;
  file: string;
}

export interface Package { name: string; version: string; arch?: string }

export interface LinuxOs {
  type: 'linux';
  /** guest mount layout: mountpoint → partition number */
  mounts: Record<string, number>;
  /** os-release ID: debian, ubuntu, rhel, rocky, fedora, … */
  distro: string;
  name: string;
  /** VERSION_ID, e.g. 12 */
  version?: string;
  codename?: string;
  /** point release / patch level, e.g. 12.7 (debian_version, redhat-release) */
  patchLevel?: string;
  arch?: string;
  hostname?: string;
  machineId?: string;
  kernels: LinuxKernel[];
  bootloader: { kind: 'grub-bios' | 'grub-efi' | 'systemd-boot' | 'unknown'; config?: string };
  firmware: 'bios' | 'uefi' | 'unknown';
  fstab: FstabEntry[];
  network: { interfaces: NetInterface[]; macBindings: MacBinding[] };
  packages: { manager: 'dpkg' | 'rpm' | 'none'; list: Package[]; error?: ItemError };
  /** hypervisor guest tools found: open-vm-tools, vmware-tools, hyperv-daemons, qemu-guest-agent, virtualbox-guest-additions */
  guestTools: string[];
  errors: ItemError[];
}

export interface WindowsDriver { name: string; start: number; group?: string; imagePath?: string; type?: number }

export interface WindowsNic {
  /** interface GUID */
  guid: string;
  /** connection name, e.g. "Local Area Connection" */
  name?: string;
  dhcp: boolean;
  addresses: string[];
  gateways: string[];
  dns: string[];
  /** the adapter's driver / service */
  service?: string;
  description?: string;
}

export interface WindowsOs {
  type: 'windows';
  /** the partition holding \Windows */
  partition: number;
  /** guest path of the system root, e.g. /Windows */
  systemRoot: string;
  productName?: string;
  edition?: string;
  /** CurrentVersion, e.g. 6.3 or 5.2 */
  version?: string;
  build?: string;
  /** e.g. "Service Pack 2" or UBR "19045.3803" */
  patchLevel?: string;
  arch?: string;
  hostname?: string;
  /** variant: the file setup copied to hal.dll, e.g. halmacpi.dll; fileVersion from its version resource */
  hal?: { file: string; variant: string; acpi: boolean; multiprocessor: boolean; how: 'version-resource' | 'digest' | 'registry'; fileVersion?: string };
  /** variant: e.g. ntkrpamp.exe; pae only for 32-bit kernels */
  kernel?: { file: string; variant: string; multiprocessor: boolean; pae?: boolean; how: 'version-resource' | 'digest' | 'registry'; fileVersion?: string };
  /** storage drivers loaded at boot (Start 0), with their Start values */
  bootStorageDrivers: WindowsDriver[];
  services: WindowsDriver[];
  criticalDevices: { id: string; service?: string; classGuid?: string }[];
  nics: WindowsNic[];
  applications: { name: string; version?: string; publisher?: string }[];
  errors: ItemError[];
}

export type OperatingSystem = LinuxOs | WindowsOs;

export interface InspectReport {
  source: string;
  format: string;
  virtualSize: number;
  partitionTable: { label: string; id: string } | null;
  fileSystems: FileSystemEntry[];
  operatingSystems: OperatingSystem[];
  /** set when no operating system was found */
  note?: string;
  inspectedAt: string;
}
