// Network configuration and every binding of an interface name to a MAC
// address, from each configuration system a Linux guest may use.
import { posix } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { GuestFs } from '../guest-fs.js';
import type { MacBinding, NetInterface } from '../report.js';
import { iniValue, iniValues, parseIni } from './ini.js';
import { parseShellVars } from './release.js';

export interface NetworkConfig { interfaces: NetInterface[]; macBindings: MacBinding[] }

export async function readNetwork(fs: GuestFs): Promise<NetworkConfig> {
  const cfg: NetworkConfig = { interfaces: [], macBindings: [] };
  await readIfupdown(fs, '/etc/network/interfaces', cfg, new Set());
  for (const f of await fs.readAll('/etc/netplan', /\.ya?ml$/)) readNetplan(f.path, f.text, cfg);
  for (const f of await fs.readAll('/etc/NetworkManager/system-connections', /./)) readNmKeyfile(f.path, f.text, cfg);
  for (const f of await fs.readAll('/etc/systemd/network', /\.network$/)) readNetworkd(f.path, f.text, cfg);
  for (const f of await fs.readAll('/etc/systemd/network', /\.link$/)) readLink(f.path, f.text, cfg);
  for (const f of await fs.readAll('/etc/sysconfig/network-scripts', /^ifcfg-/)) readIfcfg(f.path, f.text, cfg);
  for (const f of await fs.readAll('/etc/udev/rules.d', /\.rules$/)) readUdevRules(f.path, f.text, cfg);
  return cfg;
}

const mac = (s: string) => s.trim().toLowerCase();

/** 255.255.255.0 → 24 */
const prefixOf = (mask: string) => mask.split('.').reduce((n, o) => n + (Number(o) >>> 0).toString(2).replace(/0/g, '').length, 0);
const withPrefix = (addr: string, mask?: string) => (addr.includes('/') || !mask ? addr : `${addr}/${/^\d+$/.test(mask) ? mask : prefixOf(mask)}`);

async function readIfupdown(fs: GuestFs, path: string, cfg: NetworkConfig, seen: Set<string>): Promise<void> {
  if (seen.has(path)) return;
  seen.add(path);
  const text = await fs.readText(path);
  if (text === undefined) return;
  let cur: NetInterface | undefined;
  let netmask: string | undefined;
  const finish = () => { if (cur && netmask) cur.addresses = cur.addresses.map(a => withPrefix(a, netmask)); netmask = undefined; };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const [key, ...args] = line.split(/\s+/);
    if (key === 'iface') {
      finish();
      const method = args[2] === 'static' || args[2] === 'dhcp' || args[2] === 'manual' || args[2] === 'loopback' ? args[2] : 'other';
      cur = { name: args[0], source: 'ifupdown', file: path, method, addresses: [] };
      cfg.interfaces.push(cur);
    } else if (key === 'source' || key === 'source-directory') {
      finish(); cur = undefined;
      for (const inc of await expandInclude(fs, posix.dirname(path), args[0], key === 'source-directory')) await readIfupdown(fs, inc, cfg, seen);
    } else if (key === 'auto' || key.startsWith('allow-') || key === 'mapping') {
      finish(); cur = undefined;
    } else if (cur) {
      if (key === 'address') cur.addresses.push(args[0]);
      else if (key === 'netmask') netmask = args[0];
      else if (key === 'gateway') cur.gateway = args[0];
      else if (key === 'dns-nameservers') cur.dns = args;
      else if (key === 'hwaddress') cfg.macBindings.push({ name: cur.name, mac: mac(args.at(-1)!), source: 'ifupdown', file: path });
    }
  }
  finish();
}

