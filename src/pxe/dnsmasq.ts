// PXE for the Ferry agent: Debian's dnsmasq (dnsmasq-base) in the foreground
// with a private directory (its config, lease file and TFTP root), no DNS,
// bound to one interface. Firmware without iPXE gets iPXE over TFTP
// (undionly.kpxe for BIOS, ipxe.efi for UEFI); iPXE (user class "iPXE") gets
// the URL of its script on `ferry serve`, which iPXE expands with the
// machine's MAC and SMBIOS UUID. Either a DHCP range of the interface's
// subnet, or proxy DHCP beside the network's own DHCP server.
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { interfaceMissing, interfaceNoIpv4, ToolError, usageError } from '../errors.js';
import { spawnLive } from '../util/exec.js';

const IPXE_DIR = '/usr/lib/ipxe';
export const BIOS_FILE = 'undionly.kpxe';
export const EFI_FILE = 'ipxe.efi';
const READY_TIMEOUT_MS = 15_000;

export type DhcpMode = { kind: 'proxy' } | { kind: 'range'; start: string; end: string };
export interface InterfaceV4 { name: string; address: string; netmask: string; network: string }
export interface PxeOptions { iface: string; mode: DhcpMode; /** ferry serve's base URL; default http://<IF's IPv4>:8470 */ server?: string }

const toInt = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const toIp = (n: number) => [24, 16, 8, 0].map(s => Math.floor(n / 2 ** s) % 256).join('.');
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/** the interface's first IPv4 address and its subnet */
export function interfaceV4(name: string): InterfaceV4 {
  if (!existsSync(`/sys/class/net/${name}`) || name.includes('/')) throw interfaceMissing(name, readdirSync('/sys/class/net'));
  const a = (networkInterfaces()[name] ?? []).find(x => x.family === 'IPv4');
  if (!a) throw interfaceNoIpv4(name);
  const mask = toInt(a.netmask);
  return { name, address: a.address, netmask: a.netmask, network: toIp(Number((BigInt(toInt(a.address)) & BigInt(mask)))) };
}

const inSubnet = (ip: string, v4: InterfaceV4) => (BigInt(toInt(ip)) & BigInt(toInt(v4.netmask))) === BigInt(toInt(v4.network));

/** `A,B` of --dhcp-range, checked against the interface's subnet */
export function parseRange(s: string, v4: InterfaceV4): DhcpMode {
  const [start, end, ...rest] = s.split(',').map(x => x.trim());
  if (rest.length || !IPV4_RE.test(start ?? '') || !IPV4_RE.test(end ?? '') || toInt(start) > toInt(end)) {
    throw usageError(`--dhcp-range ${s}: write it as FIRST,LAST IPv4 addresses, e.g. 192.168.50.100,192.168.50.199`);
  }
  for (const ip of [start, end]) {
    if (!inSubnet(ip, v4)) throw usageError(`--dhcp-range ${s}: ${ip} is not in ${v4.name}'s subnet ${v4.network}/${v4.netmask}`);
  }
  if (toInt(start) <= toInt(v4.address) && toInt(v4.address) <= toInt(end)) {
    throw usageError(`--dhcp-range ${s} holds ${v4.name}'s own address ${v4.address}; choose a range without it`);
  }
  return { kind: 'range', start, end };
}

/** the boot file iPXE is sent: iPXE itself puts in the MAC and UUID (`${…}` is iPXE's, not ours to expand) */
export const ipxeBootUrl = (server: string) => `${server}/boot/ipxe?mac=\${net0/mac}&uuid=\${uuid}`;

export function serverUrl(given: string | undefined, v4: InterfaceV4): string {
  const url = (given ?? `http://${v4.address}:8470`).replace(/\/+$/, '');
  // it ends up in a DHCP field of 128 bytes and in a dnsmasq option split at commas
  if (!/^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$/.test(url)) throw usageError(`--server ${url}: write it as http://HOST[:PORT], where ferry serve listens`);
  if (ipxeBootUrl(url).length > 127) throw usageError(`--server ${url} is too long for the DHCP boot file field`);
  return url;
}

