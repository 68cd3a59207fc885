// Addresses for the network configurations Ferry writes besides ifupdown and
// systemd-networkd (identity.ts): netplan, NetworkManager keyfiles and Red Hat
// ifcfg files. Which one a guest uses is decided once (networkKind), by the
// same rule for the read-only check and for the write.
import { parseDocument } from 'yaml';
import type { GuestFs } from '../inspect/guest-fs.js';
import type { IpSetting } from './identity.js';

export type NetworkKind = 'ifupdown' | 'netplan' | 'networkmanager' | 'ifcfg' | 'networkd';

/** ifupdown first (Debian keeps it even beside others), then netplan (it generates NM or networkd config), NetworkManager, ifcfg, networkd */
export async function networkKind(fs: GuestFs): Promise<NetworkKind | undefined> {
  if (await fs.exists('/etc/network/interfaces')) return 'ifupdown';
  if ((await fs.list('/etc/netplan')).some(n => /\.ya?ml$/.test(n))) return 'netplan';
  if (await fs.isDir('/etc/NetworkManager/system-connections') && (await fs.exists('/usr/sbin/NetworkManager') || await fs.exists('/sbin/NetworkManager'))) return 'networkmanager';
  if (await fs.isDir('/etc/sysconfig/network-scripts')) return 'ifcfg';
  if (await fs.isDir('/etc/systemd/network')) return 'networkd';
  return undefined;
}

type Writer = (path: string, text: string, reason: string, mode?: number) => Promise<void>;

/**
 * netplan: one file per interface that sorts after the template's; the
 * interface's entry in every other file is removed first (netplan would merge
 * them, and an old address list would be kept beside the new one).
 */
export async function writeNetplan(fs: GuestFs, ip: IpSetting[], dhcp: string[], write: Writer): Promise<void> {
  const ifaces = [...ip.map(i => i.iface), ...dhcp];
  for (const f of await fs.readAll('/etc/netplan', /\.ya?ml$/)) {
    if (/^90-ferry-/.test(f.path.split('/').pop()!)) continue;
    const doc = parseDocument(f.text);
    const had = ifaces.filter(i => doc.hasIn(['network', 'ethernets', i]));
    if (!had.length) continue;
    for (const i of had) doc.deleteIn(['network', 'ethernets', i]);
    await write(f.path, doc.toString(), `${had.join(', ')} now configured in /etc/netplan/90-ferry-*.yaml`, 0o600);
  }
  for (const i of ip) {
    await write(`/etc/netplan/90-ferry-${i.iface}.yaml`, [
      'network:', '  version: 2', '  ethernets:', `    ${i.iface}:`, '      dhcp4: false', `      addresses: [${i.address}/${i.prefix}]`,
      ...(i.gateway ? ['      routes:', `        - to: default`, `          via: ${i.gateway}`] : []),
      ...(i.dns.length ? ['      nameservers:', `        addresses: [${i.dns.join(', ')}]`] : []),
    ].join('\n') + '\n', 'the address given for this machine (netplan)', 0o600);
  }
  for (const d of dhcp) await write(`/etc/netplan/90-ferry-${d}.yaml`, `network:\n  version: 2\n  ethernets:\n    ${d}:\n      dhcp4: true\n`, 'DHCP asked for this interface (netplan)', 0o600);
}

/** NetworkManager: a keyfile profile bound to the interface that wins over the template's (autoconnect-priority) */
export async function writeNetworkManager(ip: IpSetting[], dhcp: string[], write: Writer): Promise<void> {
  const profile = (iface: string, ipv4: string[]) => ['[connection]', `id=ferry-${iface}`, 'type=ethernet', `interface-name=${iface}`, 'autoconnect=true', 'autoconnect-priority=100', '',
    '[ipv4]', ...ipv4, '', '[ipv6]', 'method=auto', ''].join('\n');
  for (const i of ip) {
    await write(`/etc/NetworkManager/system-connections/ferry-${i.iface}.nmconnection`, profile(i.iface, ['method=manual',
      `address1=${i.address}/${i.prefix}${i.gateway ? `,${i.gateway}` : ''}`, ...(i.dns.length ? [`dns=${i.dns.join(';')};`] : [])]),
    'the address given for this machine (NetworkManager; preferred over the template\'s profiles)', 0o600);
  }
  for (const d of dhcp) await write(`/etc/NetworkManager/system-connections/ferry-${d}.nmconnection`, profile(d, ['method=auto']), 'DHCP asked for this interface (NetworkManager)', 0o600);
}

const IFCFG_ADDRESS_KEYS = /^(BOOTPROTO|IPADDR\d*|PREFIX\d*|NETMASK\d*|GATEWAY\d*|DNS\d+|ONBOOT)=/;

/** Red Hat ifcfg: the interface's file keeps its other keys (HWADDR, NAME, …); the address keys are replaced */
export async function writeIfcfg(fs: GuestFs, ip: IpSetting[], dhcp: string[], write: Writer): Promise<void> {
  const file = (iface: string) => `/etc/sysconfig/network-scripts/ifcfg-${iface}`;
  const kept = async (iface: string) => {
    const old = (await fs.readText(file(iface))) ?? `DEVICE=${iface}\nTYPE=Ethernet\n`;
    return old.split('\n').filter(l => l.trim() && !IFCFG_ADDRESS_KEYS.test(l.trim()));
  };
  for (const i of ip) {
    await write(file(i.iface), [...await kept(i.iface), 'BOOTPROTO=none', 'ONBOOT=yes', `IPADDR=${i.address}`, `PREFIX=${i.prefix}`,
      ...(i.gateway ? [`GATEWAY=${i.gateway}`] : []), ...i.dns.map((d, n) => `DNS${n + 1}=${d}`)].join('\n') + '\n', 'the address given for this machine (ifcfg)');
  }
  for (const d of dhcp) await write(file(d), [...await kept(d), 'BOOTPROTO=dhcp', 'ONBOOT=yes'].join('\n') + '\n', 'DHCP asked for this interface (ifcfg)');
}
