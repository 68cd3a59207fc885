// The virtual hardware a registered or exported guest gets, described once
// and neutrally: a hardware profile plus the caller's overrides (name,
// memory, CPUs, MAC) and facts about the disk and the guest. The libvirt,
// OVF and vmx generators all read this one description, so a guest exported
// as an OVA and the same guest defined in libvirt get the same hardware.
import { randomBytes } from 'node:crypto';
import { usageError, unsupportedHardware } from '../errors.js';
import type { InspectReport } from '../inspect/report.js';
import type { Profile } from '../profiles/profiles.js';

export const DISK_BUSES = ['ide', 'sata', 'virtio-blk', 'virtio-scsi', 'pvscsi', 'lsilogic', 'storvsc'] as const;
export type DiskBus = typeof DISK_BUSES[number];
export const NIC_MODELS = ['virtio-net-pci', 'e1000', 'e1000e', 'rtl8139', 'vmxnet3', 'netvsc'] as const;
export type NicModel = typeof NIC_MODELS[number];
export type Machine = 'pc' | 'q35' | 'vmware' | 'hyperv-gen1';

export interface GuestFacts {
  family: 'linux' | 'windows' | 'unknown';
  /** os-release ID (debian, ubuntu, rhel, …) or 'windows' */
  distro?: string;
  /** major version: 12 for Debian 12, 2019 for Windows Server 2019 */
  version?: string;
  bits: 32 | 64;
  /** a human name for descriptions: "Debian GNU/Linux 12 (bookworm)" */
  name: string;
  firmware?: 'bios' | 'uefi';
  /** MAC addresses the guest binds interface names to */
  macs: string[];
}

export interface VirtualHardware {
  name: string;
  profile: string;
  platform: Profile['platform'];
  machine: Machine;
  firmware: 'bios' | 'uefi';
  cpus: number;
  memoryMiB: number;
  disk: { path: string; format: string; virtualSize: number; bus: DiskBus };
  nic: { model: NicModel; mac: string; macSource: 'given' | 'guest' | 'generated' };
  serialConsole: boolean;
  guest: GuestFacts;
}

export interface HardwareOverrides {
  name: string;
  memoryMiB?: number;
  cpus?: number;
  mac?: string;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** The guest facts the generators need, from `ferry inspect`'s report (unknown when it found no OS). */
export function guestFacts(report: InspectReport | undefined): GuestFacts {
  const os = report?.operatingSystems[0];
  if (!os) return { family: 'unknown', bits: 64, name: 'unknown operating system', macs: [] };
  const bits = /86$|^i\d86|^x86$|32/.test(os.arch ?? '') && !/64/.test(os.arch ?? '') ? 32 : 64;
  if (os.type === 'linux') {
    return {
      family: 'linux', distro: os.distro, version: os.version?.split('.')[0], bits, name: os.name,
      firmware: os.firmware === 'unknown' ? undefined : os.firmware,
      macs: os.network.macBindings.map(b => b.mac.toLowerCase()).filter(m => MAC_RE.test(m)),
    };
  }
  const year = /(20\d\d|XP|Vista|7|8\.1|8|10|11)/.exec(os.productName ?? '')?.[1];
  return { family: 'windows', distro: 'windows', version: year, bits, name: os.productName ?? 'Windows', macs: [] };
}

/** A locally administered MAC in QEMU's 52:54:00 range. */
export function generatedMac(): string {
  return ['52', '54', '00', ...[...randomBytes(3)].map(b => b.toString(16).padStart(2, '0'))].join(':');
}

export function describeHardware(profile: Profile, o: HardwareOverrides,
  disk: { path: string; format: string; virtualSize: number }, guest: GuestFacts): VirtualHardware {
  if (profile.fromInventory) throw usageError(`profile ${profile.name} describes a physical machine, not virtual hardware; choose a virtual profile (kvm-virtio, kvm-legacy, vmware, hyperv)`);
  if (!NAME_RE.test(o.name)) throw usageError(`--name '${o.name}' must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  if (!(DISK_BUSES as readonly string[]).includes(profile.diskBus)) throw unsupportedHardware(`disk bus '${profile.diskBus}'`, 'Ferry\'s hardware description', `use one of ${DISK_BUSES.join(', ')} in profile ${profile.name}`);
  if (!(NIC_MODELS as readonly string[]).includes(profile.nicModel)) throw unsupportedHardware(`NIC model '${profile.nicModel}'`, 'Ferry\'s hardware description', `use one of ${NIC_MODELS.join(', ')} in profile ${profile.name}`);
  const machine = (['pc', 'q35', 'vmware', 'hyperv-gen1'] as const).find(m => m === profile.machine);
  if (!machine) throw unsupportedHardware(`machine '${profile.machine}'`, 'Ferry\'s hardware description', 'use pc, q35, vmware or hyperv-gen1');
  const mac = o.mac?.toLowerCase();
  if (mac !== undefined && !MAC_RE.test(mac)) throw usageError(`--mac ${o.mac} is not a MAC address; write it like 52:54:00:12:34:56`);
  const cpus = o.cpus ?? profile.cpus;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 255) throw usageError(`--cpus must be a whole number from 1 to 255, not ${cpus}`);
  const memoryMiB = o.memoryMiB ?? profile.memoryMiB;
  if (!Number.isInteger(memoryMiB) || memoryMiB < 64) throw usageError(`--memory must be at least 64M, not ${memoryMiB} MiB`);
  return {
    name: o.name, profile: profile.name, platform: profile.platform, machine,
    // a guest installed for UEFI has no BIOS boot code (and the reverse), so what the guest needs wins over the profile
    firmware: guest.firmware ?? (profile.firmware === 'uefi' ? 'uefi' : 'bios'),
    cpus, memoryMiB,
    disk: { ...disk, bus: profile.diskBus as DiskBus },
    // the guest's own MAC binding keeps eth0 (or its netplan/ifcfg match) working on the new NIC
    nic: mac ? { model: profile.nicModel as NicModel, mac, macSource: 'given' }
      : guest.macs[0] ? { model: profile.nicModel as NicModel, mac: guest.macs[0], macSource: 'guest' }
        : { model: profile.nicModel as NicModel, mac: generatedMac(), macSource: 'generated' },
    serialConsole: profile.serialConsole,
    guest,
  };
}

/** "2G", "2048M", "2048" (MiB) → MiB. */
export function parseMemory(s: string | number): number {
  if (typeof s === 'number') return s;
  const m = /^(\d+(?:\.\d+)?)\s*([MGT]?)(i?B)?$/i.exec(s.trim());
  if (!m) throw usageError(`cannot read --memory '${s}'; write it like 2G or 512M`);
  const mult = { '': 1, m: 1, g: 1024, t: 1024 * 1024 }[m[2].toLowerCase() as '' | 'm' | 'g' | 't'];
  return Math.round(Number(m[1]) * mult);
}

export const xmlEscape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
