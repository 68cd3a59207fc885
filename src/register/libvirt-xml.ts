// libvirt domain XML from the virtual hardware description.
//
// Domain type 'qemu' (TCG) by default: /dev/kvm exists on the build hosts but
// ordinary guests hang or abort under it (shared/ARCHITECTURE.md), so a guest
// registered here must not need KVM. 'kvm' is there for hosts where it works.
import { unsupportedHardware } from '../errors.js';
import { xmlEscape as x, type DiskBus, type NicModel, type VirtualHardware } from './hardware.js';

export interface DomainXmlOptions {
  /** 'qemu' = TCG emulation (default), 'kvm' = hardware virtualisation */
  domainType?: 'qemu' | 'kvm';
  /** the first serial port (and the console on it) is written to this file */
  serialLog: string;
  /** a libvirt network to attach the NIC to; default: QEMU's user-mode network, which needs no host bridge and touches no host interface */
  network?: string;
}

export const FERRY_NS = 'https://ferry.dev/xmlns/libvirt/1';

const DISK: Record<DiskBus, { bus: string; dev: string; controller?: string } | undefined> = {
  'ide': { bus: 'ide', dev: 'hda' },
  'sata': { bus: 'sata', dev: 'sda' },
  'virtio-blk': { bus: 'virtio', dev: 'vda' },
  'virtio-scsi': { bus: 'scsi', dev: 'sda', controller: 'virtio-scsi' },
  'pvscsi': { bus: 'scsi', dev: 'sda', controller: 'vmpvscsi' },
  'lsilogic': { bus: 'scsi', dev: 'sda', controller: 'lsilogic' },
  'storvsc': undefined,
};

const NIC: Record<NicModel, string | undefined> = {
  'virtio-net-pci': 'virtio', 'e1000': 'e1000', 'e1000e': 'e1000e', 'rtl8139': 'rtl8139', 'vmxnet3': 'vmxnet3', 'netvsc': undefined,
};

export function domainXml(hw: VirtualHardware, opts: DomainXmlOptions): string {
  const disk = DISK[hw.disk.bus];
  if (!disk) throw unsupportedHardware(`disk bus ${hw.disk.bus}`, 'libvirt/QEMU', 'choose a profile with ide, sata, virtio-blk, virtio-scsi, pvscsi or lsilogic (e.g. --profile kvm-virtio)');
  const nic = NIC[hw.nic.model];
  if (!nic) throw unsupportedHardware(`NIC model ${hw.nic.model}`, 'libvirt/QEMU', 'choose a profile with virtio-net-pci, e1000, e1000e, rtl8139 or vmxnet3 (e.g. --profile kvm-virtio)');
  // VMware and Hyper-V gen 1 machines are i440fx PCs as far as QEMU can show them
  const machine = hw.machine === 'q35' ? 'q35' : 'pc';
  if (machine === 'q35' && disk.bus === 'ide') throw unsupportedHardware('IDE controller', 'the q35 machine', 'use sata or virtio-blk with q35, or machine pc');
  const log = x(opts.serialLog);
  // UEFI without secure boot: libvirt's auto-selection could pick OVMF with Microsoft's keys, which refuses a GRUB that only the guest signed (or nobody did)
  return `<domain type='${opts.domainType ?? 'qemu'}'>
  <name>${x(hw.name)}</name>
  <title>${x(`${hw.guest.name} (Ferry, profile ${hw.profile})`)}</title>
  <metadata>
    <ferry:register xmlns:ferry='${FERRY_NS}'>
      <ferry:profile>${x(hw.profile)}</ferry:profile>
      <ferry:image>${x(hw.disk.path)}</ferry:image>
      <ferry:mac-source>${hw.nic.macSource}</ferry:mac-source>
    </ferry:register>
  </metadata>
  <memory unit='MiB'>${hw.memoryMiB}</memory>
  <currentMemory unit='MiB'>${hw.memoryMiB}</currentMemory>
  <vcpu placement='static'>${hw.cpus}</vcpu>
  <os${hw.firmware === 'uefi' ? " firmware='efi'" : ''}>
    <type arch='x86_64' machine='${machine}'>hvm</type>${hw.firmware === 'uefi' ? `
    <firmware><feature enabled='no' name='secure-boot'/></firmware>` : ''}
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/></features>
  <clock offset='${hw.guest.family === 'windows' ? 'localtime' : 'utc'}'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
${disk.controller ? `    <controller type='scsi' index='0' model='${disk.controller}'/>\n` : ''}    <disk type='file' device='disk'>
      <driver name='qemu' type='${x(hw.disk.format === 'vpc' ? 'vpc' : hw.disk.format)}'/>
      <source file='${x(hw.disk.path)}'/>
      <target dev='${disk.dev}' bus='${disk.bus}'/>
    </disk>
    <interface type='${opts.network ? 'network' : 'user'}'>
${opts.network ? `      <source network='${x(opts.network)}'/>\n` : ''}      <mac address='${hw.nic.mac}'/>
      <model type='${nic}'/>
    </interface>
    <serial type='file'>
      <source path='${log}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='${log}' append='on'/>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
`;
}
