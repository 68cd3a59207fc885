// `ferry convert --firmware uefi`, the disk half: an MBR/BIOS Linux guest gets
// a GPT table with a new EFI system partition. The rebuild is file-level, so
// partitions may move: the ESP goes in front (at 1 MiB), the rest shifts
// behind it, and when the disk size stays, the data partitions give back the
// ESP's size (the size planner shrinks them as for a smaller disk). Partition
// numbers stay, so /dev/sda1-style names and the verify's pairing still hold.
// What happens inside the guest (ESP contents, fstab, grub.cfg) is
// converters/linux/grub-efi.ts, after the copy is verified.
import { createHash } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { openWritable, writeBytes, type OpenDisk } from '../blockdev/disk.js';
import { imageInfoChain } from '../blockdev/qemu-img.js';
import { run } from '../util/exec.js';
import { withScope } from '../util/scope.js';
import { espNotFat, firmwareUnsupported, grubEfiMissing } from '../errors.js';
import { chooseGrubEfiSet, GRUB_EFI_DIR, grubEfiCandidates, grubEfiWant, materializeGrubEfi } from '../drivers/grub-efi.js';
import { DriverStore } from '../drivers/store.js';
import { openFileSystems } from '../inspect/filesystems.js';
import type { GuestFs } from '../inspect/guest-fs.js';
import type { LinuxOs } from '../inspect/report.js';
import { findLinuxRoots, readLinux } from '../inspect/linux/index.js';
import { findWindowsRoot } from '../inspect/windows/index.js';
import { planLayout, type PlannedPartition } from '../layout/plan.js';
import { isExtended, readTable, writeTable, type Partition, type PartitionTable } from '../layout/table.js';
import type { Scope } from '../util/scope.js';
import { ESP_GPT_TYPE, isEspPartition } from '../../converters/linux/efi-loader.js';
import { installGrubEfi, type GrubEfiModules } from '../../converters/linux/grub-efi.js';
import type { Change } from '../../converters/linux/change.js';

export type FirmwareChoice = 'bios' | 'uefi';
const MiB = 2 ** 20;
export const ESP_BYTES = 64 * MiB;
const ALIGN = 2048;

const LINUX_FS = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
const BASIC_DATA = 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7';
/** MBR partition id → GPT partition type */
const GPT_TYPES: Readonly<Record<string, string>> = {
  '83': LINUX_FS, '82': '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F', '8e': 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
  'fd': 'A19D880F-05FC-4D3B-A006-743F0F84911E', 'ef': ESP_GPT_TYPE.toUpperCase(),
  '6': BASIC_DATA, 'b': BASIC_DATA, 'c': BASIC_DATA, 'e': BASIC_DATA,
};

export const gptTypeFor = (mbrId: string) => GPT_TYPES[mbrId.toLowerCase()] ?? LINUX_FS;

