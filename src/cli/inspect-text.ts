// The readable summary of an inspection report (`ferry inspect` without --json).
import type { InspectReport, LinuxOs, WindowsOs } from '../inspect/report.js';
import { human } from './text.js';

export function formatInspect(r: InspectReport): string {
  const out = [`${r.source}: ${r.format}, ${human(r.virtualSize)}, partition table ${r.partitionTable ? `${r.partitionTable.label} ${r.partitionTable.id}` : 'none'}`, 'file systems:'];
  for (const f of r.fileSystems) {
    const what = f.encrypted ? `encrypted (${f.encrypted})` : f.type ?? 'unknown';
    out.push(`  p${f.partition}${f.lv ? ` ${f.lv}` : ''} ${what}${f.uuid ? ` UUID=${f.uuid}` : ''}${f.label ? ` LABEL=${f.label}` : ''} size ${human(f.size)}${f.usedBytes !== undefined ? ` used ${human(f.usedBytes)}` : ''}${f.error ? `  [${f.error.code}: ${f.error.message}]` : ''}`);
  }
  if (r.note) out.push(r.note);
  for (const os of r.operatingSystems) out.push(...(os.type === 'linux' ? linux(os) : windows(os)));
  return out.join('\n') + '\n';
}

function linux(os: LinuxOs): string[] {
  const out = [`Linux: ${os.name} (${os.distro} ${os.version ?? '?'}${os.codename ? ` ${os.codename}` : ''}${os.patchLevel ? `, patch level ${os.patchLevel}` : ''}) ${os.arch ?? ''}`,
    `  hostname ${os.hostname ?? '-'}, machine-id ${os.machineId ?? '-'}`,
    `  boot: ${os.bootloader.kind}, firmware ${os.firmware}${os.bootloader.config ? `, config ${os.bootloader.config}` : ''}`];
  for (const k of os.kernels) {
    out.push(`  kernel ${k.version}${k.default ? ' (default)' : ''}${k.cmdline ? `: ${k.cmdline}` : ''}`);
    if (k.initramfs) out.push(`    initramfs ${k.initramfs.path}: ${k.initramfs.error ? k.initramfs.error.message : `${k.initramfs.compression}${k.initramfs.earlyCpio ? ` after ${k.initramfs.earlyCpio} early cpio` : ''}, ${k.initramfs.modules.length} modules`}`);
    out.push(`    drivers: ${k.modules.storage.length} storage, ${k.modules.network.length} network; not in the initramfs: ${k.missingFromInitramfs.storage.filter(m => /virtio|ahci|ata_piix|nvme|pvscsi|storvsc|sd_mod/.test(m)).join(' ') || '-'}`);
  }
  for (const e of os.fstab) out.push(`  fstab ${e.mountpoint} ${e.spec} (by ${e.by}) ${e.type}`);
  for (const i of os.network.interfaces) out.push(`  net ${i.name} ${i.method}${i.addresses.length ? ` ${i.addresses.join(' ')}` : ''}${i.gateway ? ` via ${i.gateway}` : ''} (${i.source} ${i.file})`);
  for (const b of os.network.macBindings) out.push(`  mac ${b.mac} -> ${b.name} (${b.source} ${b.file})`);
  out.push(`  packages: ${os.packages.list.length} (${os.packages.manager})${os.packages.error ? ` [${os.packages.error.code}]` : ''}; guest tools: ${os.guestTools.join(', ') || 'none'}`);
  for (const e of os.errors) out.push(`  ! ${e.code}: ${e.message}`);
  return out;
}

function windows(os: WindowsOs): string[] {
  const out = [`Windows: ${os.productName ?? '?'}${os.edition ? ` (${os.edition})` : ''} ${os.version ?? ''} build ${os.build ?? '?'}${os.patchLevel ? ` ${os.patchLevel}` : ''} ${os.arch ?? ''}`,
    `  hostname ${os.hostname ?? '-'}, system root ${os.systemRoot} on p${os.partition}`];
  if (os.hal) out.push(`  HAL ${os.hal.variant} (${os.hal.file}), kernel ${os.kernel?.variant ?? '?'}`);
  out.push(`  boot storage drivers: ${os.bootStorageDrivers.map(d => `${d.name}(Start=${d.start})`).join(' ') || 'none'}`);
  for (const n of os.nics) out.push(`  nic ${n.name ?? n.guid} ${n.dhcp ? 'dhcp' : n.addresses.join(' ')}${n.gateways.length ? ` via ${n.gateways.join(' ')}` : ''}`);
  out.push(`  applications: ${os.applications.length}, services: ${os.services.length}`);
  for (const e of os.errors) out.push(`  ! ${e.code}: ${e.message}`);
  return out;
}
