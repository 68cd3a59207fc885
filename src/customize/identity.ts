// Identity and settings given to an image on its way out (deploy today;
// convert, reconfigure and register later): hostname, a fresh machine-id,
// a static address or DHCP per interface, and a one-shot first-boot hook.
// Written statically into the guest's tree, like the re-fit, and reported as
// a list of changes (file, before, after, reason).
import { chmod, lstat, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Change } from '../../converters/linux/change.js';
import { FerryError, usageError } from '../errors.js';
import type { GuestFs } from '../inspect/guest-fs.js';
import { networkKind, writeIfcfg, writeNetplan, writeNetworkManager } from './network.js';
import { addAuthorizedKey, checkTimezoneName, clearIdentityState, setTimezone, type AuthorizedKey } from './linux.js';
import type { DomainJoin } from './domain-join.js';
import type { ToolRef } from './tools.js';

export interface IpSetting { iface: string; address: string; prefix: number; gateway?: string; dns: string[] }

export interface Customization {
  hostname?: string;
  /** IF=CIDR[,gw=G][,dns=D] */
  ip?: IpSetting[];
  /** interfaces that take DHCP */
  dhcp?: string[];
  /** a fresh machine-id at first boot (Windows: the registered sysprep tool run once at next boot), new SSH host keys, no random seed, leases or persistent-net rules (deploy always asks for it) */
  newIdentity?: boolean;
  /** --ssh-authorized-key FILE --user U (the key lines read and checked by readAuthorizedKey) */
  authorizedKey?: AuthorizedKey;
  /** --timezone ZONE, e.g. Europe/Berlin */
  timezone?: string;
  /** --domain-join SPEC (Windows: written into the answer file; see domain-join.ts) */
  domainJoin?: DomainJoin;
  /** --run TOOL[@VERSION]: registered tools run once at first boot (see tools.ts, run-linux.ts, windows.ts) */
  run?: ToolRef[];
}

/** nothing asked for: a conversion without customization options skips the whole step */
export const isEmptyCustomization = (c: Customization | undefined) =>
  !c || (!c.hostname && !c.ip?.length && !c.dhcp?.length && !c.newIdentity && !c.authorizedKey && !c.timezone && !c.domainJoin && !c.run?.length);

/** run once at the deployed system's first boot: tell the server it came up */
export interface FirstBootReport { host: string; port: number; path: string; token: string }

