// Network bindings to the old NIC's MAC address. With --mac the new NIC's
// address takes the old one's place in every binding (udev rules, .link
// files, netplan match, NetworkManager, ifcfg), so the same interface name —
// and with it the guest's address configuration — comes up on the new NIC.
// Without --mac the bindings stay: the VM must then be given the old MAC.
import type { GuestFs } from '../../src/inspect/guest-fs.js';
import type { MacBinding } from '../../src/inspect/report.js';
import type { Change } from './change.js';
import { editLines } from './device-names.js';

export async function rebindMacs(fs: GuestFs, bindings: MacBinding[], newMac: string | undefined): Promise<Change[]> {
  if (!newMac) return [];
  const changes: Change[] = [];
  for (const file of [...new Set(bindings.filter(b => b.mac !== newMac).map(b => b.file))]) {
    const old = bindings.filter(b => b.file === file).map(b => b.mac);
    changes.push(...await editLines(fs, file, line => replaceMacs(line, old, newMac), `the interface was bound to the old NIC's MAC; the new NIC has ${newMac}`));
  }
  return changes;
}

/** text with every spelling of the old MACs (any case, ':' '-' or no separator) replaced by newMac in the same case */
export function replaceMacs(text: string, oldMacs: string[], newMac: string): string {
  let out = text;
  for (const mac of oldMacs) out = out.replace(new RegExp(mac.replace(/:/g, '[:-]?'), 'gi'), m => (m === m.toUpperCase() ? newMac.toUpperCase() : newMac));
  return out;
}
