// Services and drivers of the current control set, the CriticalDeviceDatabase
// (which driver Windows binds to a boot disk controller before Plug and Play
// runs; NT 5.x to 7) and, from both, the storage drivers started at boot.
import type { WindowsDriver, WindowsOs } from '../report.js';
import type { RegKey } from './hive.js';

/** every key below Services that has a Start value, sorted by name */
export function readServices(services: RegKey): WindowsDriver[] {
  const out: WindowsDriver[] = [];
  for (const k of services.children()) {
    const start = k.num('Start');
    if (start === undefined) continue;
    const d: WindowsDriver = { name: k.name, start };
    const group = k.str('Group');
    if (group) d.group = group;
    const imagePath = k.str('ImagePath');
    if (imagePath) d.imagePath = imagePath;
    const type = k.num('Type');
    if (type !== undefined) d.type = type;
    out.push(d);
  }
  return out.sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
}

export function readCriticalDevices(cddb: RegKey): WindowsOs['criticalDevices'] {
  return cddb.children().map(k => {
    const e: WindowsOs['criticalDevices'][number] = { id: k.name };
    const service = k.str('Service');
    if (service) e.service = service;
    const classGuid = k.str('ClassGUID');
    if (classGuid) e.classGuid = classGuid;
    return e;
  }).sort((a, b) => a.id.localeCompare(b.id));
}

/** device classes of disk controllers and disks */
const STORAGE_CLASSES = new Set([
  '{4d36e96a-e325-11ce-bfc1-08002be10318}', // hdc: IDE/ATA/SATA controllers
  '{4d36e97b-e325-11ce-bfc1-08002be10318}', // SCSIAdapter: SCSI, SAS, RAID, NVMe
  '{4d36e967-e325-11ce-bfc1-08002be10318}', // DiskDrive
]);

/** load-order groups of storage drivers */
const STORAGE_GROUPS = new Set(['scsi miniport', 'scsi port', 'scsi class', 'primary disk']);

/** storage drivers that sit in other groups (intelide: System Bus Extender, pciide: Boot Bus Extender) */
const STORAGE_NAMES = new Set([
  'atapi', 'intelide', 'pciide', 'viaide', 'cmdide', 'aliide', 'msahci', 'storahci', 'stornvme', 'iastor', 'iastorv',
  'iastora', 'amdsata', 'nvstor', 'lsi_sas', 'lsi_sas2', 'lsi_sas3', 'lsi_scsi', 'megasas', 'vmscsi', 'pvscsi',
  'viostor', 'vioscsi', 'storvsc', 'disk',
]);

/**
 * Kernel drivers with Start 0 (boot) that drive disks: by load-order group,
 * by a CriticalDeviceDatabase entry of a storage class, or by name.
 */
export function bootStorageDrivers(services: WindowsDriver[], critical: WindowsOs['criticalDevices']): WindowsDriver[] {
  const byCdd = new Set(critical
    .filter(c => c.service && c.classGuid && STORAGE_CLASSES.has(c.classGuid.toLowerCase()))
    .map(c => c.service!.toLowerCase()));
  return services.filter(s => s.start === 0 && (s.type === undefined || s.type === 1) && (
    STORAGE_GROUPS.has((s.group ?? '').toLowerCase()) || byCdd.has(s.name.toLowerCase()) || STORAGE_NAMES.has(s.name.toLowerCase())));
}