const HOSTNAME_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
// a Linux interface name, or a Windows adapter's GUID ({3C9E1F24-…})
const IFACE_RE = /^([A-Za-z0-9_.:-]{1,15}|\{[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\})$/;
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

export const customizeUnsupported = (what: string) =>
  new FerryError('CUSTOMIZE_UNSUPPORTED', 5, `${what}; nothing was changed`, {});

/** `--ip IF=CIDR[,gw=G][,dns=D]` → a setting; usage errors name the option as written. */
export function parseIpOption(s: string): IpSetting {
  const m = /^([^=]+)=([^,]+)((?:,[a-z]+=[^,]+)*)$/.exec(s.trim());
  if (!m) throw usageError(`--ip ${s}: write it as IF=ADDRESS/PREFIX[,gw=GATEWAY][,dns=SERVER], e.g. eth0=192.0.2.10/24,gw=192.0.2.1`);
  const [, iface, cidr, rest] = m;
  const [address, prefixText] = cidr.split('/');
  const prefix = Number(prefixText);
  if (!IFACE_RE.test(iface)) throw usageError(`--ip ${s}: '${iface}' is not an interface name`);
  if (!IPV4_RE.test(address) || !/^\d{1,2}$/.test(prefixText ?? '') || prefix < 1 || prefix > 32) throw usageError(`--ip ${s}: '${cidr}' is not an IPv4 address with a prefix length (ADDRESS/PREFIX)`);
  const setting: IpSetting = { iface, address, prefix, dns: [] };
  for (const kv of rest.split(',').filter(Boolean)) {
    const [k, v] = kv.split('=');
    if (k !== 'gw' && k !== 'dns') throw usageError(`--ip ${s}: unknown key ${k}; the keys are gw and dns`);
    if (!IPV4_RE.test(v)) throw usageError(`--ip ${s}: ${k}=${v} is not an IPv4 address`);
    if (k === 'gw') setting.gateway = v;
    else setting.dns.push(v);
  }
  return setting;
}

/** Check a customization before anything is opened. */
export function checkCustomization(c: Customization): void {
  if (c.hostname !== undefined && !HOSTNAME_RE.test(c.hostname)) throw usageError(`--hostname ${c.hostname}: letters, digits and '-' in dot-separated labels of up to 63 characters`);
  for (const d of c.dhcp ?? []) if (!IFACE_RE.test(d)) throw usageError(`--dhcp ${d}: not an interface name`);
  const both = (c.ip ?? []).find(i => c.dhcp?.includes(i.iface));
  if (both) throw usageError(`interface ${both.iface} has both --ip and --dhcp; give one`);
  if (c.timezone !== undefined) checkTimezoneName(c.timezone);
}

/** A Linux guest's tree: set what `c` asks for; returns the changes. */
export async function customizeLinux(fs: GuestFs, c: Customization, firstBoot?: FirstBootReport): Promise<Change[]> {
  const changes: Change[] = [];
  const write = async (path: string, text: string, reason: string, mode = 0o644) => {
    const host = await fs.hostPathForWrite(path);
    if (!host) throw customizeUnsupported(`the guest has no directory for ${path}`);
    const before = await readFile(host, 'utf8').catch(() => undefined);
    if (before === text) return;
    await mkdir(dirname(host), { recursive: true });
    await writeFile(host, text, { mode });
    await chmod(host, mode);
    changes.push({ file: path, before: before === undefined ? 'absent' : summary(before), after: summary(text), reason });
  };

  if (c.hostname) {
    const old = (await fs.readText('/etc/hostname'))?.trim();
    await write('/etc/hostname', `${c.hostname}\n`, 'the machine gets its own name');
    const hosts = await fs.readText('/etc/hosts');
    if (hosts !== undefined) {
      const short = c.hostname.split('.')[0];
      const name = c.hostname === short ? short : `${c.hostname} ${short}`;
      const lines = hosts.split('\n').filter(l => !/^127\.0\.1\.1\s/.test(l));
      const at = lines.findIndex(l => /^127\.0\.0\.1\s/.test(l));
      lines.splice(at + 1, 0, `127.0.1.1\t${name}`);
      await write('/etc/hosts', lines.join('\n'), `${old ?? 'the old name'} no longer names this machine`);
    }
    const sysconfig = await fs.readText('/etc/sysconfig/network');
    if (sysconfig !== undefined && /^HOSTNAME=/m.test(sysconfig)) {
      await write('/etc/sysconfig/network', sysconfig.replace(/^HOSTNAME=.*$/m, `HOSTNAME=${c.hostname}`), 'older Red Hat systems take the name from here');
    }
  }
  if (c.newIdentity) {
    // empty, not absent: systemd makes a new id at boot and keeps it (systemd-machine-id-commit); absent would mean "first boot" presets
    await write('/etc/machine-id', '', 'a clone must not share the template\'s machine-id (journal, DHCP client id, D-Bus); systemd makes a new one at first boot', 0o444);
    changes.push(...await clearIdentityState(fs));
  }
  if (c.ip?.length || c.dhcp?.length) changes.push(...await writeNetwork(fs, c, write));
  if (c.authorizedKey) changes.push(...await addAuthorizedKey(fs, c.authorizedKey));
  if (c.timezone) changes.push(...await setTimezone(fs, c.timezone));
  if (firstBoot) changes.push(...await installFirstBoot(fs, firstBoot, write));
  return changes;
}

/** ifupdown runs one of these for `inet dhcp` */
const DHCP_CLIENTS = ['/sbin/dhclient', '/usr/sbin/dhclient', '/sbin/dhcpcd', '/usr/sbin/dhcpcd', '/sbin/udhcpc', '/usr/sbin/udhcpc', '/sbin/pump'];
/** systemd's own DHCP client: Debian's systemd ships it disabled beside ifupdown (a minimal install has no dhclient) */
const NETWORKD = ['/lib/systemd/systemd-networkd', '/usr/lib/systemd/systemd-networkd'];

async function firstOf(fs: GuestFs, paths: string[]): Promise<string | undefined> {
  for (const p of paths) if (await fs.exists(p)) return p;
  return undefined;
}

/** An ifupdown guest asked for DHCP with no client for ifupdown: whether systemd-networkd can do it instead. */
async function dhcpThroughNetworkd(fs: GuestFs, c: Customization): Promise<boolean> {
  return !!c.dhcp?.length && !(await firstOf(fs, DHCP_CLIENTS)) && !!(await firstOf(fs, NETWORKD));
}

/**
 * What in `c` the guest cannot take (checked on the read-only image before a
 * deploy writes anything); undefined when all of it can be done.
 */
export async function customizeProblem(fs: GuestFs, c: Customization, firstBoot: boolean): Promise<string | undefined> {
  if (c.ip?.length || c.dhcp?.length) {
    const kind = await networkKind(fs);
    if (!kind) return NO_NETWORK_CONFIG;
    if (kind === 'ifupdown' && c.dhcp?.length && !(await firstOf(fs, DHCP_CLIENTS)) && !(await firstOf(fs, NETWORKD))) {
      return `--dhcp ${c.dhcp.join(', ')}: the guest has no DHCP client (isc-dhcp-client, dhcpcd, udhcpc or systemd-networkd); give --ip instead or install one in the image`;
    }
  }
  if (firstBoot && (!(await fs.exists('/bin/bash')) || !(await fs.isDir('/etc/systemd/system')))) return 'the first-boot report needs bash and systemd in the guest';
  return undefined;
}

const summary = (text: string) => text === '' ? '(empty)' : text.length <= 200 ? text : `${text.slice(0, 200)}… (${text.length} bytes)`;

type Writer = (path: string, text: string, reason: string, mode?: number) => Promise<void>;

const NO_NETWORK_CONFIG = 'the guest configures its network with none of ifupdown, netplan, NetworkManager, ifcfg or systemd-networkd; Ferry cannot set --ip/--dhcp on it';

/** whichever of ifupdown, netplan, NetworkManager, ifcfg or systemd-networkd the guest uses (networkKind); anything else is refused before writing. */
async function writeNetwork(fs: GuestFs, c: Customization, write: Writer): Promise<Change[]> {
  const ifaces = [...(c.ip ?? []).map(i => i.iface), ...(c.dhcp ?? [])];
  const interfaces = await fs.readText('/etc/network/interfaces');
  if (interfaces !== undefined) {
    const viaNetworkd = await dhcpThroughNetworkd(fs, c);
    const kept = dropStanzas(interfaces, ifaces);
    const stanzas = [
      ...(c.ip ?? []).map(i => [`auto ${i.iface}`, `iface ${i.iface} inet static`, `    address ${i.address}/${i.prefix}`,
        ...(i.gateway ? [`    gateway ${i.gateway}`] : []), ...(i.dns.length ? [`    dns-nameservers ${i.dns.join(' ')}`] : [])].join('\n')),
      ...(viaNetworkd ? [] : (c.dhcp ?? []).map(d => `auto ${d}\niface ${d} inet dhcp`)),
    ];
    await write('/etc/network/interfaces', `${kept.trimEnd()}\n\n${stanzas.join('\n\n')}\n`, 'the address given for this machine (ifupdown)');
    if (!viaNetworkd) return [];
    // ifupdown has no DHCP client here: systemd-networkd, shipped with systemd, takes these interfaces
    for (const d of c.dhcp ?? []) await write(`/etc/systemd/network/10-ferry-${d}.network`, `[Match]\nName=${d}\n\n[Network]\nDHCP=yes\n`, 'DHCP asked for this interface; ifupdown has no DHCP client in this guest, systemd-networkd does it');
    const unit = (await fs.exists('/lib/systemd/system/systemd-networkd.service')) ? '/lib/systemd/system/systemd-networkd.service' : '/usr/lib/systemd/system/systemd-networkd.service';
    return [await enableUnit(fs, unit, 'systemd-networkd.service', 'runs systemd-networkd for the DHCP interfaces')];
  }
  const kind = await networkKind(fs);
  if (kind === 'netplan') return (await writeNetplan(fs, c.ip ?? [], c.dhcp ?? [], write), []);
  if (kind === 'networkmanager') return (await writeNetworkManager(c.ip ?? [], c.dhcp ?? [], write), []);
  if (kind === 'ifcfg') return (await writeIfcfg(fs, c.ip ?? [], c.dhcp ?? [], write), []);
  if (kind === 'networkd') {
    for (const i of c.ip ?? []) {
      await write(`/etc/systemd/network/10-ferry-${i.iface}.network`, [`[Match]`, `Name=${i.iface}`, '', '[Network]', `Address=${i.address}/${i.prefix}`,
        ...(i.gateway ? [`Gateway=${i.gateway}`] : []), ...i.dns.map(d => `DNS=${d}`)].join('\n') + '\n', 'the address given for this machine (systemd-networkd)');
    }
    for (const d of c.dhcp ?? []) await write(`/etc/systemd/network/10-ferry-${d}.network`, `[Match]\nName=${d}\n\n[Network]\nDHCP=yes\n`, 'DHCP asked for this interface (systemd-networkd)');
    return [];
  }
  throw customizeUnsupported(NO_NETWORK_CONFIG);
}

/** /etc/network/interfaces without the stanzas (and auto/allow-hotplug lines) of these interfaces */
export function dropStanzas(text: string, ifaces: string[]): string {
  const out: string[] = [];
  let skipping = false;
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    const head = words[0];
    if (['iface', 'mapping'].includes(head)) skipping = ifaces.includes(words[1]);
    else if (['auto', 'allow-hotplug', 'source', 'source-directory'].includes(head) || /^allow-/.test(head)) {
      skipping = false;
      if (head === 'auto' || /^allow-/.test(head)) {
        const rest = words.slice(1).filter(w => !ifaces.includes(w));
        if (rest.length < words.length - 1) { if (rest.length) out.push(`${head} ${rest.join(' ')}`); continue; }
      }
    }
    if (!skipping) out.push(line);
  }
  return out.join('\n');
}

