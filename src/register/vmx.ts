// A VMware .vmx from the virtual hardware description, for the vmdk that
// sits next to it (monolithicSparse: one file, what Workstation and
// vmkfstools import).
import { unsupportedHardware } from '../errors.js';
import { guestOsIds } from './guest-os.js';
import type { DiskBus, NicModel, VirtualHardware } from './hardware.js';

/** the vmx device for each bus VMware has; virtio and Hyper-V's synthetic devices it has not */
const DISK: Partial<Record<DiskBus, { dev: string; virtualDev?: string }>> = {
  'ide': { dev: 'ide0' },
  'sata': { dev: 'sata0' },
  'pvscsi': { dev: 'scsi0', virtualDev: 'pvscsi' },
  'lsilogic': { dev: 'scsi0', virtualDev: 'lsilogic' },
};
const NIC: Partial<Record<NicModel, string>> = { 'vmxnet3': 'vmxnet3', 'e1000': 'e1000', 'e1000e': 'e1000e' };

/** qemu-img's vmdk adapter_type for the header's ddb.adapterType (what VMware shows as the disk's controller) */
export function vmdkAdapterType(bus: DiskBus): 'ide' | 'lsilogic' {
  return bus === 'ide' ? 'ide' : 'lsilogic';
}

/** VMware's statically assigned range; a MAC outside it needs checkMACAddress = FALSE or ESXi rejects the VM */
const inVmwareRange = (mac: string) => /^00:50:56:[0-3][0-9a-f]:/i.test(mac);

export function vmxFile(hw: VirtualHardware, vmdkName: string): string {
  const disk = DISK[hw.disk.bus];
  if (!disk) throw unsupportedHardware(`disk bus ${hw.disk.bus}`, 'VMware', 'export with a profile on pvscsi, lsilogic, sata or ide (--profile vmware or kvm-legacy)');
  const nic = NIC[hw.nic.model];
  if (!nic) throw unsupportedHardware(`NIC model ${hw.nic.model}`, 'VMware', 'export with a profile on vmxnet3, e1000 or e1000e (--profile vmware or kvm-legacy)');
  const kv: [string, string][] = [
    ['.encoding', 'UTF-8'],
    ['config.version', '8'],
    ['virtualHW.version', '14'],
    ['displayName', hw.name],
    ['annotation', `Converted by Ferry (profile ${hw.profile}): ${hw.guest.name}`],
    ['guestOS', guestOsIds(hw.guest).vmx],
    ['firmware', hw.firmware === 'uefi' ? 'efi' : 'bios'],
    ['memsize', String(hw.memoryMiB)],
    ['numvcpus', String(hw.cpus)],
    ['pciBridge0.present', 'TRUE'],
  ];
  kv.push([`${disk.dev}.present`, 'TRUE']);
  if (disk.virtualDev) kv.push([`${disk.dev}.virtualDev`, disk.virtualDev]);
  kv.push([`${disk.dev}:0.present`, 'TRUE'], [`${disk.dev}:0.deviceType`, 'disk'], [`${disk.dev}:0.fileName`, vmdkName]);
  kv.push(['ethernet0.present', 'TRUE'], ['ethernet0.virtualDev', nic], ['ethernet0.connectionType', 'bridged'],
    ['ethernet0.networkName', 'VM Network'], ['ethernet0.addressType', 'static'], ['ethernet0.address', hw.nic.mac]);
  // the guest's own MAC (kept so its interface binding still matches) is usually not VMware's
  if (!inVmwareRange(hw.nic.mac)) kv.push(['ethernet0.checkMACAddress', 'FALSE']);
  if (hw.serialConsole) kv.push(['serial0.present', 'TRUE'], ['serial0.fileType', 'file'], ['serial0.fileName', `${hw.name}-serial0.log`]);
  return kv.map(([k, v]) => `${k} = "${v.replace(/[|"]/g, c => `|${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)}"`).join('\n') + '\n';
}
