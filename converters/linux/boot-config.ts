// The kernel command line wherever the boot loader keeps it: GRUB's generated
// grub.cfg, Boot Loader Specification entries, and the settings the guest's
// own grub-mkconfig will use next time (/etc/default/grub), so a kernel
// update inside the guest keeps the re-fit.
import type { GuestFs } from '../../src/inspect/guest-fs.js';
import type { FileSystemEntry } from '../../src/inspect/report.js';
import type { Change } from './change.js';
import { editLines, rewriteRootArg } from './device-names.js';

const SERIAL = 'console=ttyS0,115200';

export async function rewriteBootConfig(fs: GuestFs, fss: FileSystemEntry[], serialConsole: boolean): Promise<Change[]> {
  const changes: Change[] = [];
  const addSerial = (cmdline: string) => (serialConsole && !/\bconsole=ttyS0\b/.test(cmdline) ? `${cmdline} ${SERIAL}` : cmdline);
  for (const cfg of ['/boot/grub/grub.cfg', '/boot/grub2/grub.cfg']) {
    changes.push(...await editLines(fs, cfg, line => {
      if (!/^\s*(linux|linuxefi|linux16)\s/.test(line)) return line;
      return addSerial(rewriteRootArg(line, fss));
    }, 'boot loader: root= by UUID (the disk bus changed); serial console for the new platform'));
  }
  for (const name of await fs.list('/boot/loader/entries')) {
    if (!name.endsWith('.conf')) continue;
    changes.push(...await editLines(fs, `/boot/loader/entries/${name}`, line =>
      (/^options\s/.test(line) ? addSerial(rewriteRootArg(line, fss)) : line), 'boot entry: root= by UUID; serial console'));
  }
  changes.push(...await editLines(fs, '/etc/default/grub', line => {
    const m = /^(GRUB_CMDLINE_LINUX=)(["']?)(.*?)\2\s*$/.exec(line);
    if (!m) return line;
    return `${m[1]}"${addSerial(rewriteRootArg(m[3], fss)).trim()}"`;
  }, 'future grub-mkconfig runs in the guest keep the serial console'));
  return changes;
}
