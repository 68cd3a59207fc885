// The removable-media loader \EFI\BOOT\BOOTX64.EFI. A new VM (or a machine
// whose NVRAM was never told about this disk) has no boot entries: its UEFI
// firmware only tries that fixed path. When the ESP lacks it, install a copy
// of the guest's own loader there, the way Debian's "force-extra-removable"
// does: the vendor directory's shimx64.efi (or grubx64.efi) as BOOTX64.EFI,
// with what it loads beside it (grubx64.efi, grub.cfg). The FAT volume is
// written through mtools (no kernel vfat driver here).
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { attachLoop } from '../../src/blockdev/loop.js';
import { mtools } from '../../src/fs/vfat.js';
import type { PartitionTable, Partition } from '../../src/layout/table.js';
import type { Scope } from '../../src/util/scope.js';
import type { Change } from './change.js';

export const ESP_GPT_TYPE = 'c12a7328-f81f-11d2-ba4b-00a0c93ec93b';
export const isEspPartition = (t: PartitionTable, p: Partition) =>
  t.label === 'gpt' ? p.type.toLowerCase() === ESP_GPT_TYPE : p.type.toLowerCase() === 'ef';

/** An EFI system partition: where it lies on the disk and the host directory holding its unpacked files. */
export interface Esp { diskFile: string; offset: number; size: number; dir: string }

/** the real name of `name` in dir, ignoring case as FAT does */
async function entryCi(dir: string, name: string): Promise<string | undefined> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.find(n => n.toLowerCase() === name.toLowerCase());
}

/** ESP-relative path (as in the ESP's own directory tree) of each file to copy into \EFI\BOOT, the loader first; undefined: nothing to do */
export async function removableLoaderPlan(espDir: string): Promise<{ from: string; files: { src: string; dst: string }[] } | undefined> {
  const efi = await entryCi(espDir, 'EFI');
  if (!efi) return undefined;
  const boot = await entryCi(join(espDir, efi), 'BOOT');
  if (boot && await entryCi(join(espDir, efi, boot), 'BOOTX64.EFI')) return undefined;
  const vendors = (await readdir(join(espDir, efi))).filter(d => d.toLowerCase() !== 'boot').sort();
  for (const v of vendors) {
    const dir = join(espDir, efi, v);
    const shim = await entryCi(dir, 'shimx64.efi');
    const grub = await entryCi(dir, 'grubx64.efi');
    const loader = shim ?? grub;
    if (!loader) continue;
    const files = [{ src: `${efi}/${v}/${loader}`, dst: 'BOOTX64.EFI' }];
    // shim loads grubx64.efi from its own directory; GRUB may look for grub.cfg there
    for (const beside of [shim ? grub : undefined, await entryCi(dir, 'mmx64.efi'), await entryCi(dir, 'grub.cfg')]) {
      if (beside) files.push({ src: `${efi}/${v}/${beside}`, dst: beside });
    }
    return { from: `\\${efi}\\${v}\\${loader}`, files };
  }
  return undefined;
}

/** Install \EFI\BOOT\BOOTX64.EFI on the ESP when it is missing; the change list says what was added. */
export async function installRemovableLoader(scope: Scope, esp: Esp): Promise<Change[]> {
  const plan = await removableLoaderPlan(esp.dir);
  if (!plan) return [];
  const dev = await attachLoop(scope, esp.diskFile, { offset: esp.offset, size: esp.size, readOnly: false });
  const efi = (await entryCi(esp.dir, 'EFI'))!;
  if (!await entryCi(join(esp.dir, efi), 'BOOT')) await mtools('mmd', ['-i', dev, `::/${efi}/BOOT`]);
  const bootDir = `::/${efi}/${(await entryCi(join(esp.dir, efi), 'BOOT')) ?? 'BOOT'}`;
  for (const f of plan.files) await mtools('mcopy', ['-o', '-m', '-i', dev, join(esp.dir, f.src), `${bootDir}/${f.dst}`]);
  return [{
    file: `ESP:\\EFI\\BOOT\\BOOTX64.EFI`,
    before: 'absent',
    after: `copy of ${plan.from}${plan.files.length > 1 ? ` (with ${plan.files.slice(1).map(f => f.dst).join(', ')} beside it)` : ''}`,
    reason: 'a new machine has no UEFI boot entries; its firmware boots the removable-media path \\EFI\\BOOT\\BOOTX64.EFI',
  }];
}