/** `source /etc/network/interfaces.d/*` and `source-directory DIR` */
async function expandInclude(fs: GuestFs, base: string, pattern: string, isDir: boolean): Promise<string[]> {
  const abs = posix.resolve(base, pattern);
  if (isDir) return (await fs.list(abs)).filter(n => /^[a-zA-Z0-9_-]+$/.test(n)).map(n => posix.join(abs, n));
  if (!/[*?]/.test(abs)) return [abs];
  const dir = posix.dirname(abs);
  const re = new RegExp('^' + posix.basename(abs).replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
  return (await fs.list(dir)).filter(n => re.test(n)).map(n => posix.join(dir, n));
}

interface NetplanIface {
  match?: { macaddress?: string; name?: string };
  'set-name'?: string;
  dhcp4?: boolean | string;
  addresses?: (string | Record<string, unknown>)[];
  gateway4?: string;
  routes?: { to?: string; via?: string }[];
  nameservers?: { addresses?: string[] };
  macaddress?: string;
}

function readNetplan(path: string, text: string, cfg: NetworkConfig): void {
  let doc: { network?: Record<string, unknown> };
  try { doc = parseYaml(text) ?? {}; } catch { return; }
  for (const kind of ['ethernets', 'bonds', 'bridges', 'vlans', 'wifis']) {
    const group = doc.network?.[kind] as Record<string, NetplanIface> | undefined;
    for (const [id, n] of Object.entries(group ?? {})) {
      const name = n['set-name'] ?? n.match?.name ?? id;
      const addresses = (n.addresses ?? []).map(a => (typeof a === 'string' ? a : Object.keys(a)[0]));
      const dhcp = n.dhcp4 === true || n.dhcp4 === 'yes' || n.dhcp4 === 'true';
      const gateway = n.gateway4 ?? n.routes?.find(r => r.to === 'default' || r.to === '0.0.0.0/0')?.via;
      cfg.interfaces.push({ name, source: 'netplan', file: path, method: dhcp ? 'dhcp' : addresses.length ? 'static' : 'manual', addresses, gateway, dns: n.nameservers?.addresses });
      if (n.match?.macaddress) cfg.macBindings.push({ name, mac: mac(n.match.macaddress), source: 'netplan', file: path });
    }
  }
}

function readNmKeyfile(path: string, text: string, cfg: NetworkConfig): void {
  const s = parseIni(text);
  const name = iniValue(s, 'connection', 'interface-name') ?? iniValue(s, 'connection', 'id') ?? posix.basename(path);
  const method = iniValue(s, 'ipv4', 'method');
  const addresses: string[] = [];
  let gateway = iniValue(s, 'ipv4', 'gateway');
  const ipv4 = s.find(x => x.name === 'ipv4')?.values ?? {};
  for (const [k, vs] of Object.entries(ipv4)) {
    if (!/^address(es)?\d*$/.test(k)) continue;
    for (const v of vs.flatMap(v => v.split(';')).filter(Boolean)) {
      const [addr, gw] = v.split(',');
      addresses.push(addr.trim());
      if (gw && !gateway) gateway = gw.trim();
    }
  }
  const dns = iniValue(s, 'ipv4', 'dns')?.split(/[;,]/).filter(Boolean);
  cfg.interfaces.push({ name, source: 'networkmanager', file: path, method: method === 'manual' ? 'static' : method === 'auto' ? 'dhcp' : method === 'disabled' ? 'manual' : 'other', addresses, gateway, dns });
  const hw = iniValue(s, 'ethernet', 'mac-address') ?? iniValue(s, '802-3-ethernet', 'mac-address');
  if (hw) cfg.macBindings.push({ name, mac: mac(hw), source: 'networkmanager', file: path });
}

function readNetworkd(path: string, text: string, cfg: NetworkConfig): void {
  const s = parseIni(text);
  const hw = iniValue(s, 'Match', 'MACAddress');
  const name = iniValue(s, 'Match', 'Name') ?? (hw ? mac(hw) : posix.basename(path));
  const addresses = [...iniValues(s, 'Network', 'Address'), ...iniValues(s, 'Address', 'Address')];
  const gateway = iniValue(s, 'Network', 'Gateway') ?? iniValue(s, 'Route', 'Gateway');
  const dhcp = iniValue(s, 'Network', 'DHCP');
  const method = dhcp && /^(yes|true|ipv4|both)$/.test(dhcp) ? 'dhcp' : addresses.length ? 'static' : 'manual';
  const dns = iniValues(s, 'Network', 'DNS').flatMap(v => v.split(/\s+/)).filter(Boolean);
  cfg.interfaces.push({ name, source: 'networkd', file: path, method, addresses, gateway, dns: dns.length ? dns : undefined });
}

function readLink(path: string, text: string, cfg: NetworkConfig): void {
  const s = parseIni(text);
  const hw = iniValue(s, 'Match', 'MACAddress');
  const name = iniValue(s, 'Link', 'Name');
  if (hw && name) cfg.macBindings.push({ name, mac: mac(hw), source: 'systemd-link', file: path });
}

function readIfcfg(path: string, text: string, cfg: NetworkConfig): void {
  const v = parseShellVars(text);
  const name = v.DEVICE ?? v.NAME ?? posix.basename(path).replace(/^ifcfg-/, '');
  if (name === 'lo') return;
  const proto = (v.BOOTPROTO ?? 'none').toLowerCase();
  const addresses = Object.keys(v).filter(k => /^IPADDR\d*$/.test(k)).sort().map(k => {
    const n = k.slice(6);
    return withPrefix(v[k], v[`PREFIX${n}`] ?? v[`NETMASK${n}`]);
  });
  const dns = Object.keys(v).filter(k => /^DNS\d+$/.test(k)).sort().map(k => v[k]);
  const method = proto === 'dhcp' || proto === 'bootp' ? 'dhcp' : addresses.length ? 'static' : 'manual';
  cfg.interfaces.push({ name, source: 'ifcfg', file: path, method, addresses, gateway: v.GATEWAY, dns: dns.length ? dns : undefined });
  const hw = v.HWADDR ?? v.MACADDR;
  if (hw) cfg.macBindings.push({ name, mac: mac(hw), source: 'ifcfg', file: path });
}

/** persistent-net rules: ATTR{address}=="…" together with NAME="…" on one line */
function readUdevRules(path: string, text: string, cfg: NetworkConfig): void {
  for (const line of text.split('\n')) {
    if (line.trim().startsWith('#')) continue;
    const addr = /ATTRS?\{address\}=="([0-9a-fA-F:]{17})"/.exec(line);
    const name = /\bNAME:?="([^"]+)"/.exec(line);
    if (addr && name) cfg.macBindings.push({ name: name[1], mac: mac(addr[1]), source: 'udev-rules', file: path });
  }
}