const FIRSTBOOT_SCRIPT = '/usr/local/sbin/ferry-firstboot';
const FIRSTBOOT_UNIT = '/etc/systemd/system/ferry-firstboot.service';

/**
 * A one-shot unit that tells the server the deployed system is up (bash's
 * /dev/tcp: no curl needed in the guest), then disables and removes itself.
 * The token is good for this one report only.
 */
async function installFirstBoot(fs: GuestFs, r: FirstBootReport, write: Writer): Promise<Change[]> {
  if (!(await fs.exists('/bin/bash')) || !(await fs.isDir('/etc/systemd/system'))) {
    throw customizeUnsupported('the first-boot report needs bash and systemd in the guest');
  }
  const script = `#!/bin/bash
# Ferry: report once that this machine booted the system deployed onto it, then remove this.
host=${r.host} port=${r.port} path=${r.path} token=${r.token}
addrs=$(ip -o -4 addr show scope global 2>/dev/null | awk '{ printf "%s%s:%s", sep, $2, $4; sep="," }')
body="{\\"hostname\\":\\"$(cat /proc/sys/kernel/hostname)\\",\\"addresses\\":\\"$addrs\\"}"
for i in $(seq 1 60); do
  if exec 3<>"/dev/tcp/$host/$port"; then
    printf 'POST %s HTTP/1.1\\r\\nHost: %s:%s\\r\\nAuthorization: Bearer %s\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s' \\
      "$path" "$host" "$port" "$token" "\${#body}" "$body" >&3
    read -r _ status _ <&3
    exec 3<&-
    case $status in 2??) echo "ferry-firstboot: reported to $host:$port"; break ;; esac
  fi
  sleep 2
done
systemctl disable ferry-firstboot.service
rm -f ${FIRSTBOOT_UNIT} "$0"
`;
  const unit = `[Unit]
Description=Ferry: report the first boot of a deployed system
Wants=network-online.target
After=network-online.target networking.service systemd-networkd.service

[Service]
Type=oneshot
ExecStart=${FIRSTBOOT_SCRIPT}
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
`;
  await write(FIRSTBOOT_SCRIPT, script.replace(/token=\S+/, 'token=…'), 'reports the first boot to the deploying server (a one-time token)', 0o700);
  // the change list shows the script without its token; the file gets the real one
  await writeFile((await fs.hostPathForWrite(FIRSTBOOT_SCRIPT))!, script, { mode: 0o700 });
  await write(FIRSTBOOT_UNIT, unit, 'runs the first-boot report once');
  return [await enableUnit(fs, FIRSTBOOT_UNIT, 'ferry-firstboot.service', 'enables the first-boot report')];
}

/** `systemctl enable` done statically: the unit linked into multi-user.target.wants */
async function enableUnit(fs: GuestFs, unit: string, name: string, reason: string): Promise<Change> {
  const link = `/etc/systemd/system/multi-user.target.wants/${name}`;
  const wants = await fs.hostPathForWrite(link);
  if (!wants) throw customizeUnsupported('the guest has no /etc/systemd/system');
  await mkdir(dirname(wants), { recursive: true });
  const had = await lstat(wants).catch(() => undefined);
  if (!had) await symlink(unit, wants);
  return { file: link, before: had ? 'present' : 'absent', after: `-> ${unit}`, reason };
}