/** the new GPT's disk GUID follows from the source's MBR id and the size, so a resumed job plans the same table */
function diskGuid(mbrId: string, bytes: number): string {
  const h = createHash('sha256').update(`ferry uefi ${mbrId} ${bytes}`).digest('hex').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** --firmware uefi on a disk without an ESP: the rebuild lays out a GPT with one */
export const gainsEsp = (plan: { firmware?: FirmwareChoice }, table: PartitionTable) =>
  plan.firmware === 'uefi' && !table.partitions.some(p => isEspPartition(table, p));

/** The GPT table that replaces an MBR one: the ESP first, the source's partitions (numbers kept, extended dropped) after it. */
export function uefiTable(source: PartitionTable, planned: PlannedPartition[], sourceBytes: number, targetBytes: number): { table: PartitionTable; esp: Partition } {
  const ss = source.sectorSize;
  const espSize = ESP_BYTES / ss;
  const parts = planned.filter(p => !isExtended(source, p));
  const used = new Set(parts.map(p => p.number));
  let number = 1;
  while (used.has(number)) number++;
  const esp: PlannedPartition = { number, start: ALIGN, size: espSize, type: ESP_GPT_TYPE.toUpperCase(), name: 'EFI system partition', role: 'fixed' };
  const firstStart = Math.min(...parts.map(p => p.start));
  const shift = Math.max(0, esp.start + esp.size - firstStart);
  // swap keeps its size: the data partition is what gives the ESP's room back
  const moved = parts.map(({ bootable: _b, ...p }) => ({ ...p, start: p.start + shift, type: gptTypeFor(p.type), role: p.role === 'swap' ? 'fixed' as const : p.role }));
  // planned against the shifted disk: a same-size target makes the planner shrink data partitions by the shift (+ GPT's backup)
  const table: PartitionTable = { label: 'gpt', id: diskGuid(source.id, targetBytes), sectorSize: ss, partitions: [] };
  const out = planLayout(table, [esp, ...moved], sourceBytes + (shift + 33) * ss, targetBytes);
  return { table: out, esp: out.partitions.find(p => p.number === number)! };
}

/** What the source allows, checked read-only before the target exists: 'already' when it boots UEFI now. */
export async function checkUefiSource(scope: Scope, source: OpenDisk, work: string): Promise<'convert' | 'already'> {
  const { table, entries, readable } = await openFileSystems(scope, source.file, source.size, work);
  if (!table) throw firmwareUnsupported(source.describe, 'it has no partition table (a bare file system has no room for an EFI system partition)');
  for (const r of readable.filter(x => x.entry.type === 'ntfs')) {
    if (await findWindowsRoot(r.dir)) {
      throw firmwareUnsupported('a Windows guest', `partition ${r.entry.partition} holds Windows; Ferry changes the firmware of Linux guests only (Windows needs its own boot manager on the ESP: run 'mbr2gpt' inside the guest)`, { partition: r.entry.partition });
    }
  }
  const roots = await findLinuxRoots(readable);
  if (!roots.length) throw firmwareUnsupported(source.describe, 'no Linux root file system was found');
  const esp = table.partitions.find(p => isEspPartition(table, p));
  if (esp) {
    const type = entries.find(e => e.partition === esp.number)?.type;
    if (type !== 'vfat') throw espNotFat(esp.number, type);
    return 'already';
  }
  for (const root of roots) {
    const { os, fs } = await readLinux(root, readable, table.label, work);
    if (os.arch !== 'x86_64') {
      throw firmwareUnsupported(`a ${os.arch ?? 'unknown'}-architecture guest (${os.name})`, `its user space is ${os.arch === 'i386' ? '32-bit' : os.arch ?? 'of an unknown architecture'}; 64-bit UEFI (OVMF, x86_64) boots x86_64 guests only`, { arch: os.arch });
    }
    await grubEfiModules(os, fs);
  }
  return 'convert';
}

/**
 * Where GRUB's x86_64-efi files come from: the guest's own, else drivers-db's
 * set for exactly the guest's GRUB version (copied under `work` when given);
 * neither: DRIVER_MISSING naming the package and version to import.
 */
async function grubEfiModules(os: LinuxOs, fs: GuestFs, work?: string): Promise<GrubEfiModules> {
  const own = `/${GRUB_EFI_DIR}`;
  if (await fs.exists(`${own}/kernel.img`)) return { dir: (await fs.resolve(own))!, from: `the guest's ${own}` };
  const want = grubEfiWant(os);
  const store = DriverStore.open();
  try {
    const set = want.version ? chooseGrubEfiSet(grubEfiCandidates(store), want.version) : [];
    if (!set.length) throw grubEfiMissing(os.name, want);
    const dir = work ? join(await mkdtemp(join(work, 'grub-efi-')), 'x86_64-efi') : '';
    if (work) await materializeGrubEfi(store, set, dir);
    return { dir, from: `drivers-db (${set[0].container} ${want.version})` };
  } finally { store.close(); }
}

/** After the verified copy: the guest side of the change on the writable target (ESP contents, loader, fstab, grub.cfg). */
export async function fitUefiTarget(scope: Scope, target: OpenDisk, esp: { number: number; start: number; size: number }, work: string): Promise<Change[]> {
  const { table, entries, readable } = await openFileSystems(scope, target.file, target.size, work, { writable: true });
  const ss = table!.sectorSize;
  const changes: Change[] = [];
  for (const root of await findLinuxRoots(readable)) {
    const { os, fs } = await readLinux(root, readable, table!.label, work);
    const modules = await grubEfiModules(os, fs, work);
    changes.push(...await installGrubEfi({ scope, diskFile: target.file, modules, esp: { partition: esp.number, offset: esp.start * ss, size: esp.size * ss }, fs, os, fileSystems: entries, work }));
  }
  return changes;
}

/**
 * `ferry reconfigure --firmware uefi`: the same change in place (into an
 * overlay), where nothing may move. The partitions keep their sectors and the
 * ESP goes after the last one: the image's virtual size grows by the ESP (an
 * overlay grows alone; its backing file stays as it was). GPT's entries take
 * the sectors after the MBR, where BIOS GRUB's core.img was.
 */
export async function reconfigureToUefi(image: string, work: string): Promise<Change[]> {
  if (await withScope(async s => checkUefiSource(s, await openWritable(s, image, work), work)) === 'already') return [];
  const info = (await imageInfoChain(image))[0];
  const table = (await withScope(async s => readTable((await openWritable(s, image, work)).file)))!;
  const ss = table.sectorSize;
  const parts = table.partitions.filter(p => !isExtended(table, p));
  const first = Math.min(...parts.map(p => p.start));
  if (first < 34) throw firmwareUnsupported(image, `its first partition starts at sector ${first}, where GPT's partition entries must go; use 'ferry convert --firmware uefi', which may move partitions`);
  const used = new Set(parts.map(p => p.number));
  let number = 1;
  while (used.has(number)) number++;
  const lastEnd = Math.max(...parts.map(p => p.start + p.size));
  const esp: Partition = { number, start: Math.ceil(lastEnd / ALIGN) * ALIGN, size: ESP_BYTES / ss, type: ESP_GPT_TYPE.toUpperCase(), name: 'EFI system partition' };
  const newSize = Math.max(info.virtualSize, (esp.start + esp.size + ALIGN) * ss);
  if (newSize > info.virtualSize) await run('qemu-img', ['resize', '-q', '-f', info.format, image, String(newSize)]);
  const gpt: PartitionTable = {
    label: 'gpt', id: diskGuid(table.id, newSize), sectorSize: ss,
    partitions: [...parts.map(({ bootable: _b, ...p }) => ({ ...p, type: gptTypeFor(p.type) })), esp],
  };
  return withScope(async s => {
    const disk = await openWritable(s, image, work);
    // BIOS boot code goes: the MBR's code area and what is left of core.img after GPT's entries
    await writeBytes(disk.file, 0, Buffer.alloc(440));
    await writeTable(disk.file, gpt);
    if (first > 34) await writeBytes(disk.file, 34 * ss, Buffer.alloc((first - 34) * ss));
    return fitUefiTarget(s, disk, esp, work);
  });
}
