// Network adapters and their IPv4 settings. An adapter is known by its GUID:
//   SOFTWARE ...\NetworkCards\N           ServiceName = {GUID}, Description
//   Control\Class\{4D36E972-…}\NNNN      NetCfgInstanceId = {GUID}, DriverDesc, Ndi\Service, Characteristics
//   Control\Network\{4D36E972-…}\{GUID}\Connection  Name ("Local Area Connection")
//   Services\Tcpip\Parameters\Interfaces\{GUID}     EnableDHCP, IPAddress, SubnetMask, DefaultGateway, NameServer
import type { WindowsNic } from '../report.js';
import type { RegKey } from './hive.js';

export const NET_CLASS = '{4D36E972-E325-11CE-BFC1-08002BE10318}';

/** NCF_PHYSICAL: a real (or emulated) adapter, not a WAN miniport or tunnel */
const NCF_PHYSICAL = 0x4;

export interface NetInput {
  /** SOFTWARE ...\Windows NT\CurrentVersion\NetworkCards (absent when SOFTWARE cannot be read) */
  networkCards?: RegKey;
  /** SYSTEM Control\Class\{4D36E972-…} */
  adapterClass?: RegKey;
  /** SYSTEM Control\Network\{4D36E972-…} */
  connections?: RegKey;
  /** SYSTEM Services\Tcpip\Parameters\Interfaces */
  interfaces?: RegKey;
}

interface Adapter { guid: string; service?: string; description?: string }

export function readNics(input: NetInput): WindowsNic[] {
  const fromClass = new Map<string, Adapter & { physical: boolean }>();
  for (const k of input.adapterClass?.children() ?? []) {
    const guid = k.str('NetCfgInstanceId');
    if (!guid) continue;
    fromClass.set(guid.toLowerCase(), {
      guid,
      service: k.sub('Ndi')?.str('Service') ?? k.str('Service'),
      description: k.str('DriverDesc'),
      physical: ((k.num('Characteristics') ?? 0) & NCF_PHYSICAL) !== 0,
    });
  }
  // The adapters: NetworkCards lists the installed ones; without SOFTWARE the
  // class keys marked physical; with neither, every TCP/IP interface.
  let adapters: Adapter[];
  const cards = input.networkCards?.children() ?? [];
  if (cards.length) {
    adapters = cards.flatMap(c => {
      const guid = c.str('ServiceName');
      if (!guid) return [];
      const cls = fromClass.get(guid.toLowerCase());
      return [{ guid, service: cls?.service, description: c.str('Description') ?? cls?.description }];
    });
  } else if ([...fromClass.values()].some(a => a.physical)) {
    adapters = [...fromClass.values()].filter(a => a.physical);
  } else {
    adapters = (input.interfaces?.children() ?? []).map(k => ({ guid: k.name }));
  }

  const seen = new Set<string>();
  const out: WindowsNic[] = [];
  for (const a of adapters) {
    if (seen.has(a.guid.toLowerCase())) continue;
    seen.add(a.guid.toLowerCase());
    const nic: WindowsNic = { guid: a.guid, dhcp: true, addresses: [], gateways: [], dns: [] };
    const name = input.connections?.sub(`${a.guid}\\Connection`)?.str('Name');
    if (name) nic.name = name;
    const iface = input.interfaces?.sub(a.guid);
    if (iface) {
      // an interface without EnableDHCP is left at Windows' default, DHCP
      nic.dhcp = (iface.num('EnableDHCP') ?? 1) !== 0;
      const masks = iface.strings('SubnetMask');
      iface.strings('IPAddress').forEach((ip, i) => {
        if (!isAddress(ip)) return;
        const prefix = maskToPrefix(masks[i]);
        nic.addresses.push(prefix === undefined ? ip : `${ip}/${prefix}`);
      });
      nic.gateways = iface.strings('DefaultGateway').filter(isAddress);
      nic.dns = (iface.str('NameServer') ?? '').split(/[,\s]+/).filter(isAddress);
    }
    if (a.service) nic.service = a.service;
    if (a.description) nic.description = a.description;
    out.push(nic);
  }
  return out;
}

/** a usable IPv4 address (the registry writes 0.0.0.0 for "none") */
function isAddress(s: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(s.trim()) && s.trim() !== '0.0.0.0';
}

function maskToPrefix(mask: string | undefined): number | undefined {
  if (!mask || !/^\d{1,3}(\.\d{1,3}){3}$/.test(mask)) return undefined;
  const n = mask.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
  const bits = n.toString(2).padStart(32, '0');
  return /^1*0*$/.test(bits) ? bits.indexOf('0') < 0 ? 32 : bits.indexOf('0') : undefined;
}