/** dnsmasq's configuration, one option a line */
export function dnsmasqConfig(o: { v4: InterfaceV4; mode: DhcpMode; server: string; dir: string }): string {
  const boot = ipxeBootUrl(o.server);
  const lines = [
    'port=0', // no DNS
    `interface=${o.v4.name}`, 'bind-interfaces',
    'log-facility=-', 'log-dhcp',
    'pid-file=',
    `dhcp-leasefile=${join(o.dir, 'leases')}`,
    'enable-tftp', `tftp-root=${join(o.dir, 'tftp')}`,
    'dhcp-userclass=set:ipxe,iPXE',
    // client architectures 7 and 9: x86-64 UEFI
    'dhcp-match=set:efi64,option:client-arch,7',
    'dhcp-match=set:efi64,option:client-arch,9',
  ];
  if (o.mode.kind === 'range') {
    lines.push(
      `dhcp-range=${o.mode.start},${o.mode.end},${o.v4.netmask},1h`,
      `dhcp-boot=tag:!ipxe,tag:!efi64,${BIOS_FILE}`,
      `dhcp-boot=tag:!ipxe,tag:efi64,${EFI_FILE}`,
      `dhcp-boot=tag:ipxe,${boot}`,
    );
  } else {
    // proxy DHCP answers PXE clients only, through PXE menus of one entry
    lines.push(
      `dhcp-range=${o.v4.network},proxy,${o.v4.netmask}`,
      `pxe-service=tag:!ipxe,x86PC,"Ferry: iPXE",${BIOS_FILE}`,
      `pxe-service=tag:!ipxe,X86-64_EFI,"Ferry: iPXE",${EFI_FILE}`,
      `pxe-service=tag:ipxe,x86PC,"Ferry agent",${boot}`,
      `pxe-service=tag:ipxe,X86-64_EFI,"Ferry agent",${boot}`,
    );
  }
  return lines.join('\n') + '\n';
}

export interface PxeServer {
  v4: InterfaceV4; server: string; bootUrl: string; mode: DhcpMode;
  /** dnsmasq's pid, its config file and private directory: what a killed `pxe serve` leaves for the next command to remove */
  pid: number; confFile: string; dir: string;
  /** resolves when dnsmasq exits by itself (rejects with its stderr) */
  exited: Promise<void>;
  /** stop dnsmasq and remove the private directory */
  stop(): Promise<void>;
}

/** Start dnsmasq; resolves once it serves (it bound its sockets), rejects with its own message when it cannot. */
export async function startPxe(o: PxeOptions, log: (line: string) => void): Promise<PxeServer> {
  const v4 = interfaceV4(o.iface);
  const server = serverUrl(o.server, v4);
  const dir = await mkdtemp(join(tmpdir(), 'ferry-pxe-'));
  const removeDir = () => rm(dir, { recursive: true, force: true });
  let child: ReturnType<typeof spawnLive> | undefined;
  try {
    // dnsmasq drops root for the nobody user, which must read the TFTP root: nothing here is secret
    await chmod(dir, 0o755);
    await writeFile(join(dir, 'dnsmasq.conf'), dnsmasqConfig({ v4, mode: o.mode, server, dir }));
    await mkdir(join(dir, 'tftp'), { mode: 0o755 });
    for (const f of [BIOS_FILE, EFI_FILE]) await symlink(join(IPXE_DIR, f), join(dir, 'tftp', f));
    const args = ['--keep-in-foreground', `--conf-file=${join(dir, 'dnsmasq.conf')}`];
    child = spawnLive('dnsmasq', args);
    const proc = child;
    let stderr = '';
    let ready: () => void;
    const readyP = new Promise<void>(r => { ready = r; });
    let buf = '';
    proc.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-8192);
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim()) log(line);
        // the last line dnsmasq writes at start, after binding every socket
        if (/TFTP root is /.test(line)) ready();
      }
    });
    proc.stdout.on('data', (d: Buffer) => log(d.toString().trimEnd()));
    let stopping = false;
    const exited = proc.then(r => {
      if (!stopping) throw new ToolError('dnsmasq', args, stderr, r.exitCode);
    });
    const timer = new Promise<never>((_, rej) => setTimeout(() => rej(new ToolError('dnsmasq', args, `did not get ready within ${READY_TIMEOUT_MS / 1000} s; ${stderr}`, undefined)), READY_TIMEOUT_MS).unref());
    await Promise.race([readyP, exited.then(() => { throw new ToolError('dnsmasq', args, stderr, undefined); }), timer]);
    return {
      v4, server, bootUrl: ipxeBootUrl(server), mode: o.mode, exited, pid: proc.pid!, confFile: join(dir, 'dnsmasq.conf'), dir,
      async stop() {
        stopping = true;
        proc.kill('SIGTERM');
        await proc;
        await removeDir();
      },
    };
  } catch (e) {
    if (child) { child.kill('SIGKILL'); await child; }
    await removeDir();
    throw e;
  }
}
