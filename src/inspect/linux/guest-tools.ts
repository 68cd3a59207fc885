// Hypervisor guest tools: by package where a package manager knows them, by
// their files where they were installed by hand (VMware Tools' tarball
// installer, VirtualBox additions' .run).
import type { GuestFs } from '../guest-fs.js';
import type { Package } from '../report.js';

const BY_PACKAGE: [RegExp, string][] = [
  [/^open-vm-tools$/, 'open-vm-tools'],
  [/^(hyperv-daemons|hyperv-tools|linux-cloud-tools-common)$/, 'hyperv-daemons'],
  [/^qemu-guest-agent$/, 'qemu-guest-agent'],
  [/^virtualbox-guest-(utils|x11|dkms)$/, 'virtualbox-guest-additions'],
  [/^xe-guest-utilities$/, 'xen-guest-utilities'],
];

const BY_FILE: [string, string][] = [
  ['/etc/vmware-tools/locations', 'vmware-tools'],
  ['/usr/lib/vmware-tools', 'vmware-tools'],
  ['/usr/sbin/hv_kvp_daemon', 'hyperv-daemons'],
  ['/usr/sbin/qemu-ga', 'qemu-guest-agent'],
  ['/usr/bin/qemu-ga', 'qemu-guest-agent'],
  ['/opt/VBoxGuestAdditions', 'virtualbox-guest-additions'],
];

export async function findGuestTools(fs: GuestFs, packages: Package[]): Promise<string[]> {
  const found = new Set<string>();
  for (const p of packages) for (const [re, tool] of BY_PACKAGE) if (re.test(p.name)) found.add(tool);
  for (const [path, tool] of BY_FILE) if (!found.has(tool) && await fs.exists(path)) found.add(tool);
  if ((await fs.list('/opt')).some(n => n.startsWith('VBoxGuestAdditions'))) found.add('virtualbox-guest-additions');
  return [...found].sort();
}
