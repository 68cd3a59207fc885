// An OVF 2.0 envelope from the virtual hardware description: References
// (the disk file), DiskSection, NetworkSection and one VirtualSystem whose
// VirtualHardwareSection lists CPU, memory, the disk controller for the
// profile's bus, the disk on it, the NIC of the profile's model (with the
// MAC) and, for serial-console profiles, a serial port.
//
// Items use the CIM RASD vocabulary (ResourceType numbers from
// CIM_ResourceAllocationSettingData); its schema wants the rasd elements in
// alphabetical order, so item() sorts them.
import { xmlEscape as x, type DiskBus, type NicModel, type VirtualHardware } from './hardware.js';
import { guestOsIds } from './guest-os.js';

export const OVF_NS = 'http://schemas.dmtf.org/ovf/envelope/2';
export const RASD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData';
export const VSSD_NS = 'http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData';
export const VMW_NS = 'http://www.vmware.com/schema/ovf';
export const STREAM_OPTIMIZED = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';

export const RESOURCE = { processor: 3, memory: 4, ideController: 5, scsiController: 6, ethernet: 10, disk: 17, otherStorage: 20, serialPort: 21 } as const;

/** the controller item for each disk bus: ResourceType and ResourceSubType */
export const CONTROLLER: Record<DiskBus, { type: number; subType: string; name: string }> = {
  'ide': { type: RESOURCE.ideController, subType: 'PIIX4', name: 'IDE Controller 0' },
  'sata': { type: RESOURCE.otherStorage, subType: 'AHCI', name: 'SATA Controller 0' },
  'virtio-blk': { type: RESOURCE.otherStorage, subType: 'virtio-blk', name: 'VirtIO Block Controller 0' },
  'virtio-scsi': { type: RESOURCE.scsiController, subType: 'virtio-scsi', name: 'SCSI Controller 0' },
  'pvscsi': { type: RESOURCE.scsiController, subType: 'VirtualSCSI', name: 'SCSI Controller 0' },
  'lsilogic': { type: RESOURCE.scsiController, subType: 'lsilogic', name: 'SCSI Controller 0' },
  'storvsc': { type: RESOURCE.scsiController, subType: 'storvsc', name: 'Synthetic SCSI Controller 0' },
};

export const NIC_SUBTYPE: Record<NicModel, string> = {
  'virtio-net-pci': 'virtio-net', 'e1000': 'E1000', 'e1000e': 'E1000e', 'rtl8139': 'rtl8139', 'vmxnet3': 'VmxNet3', 'netvsc': 'netvsc',
};

export interface OvfDisk {
  /** the file name inside the OVA / next to the .ovf */
  href: string;
  /** bytes of that file */
  fileSize: number;
  /** the disk's virtual size in bytes */
  capacity: number;
  /** bytes the guest data occupies (the source image's allocation) */
  populatedSize?: number;
}

export const NETWORK_NAME = 'VM Network';

function item(fields: Record<string, string | number | boolean | undefined>): string {
  const lines = Object.keys(fields).filter(k => fields[k] !== undefined).sort()
    .map(k => `        <rasd:${k}>${x(String(fields[k]))}</rasd:${k}>`);
  return `      <Item>\n${lines.join('\n')}\n      </Item>`;
}

export function ovfEnvelope(hw: VirtualHardware, disk: OvfDisk): string {
  const os = guestOsIds(hw.guest);
  const ctl = CONTROLLER[hw.disk.bus];
  const systemType = hw.platform === 'vmware' ? 'vmx-14' : hw.platform === 'hyperv' ? 'hyperv-gen1' : `qemu-${hw.machine}`;
  const items = [
    item({ AllocationUnits: 'hertz * 10^6', Description: 'Number of virtual CPUs', ElementName: `${hw.cpus} virtual CPU(s)`, InstanceID: 1, ResourceType: RESOURCE.processor, VirtualQuantity: hw.cpus }),
    item({ AllocationUnits: 'byte * 2^20', Description: 'Memory size', ElementName: `${hw.memoryMiB} MB of memory`, InstanceID: 2, ResourceType: RESOURCE.memory, VirtualQuantity: hw.memoryMiB }),
    item({ Address: 0, Description: `${hw.disk.bus} disk controller`, ElementName: ctl.name, InstanceID: 3, ResourceSubType: ctl.subType, ResourceType: ctl.type }),
    item({ AddressOnParent: 0, ElementName: 'Hard disk 1', HostResource: 'ovf:/disk/vmdisk1', InstanceID: 4, Parent: 3, ResourceType: RESOURCE.disk }),
    item({
      Address: hw.nic.mac, AddressOnParent: 7, AutomaticAllocation: true, Connection: NETWORK_NAME,
      Description: `${NIC_SUBTYPE[hw.nic.model]} ethernet adapter on "${NETWORK_NAME}"`, ElementName: 'Network adapter 1',
      InstanceID: 5, ResourceSubType: NIC_SUBTYPE[hw.nic.model], ResourceType: RESOURCE.ethernet,
    }),
  ];
  if (hw.serialConsole) items.push(item({ AutomaticAllocation: true, ElementName: 'Serial port 1', InstanceID: 6, ResourceType: RESOURCE.serialPort }));
  const config = hw.firmware === 'uefi' ? `\n      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>` : '';
  return `<?xml version="1.0" encoding="UTF-8"?>
<!-- written by Ferry from hardware profile ${x(hw.profile)} -->
<Envelope ovf:version="2.0" xml:lang="en-US" xmlns="${OVF_NS}" xmlns:ovf="${OVF_NS}"
    xmlns:rasd="${RASD_NS}" xmlns:vssd="${VSSD_NS}" xmlns:vmw="${VMW_NS}">
  <References>
    <File ovf:id="file1" ovf:href="${x(disk.href)}" ovf:size="${disk.fileSize}"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="${disk.capacity}" ovf:capacityAllocationUnits="byte"${disk.populatedSize === undefined ? '' : ` ovf:populatedSize="${disk.populatedSize}"`}
        ovf:format="${STREAM_OPTIMIZED}"/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks</Info>
    <Network ovf:name="${NETWORK_NAME}">
      <Description>The network the virtual machine's NIC is connected to</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${x(hw.name)}">
    <Info>A virtual machine converted by Ferry</Info>
    <Name>${x(hw.name)}</Name>
    <OperatingSystemSection ovf:id="${os.cimId}" vmw:osType="${os.vmwOsType}">
      <Info>The guest operating system</Info>
      <Description>${x(hw.guest.name)}</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements (profile ${x(hw.profile)}, ${hw.firmware === 'uefi' ? 'UEFI' : 'BIOS'} firmware)</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${x(hw.name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>${systemType}</vssd:VirtualSystemType>
      </System>
${items.join('\n')}${config}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}
