// Does an image fit a machine? Everything here is decided from the machine's
// inventory and a read-only look at the image, before a byte is written:
// which disk, architecture, firmware, room for the image's data, drivers.
import { FerryError } from '../errors.js';
import type { InspectReport } from '../inspect/report.js';

export interface InventoryDisk {
  name: string; path: string; kind?: string; sizeBytes: number; model?: string | null; serial?: string | null;
  wwn?: string | null; removable?: boolean | null; readOnly?: boolean | null; byId?: string[];
}
export interface Inventory {
  ferryInventory: 1;
  system?: { uuid?: string | null; serial?: string | null; manufacturer?: string | null; model?: string | null };
  firmware?: { type?: string | null };
  cpu?: { architecture?: string | null };
  disks?: InventoryDisk[];
  nics?: { name: string; mac?: string | null; pci?: { modalias?: string | null; id?: string | null } | null }[];
  storageControllers?: { modalias?: string | null; id?: string | null; address?: string | null }[];
}

const describeDisk = (d: InventoryDisk) => `${d.path} (${(d.sizeBytes / 2 ** 30).toFixed(1)} GiB${d.model ? `, ${d.model}` : ''}${d.serial ? `, serial ${d.serial}` : ''})`;

/** The disk a deploy or capture works on: the hint (name, path, serial, WWN, by-id link or model), else the machine's only disk. */
export function chooseDisk(machineId: string, inv: Inventory, hint?: string): InventoryDisk {
  const disks = (inv.disks ?? []).filter(d => (d.kind ?? 'disk') === 'disk' && d.sizeBytes > 0 && d.readOnly !== true);
  const list = disks.map(describeDisk).join('; ') || 'none';
  if (hint) {
    const h = hint.replace(/^\/dev\//, '');
    const hit = disks.filter(d => d.name === h || d.path === hint || d.serial === hint || d.wwn === hint || d.byId?.includes(hint) || (!!d.model && d.model.includes(hint)));
    if (hit.length === 1) return hit[0];
    throw new FerryError(hit.length ? 'DISK_AMBIGUOUS' : 'DISK_NOT_FOUND', 2,
      `machine ${machineId}: --disk ${hint} matches ${hit.length ? `${hit.length} disks` : 'no disk'}; its disks: ${list}`, { machine: machineId, disks: disks.map(d => d.path) });
  }
  if (disks.length === 1) return disks[0];
  throw new FerryError(disks.length ? 'DISK_AMBIGUOUS' : 'DISK_NOT_FOUND', 2,
    disks.length ? `machine ${machineId} has ${disks.length} disks; choose one with --disk: ${list}` : `machine ${machineId} reported no disk to work on`,
    { machine: machineId, disks: disks.map(d => d.path) });
}

const ARCH_ALIASES: Record<string, string> = { amd64: 'x86_64', x86_64: 'x86_64', x64: 'x86_64', arm64: 'aarch64', aarch64: 'aarch64', i386: 'i686', i686: 'i686', x86: 'i686' };
const normArch = (a?: string | null) => (a ? ARCH_ALIASES[a.toLowerCase()] ?? a.toLowerCase() : undefined);

/** Architecture and firmware of the image's operating system against the machine's. */
export function checkPlatform(machineId: string, inv: Inventory, report: InspectReport, image: string): void {
  const os = report.operatingSystems[0];
  if (!os) throw new FerryError('NO_OS_FOUND', 3, `${image} holds no operating system to deploy`, { image });
  const want = normArch(os.arch), have = normArch(inv.cpu?.architecture);
  if (want && have && !(want === have || (want === 'i686' && have === 'x86_64'))) {
    throw new FerryError('ARCH_MISMATCH', 5, `${image} is a ${want} system; machine ${machineId} is ${have}; nothing was written`, { machine: machineId, image, imageArch: want, machineArch: have });
  }
  const fw = (inv.firmware?.type ?? '').toLowerCase();
  const imageFw = 'firmware' in os ? (os as { firmware: string }).firmware : 'unknown';
  if ((fw === 'bios' || fw === 'uefi') && (imageFw === 'bios' || imageFw === 'uefi') && fw !== imageFw) {
    throw new FerryError('FIRMWARE_MISMATCH', 5,
      `${image} boots with ${imageFw.toUpperCase()} but machine ${machineId} has ${fw.toUpperCase()} firmware; switch the machine's firmware mode or deploy an image made for it (nothing was written)`,
      { machine: machineId, image, imageFirmware: imageFw, machineFirmware: fw });
  }
}

/** the machine's NIC that is up and has a MAC (the first one): the MAC bindings of the image move to it */
export function primaryMac(inv: Inventory): string | undefined {
  return inv.nics?.find(n => n.mac && n.pci)?.mac ?? undefined;
}
