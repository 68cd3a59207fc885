// BIOS → UEFI inside a Linux guest, on the target only: format the new EFI
// system partition, put a GRUB for x86_64-efi on it that is built from the
// guest's own modules (/usr/lib/grub/x86_64-efi), else from drivers-db's set for
// the guest's GRUB version (packed by the host's grub-mkimage: no host GRUB file
// enters the guest), mount it at /boot/efi,
// and make /boot/grub work under EFI (x86_64-efi modules, part_gpt).
// The loader goes both to the vendor directory and to the removable-media
// path \EFI\BOOT\BOOTX64.EFI, since a new machine has no NVRAM boot entries.
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { attachLoop } from '../../src/blockdev/loop.js';
import { probeDevice } from '../../src/fs/detect.js';
import { mtools } from '../../src/fs/vfat.js';
import type { GuestFs } from '../../src/inspect/guest-fs.js';
import type { FileSystemEntry, LinuxOs } from '../../src/inspect/report.js';
import { run } from '../../src/util/exec.js';
import type { Scope } from '../../src/util/scope.js';
import type { Change } from './change.js';
import { editLines } from './device-names.js';

/** built into the image: enough to find /boot/grub by UUID on GPT and read its config */
const CORE_MODULES = ['part_gpt', 'part_msdos', 'fat', 'ext2', 'normal', 'linux', 'search', 'search_fs_uuid', 'configfile', 'echo', 'test', 'serial', 'terminal', 'efi_gop', 'all_video'];
const FS_MODULES: Readonly<Record<string, string>> = { xfs: 'xfs', btrfs: 'btrfs' };

/** GRUB's x86_64-efi platform files on the host (kernel.img, moddep.lst, *.mod, *.lst) and where they came from */
export interface GrubEfiModules { dir: string; from: string }

export interface GrubEfiOptions {
  modules: GrubEfiModules;
  scope: Scope;
  diskFile: string;
  /** the new, unformatted ESP: byte range on the disk */
  esp: { partition: number; offset: number; size: number };
  fs: GuestFs;
  os: LinuxOs;
  fileSystems: FileSystemEntry[];
  work: string;
}

export async function installGrubEfi(o: GrubEfiOptions): Promise<Change[]> {
  const changes: Change[] = [];
  const modules = o.modules.dir;
  // /boot/grub lives on /boot's own file system when there is one
  const bootPart = o.os.mounts['/boot'] ?? o.os.mounts['/'];
  const boot = o.fileSystems.find(f => f.partition === bootPart)!;
  const grubDir = o.os.mounts['/boot'] !== undefined ? '/grub' : '/boot/grub';
  const vendor = ['debian', 'ubuntu'].includes(o.os.distro) ? o.os.distro : o.os.distro || 'linux';

  const image = join(o.work, 'grubx64.efi');
  await run('grub-mkimage', ['-O', 'x86_64-efi', '-d', modules, '-o', image, '-p', `/EFI/${vendor}`,
    ...CORE_MODULES, ...(FS_MODULES[boot.type ?? ''] ? [FS_MODULES[boot.type!]] : [])]);
  const cfg = join(o.work, 'esp-grub.cfg');
  await writeFile(cfg, `search --no-floppy --fs-uuid --set=root ${boot.uuid}\nset prefix=($root)${grubDir}\nconfigfile $prefix/grub.cfg\n`);

  const dev = await attachLoop(o.scope, o.diskFile, { offset: o.esp.offset, size: o.esp.size, readOnly: false });
  await run('mkfs.vfat', ['-F', '32', '-s', '1', '-n', 'ESP', dev]);
  const espUuid = (await probeDevice(dev)).uuid!;
  await mtools('mmd', ['-i', dev, '::/EFI', `::/EFI/${vendor}`, '::/EFI/BOOT']);
  for (const dir of [vendor, 'BOOT']) {
    await mtools('mcopy', ['-i', dev, image, `::/EFI/${dir}/${dir === 'BOOT' ? 'BOOTX64.EFI' : 'grubx64.efi'}`]);
    await mtools('mcopy', ['-i', dev, cfg, `::/EFI/${dir}/grub.cfg`]);
  }
  const from = `grub-mkimage -O x86_64-efi from ${o.modules.from}`;
  changes.push({ file: `ESP:\\EFI\\${vendor}\\grubx64.efi`, before: 'absent', after: from, reason: 'the guest boots UEFI now; GRUB for x86_64-efi is its loader' });
  changes.push({ file: 'ESP:\\EFI\\BOOT\\BOOTX64.EFI', before: 'absent', after: `copy of \\EFI\\${vendor}\\grubx64.efi`, reason: 'a new machine has no UEFI boot entries; its firmware boots the removable-media path' });

  // /boot/grub/x86_64-efi: what GRUB loads at run time (insmod) under EFI
  const target = (await o.fs.hostPathForWrite('/boot/grub/x86_64-efi'))!;
  await mkdir(target, { recursive: true });
  for (const f of (await readdir(modules)).filter(n => /\.(mod|lst)$/.test(n))) await copyFile(join(modules, f), join(target, f));
  changes.push({ file: '/boot/grub/x86_64-efi', before: 'absent', after: `modules from ${o.modules.from}`, reason: 'GRUB for x86_64-efi loads its modules from there' });
  // the guest's own grub.cfg under EFI: the partition table is GPT now
  changes.push(...await editLines(o.fs, '/boot/grub/grub.cfg', line => line
    .replace(/\binsmod\s+part_msdos\b/, 'insmod part_gpt')
    .replace(/\(([a-z]+\d+),msdos(\d+)\)/g, '($1,gpt$2)'), 'the disk is GPT now (UEFI): GRUB reads it with part_gpt'));

  const fstab = (await o.fs.hostPathForWrite('/etc/fstab'))!;
  const line = `UUID=${espUuid}  /boot/efi  vfat  umask=0077  0  1`;
  const text = (await o.fs.readText('/etc/fstab')) ?? '';
  await writeFile(fstab, `${text}${text.endsWith('\n') || !text ? '' : '\n'}${line}\n`);
  changes.push({ file: '/etc/fstab', before: '(no /boot/efi)', after: line, reason: 'the new EFI system partition is mounted where Debian and RHEL keep it' });
  await mkdir((await o.fs.hostPathForWrite('/boot/efi'))!, { recursive: true });
  return changes;
}
