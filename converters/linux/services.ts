// Hypervisor guest tools: the old platform's are masked (a link to /dev/null
// in /etc/systemd/system, what `systemctl mask` does), the new platform's are
// unmasked where a previous re-fit masked them. Nothing is uninstalled.
import { lstat, readlink, rm, symlink } from 'node:fs/promises';
import type { GuestFs } from '../../src/inspect/guest-fs.js';
import type { Change } from './change.js';

const UNITS: Record<string, string[]> = {
  'open-vm-tools': ['open-vm-tools.service', 'vmtoolsd.service', 'vgauth.service'],
  'vmware-tools': ['vmware-tools.service', 'vmware-tools-thinprint.service'],
  'hyperv-daemons': ['hv-kvp-daemon.service', 'hv-vss-daemon.service', 'hv-fcopy-daemon.service', 'hypervkvpd.service', 'hypervvssd.service', 'hypervfcopyd.service'],
  'qemu-guest-agent': ['qemu-guest-agent.service'],
  'virtualbox-guest-additions': ['vboxadd.service', 'vboxadd-service.service', 'virtualbox-guest-utils.service'],
};
const UNIT_DIRS = ['/etc/systemd/system', '/lib/systemd/system', '/usr/lib/systemd/system'];

export async function setGuestTools(fs: GuestFs, installed: string[], want: { enable: string[]; disable: string[] }): Promise<Change[]> {
  const changes: Change[] = [];
  for (const tool of installed) {
    for (const unit of UNITS[tool] ?? []) {
      if (!(await unitExists(fs, unit))) continue;
      const path = `/etc/systemd/system/${unit}`;
      const host = (await fs.hostPathForWrite(path))!;
      const masked = await isMasked(host);
      if (want.disable.includes(tool) && !masked) {
        await rm(host, { force: true });
        await symlink('/dev/null', host);
        changes.push({ file: path, before: 'enabled', after: 'masked (-> /dev/null)', reason: `${tool} belongs to the old platform` });
      } else if (want.enable.includes(tool) && masked) {
        await rm(host);
        changes.push({ file: path, before: 'masked', after: 'unmasked', reason: `${tool} serves the new platform` });
      }
    }
  }
  return changes;
}

async function unitExists(fs: GuestFs, unit: string): Promise<boolean> {
  for (const d of UNIT_DIRS) if (await fs.exists(`${d}/${unit}`)) return true;
  return false;
}

async function isMasked(hostPath: string): Promise<boolean> {
  const st = await lstat(hostPath).catch(() => undefined);
  return !!st?.isSymbolicLink() && (await readlink(hostPath)) === '/dev/null';
}
