// UEFI guests (issue 14): a GPT guest whose ESP has only its vendor loader
// (\EFI\debian\grubx64.efi, no \EFI\BOOT\BOOTX64.EFI) boots on a new VM with
// no NVRAM entries once re-fit adds the removable-media loader; a BIOS/MBR
// guest converted with --firmware uefi becomes GPT with an ESP and boots under
// OVMF with the same root; the BIOS guest that boots has no x86_64-efi GRUB of
// its own (a copy with it removed): its GRUB comes from drivers-db, imported
// from Debian's grub-efi-amd64-bin of the guest's GRUB version. What cannot
// work is refused before a byte is written. Two boots in all; every other judge is a tool Ferry does not use
// for the job (mtools on our own loop, sfdisk --json, blkid, debugfs, the
// test's own marker regex).
import assert from 'node:assert/strict';
import { mkdtemp, open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import type { InspectReport } from '../src/inspect/report.js';
import { loadProfile } from '../src/profiles/profiles.js';
import { describeHardware, guestFacts } from '../src/register/hardware.js';
import { domainXml } from '../src/register/libvirt-xml.js';
import { uefiTable } from '../src/convert/to-uefi.js';
import { initialSteps } from '../src/jobs/steps.js';
import { validateSpec } from '../src/jobs/spec.js';
import type { PartitionTable } from '../src/layout/table.js';
import { bootImage, OVMF_CODE, qemuArgs } from '../src/verify/boot.js';
import { buildDebianGuest, buildPhonyWindows, buildUefiGuests, fetchGrubEfiDeb, type UefiGuests } from './support/fixtures.js';
import { ferry, guardMachine, sha256, sha256All, tempDir } from './support/harness.js';
import { bootBudget } from './support/boot-budget.js';

guardMachine();
const dir = await tempDir();
const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
/** the test's own reading of the guest's serial line */
const MARKER = /FERRY-BOOT-OK root=(\S+) host=(\S+) net=\S+ efi=(yes|no)/;
const MT = { env: { MTOOLS_SKIP_CHECK: '1' } };

let g: UefiGuests;
const sums: Record<string, string> = {};
before(async () => {
  g = await buildUefiGuests();
  for (const f of [g.uefi, g.bios]) sums[f] = await sha256(f);
});
after(async () => assert.deepEqual(await sha256All(Object.keys(sums)), sums, 'both sources are unchanged'));

async function convertJson(args: string[], env?: Record<string, string>): Promise<Record<string, any>> {
  const r = await ferry(['convert', ...args, '--json'], { env });
  assert.equal(r.exitCode, 0, `convert failed:\n${r.stderr}\n${r.stdout.slice(-1500)}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
}

interface SfPart { node: string; start: number; size: number; type: string }
async function sfdiskJson(image: string): Promise<{ label: string; partitions: SfPart[] }> {
  return JSON.parse((await execa('sfdisk', ['--json', image])).stdout).partitiontable;
}

/** a read-only loop over one partition of a raw image, detached after fn */
async function withPartition<T>(image: string, p: SfPart, fn: (dev: string) => Promise<T>): Promise<T> {
  const dev = (await execa('losetup', ['--find', '--show', '--read-only', '--offset', String(p.start * 512), '--sizelimit', String(p.size * 512), image])).stdout.trim();
  try { return await fn(dev); } finally { await execa('losetup', ['-d', dev]); }
}
const blkid = async (dev: string, tag: string) => (await execa('blkid', ['-p', '-s', tag, '-o', 'value', dev])).stdout.trim();
const debugfsCat = async (dev: string, path: string) => (await execa('debugfs', ['-R', `cat ${path}`, dev])).stdout;

/** refused before a byte is written: a typed error, the source unchanged, no target */
async function refused(source: string, args: string[], code: string, pattern: RegExp) {
  const sum = await sha256(source);
  const target = join(dir, `refused-${code}.qcow2`);
  const r = await ferry(['convert', source, target, ...args]);
  assert.notEqual(r.exitCode, 0);
  assert.match(r.stderr, new RegExp(`${code}: `), r.stderr);
  assert.match(r.stderr, pattern);
  assert.equal(await stat(target).catch(() => undefined), undefined, 'no target left behind');
  assert.equal(await sha256(source), sum, 'the source is unchanged');
}


/** the GRUB version a Debian guest's dpkg says (grub-common), read with debugfs */
async function guestGrubVersion(dev: string): Promise<string> {
  const status = await debugfsCat(dev, '/var/lib/dpkg/status');
  const stanza = status.split('\n\n').find(x => /^Package: grub-common$/m.test(x));
  return /^Version: (\S+)$/m.exec(stanza ?? '')![1];
}

/**
 * A copy of the BIOS guest as if grub-efi-amd64-bin was never installed: no
 * /usr/lib/grub/x86_64-efi, no dpkg record of the package. Returns the copy
 * and its GRUB version.
 */
async function withoutGrubEfi(source: string): Promise<{ image: string; grubVersion: string }> {
  const image = join(dir, 'bios-no-grub-efi.raw');
  await execa('cp', ['--sparse=always', source, image]);
  const root = (await sfdiskJson(image)).partitions[0];
  const dev = (await execa('losetup', ['--find', '--show', '--offset', String(root.start * 512), '--sizelimit', String(root.size * 512), image])).stdout.trim();
  const mnt = await mkdtemp(join(dir, 'mnt-'));
  try {
    await execa('mount', [dev, mnt]);
    try {
      await execa('rm', ['-rf', '--one-file-system', join(mnt, 'usr/lib/grub/x86_64-efi'), join(mnt, 'var/lib/dpkg/info/grub-efi-amd64-bin.list'), join(mnt, 'var/lib/dpkg/info/grub-efi-amd64-bin.md5sums')]);
      const statusFile = join(mnt, 'var/lib/dpkg/status');
      const fh = await open(statusFile, 'r+');
      try {
        const kept = (await fh.readFile('utf8')).split('\n\n').filter(x => !/^Package: grub-efi-amd64-bin$/m.test(x)).join('\n\n').replace(/\n*$/, '\n');
        await fh.truncate(0);
        await fh.write(kept, 0);
      } finally { await fh.close(); }
    } finally { await execa('umount', [mnt]); }
    const [gone, status] = [(await execa('debugfs', ['-R', 'stat /usr/lib/grub/x86_64-efi', dev])).stderr, await debugfsCat(dev, '/var/lib/dpkg/status')];
    assert.match(gone, /File not found/, 'the copy has no x86_64-efi modules');
    assert.doesNotMatch(status, /^Package: grub-efi-amd64-bin$/m);
    return { image, grubVersion: await guestGrubVersion(dev) };
  } finally { await execa('losetup', ['-d', dev]); }
}

async function bootUefi(image: string, format: string, virtio: boolean) {
  const b = await bootImage({
    image, format, firmware: 'uefi', ...bootBudget(480_000), failOn: /Kernel panic|Dropping to a shell/,
    ...(virtio ? { diskBus: 'virtio' as const, machine: 'q35' as const } : {}),
  });
  const m = MARKER.exec(b.serialLog);
  assert.ok(m, `the guest printed its marker under OVMF (${b.endedBy} after ${b.seconds}s):\n${b.serialLog.slice(-2500)}`);
  console.log(`# UEFI boot of ${image}: marker after ${b.seconds}s`);
  return { root: m[1], host: m[2], efi: m[3] };
}

/**
 * Each boot starts as soon as its target exists and runs beside the other
 * tests (TCG takes one core; the machine has two); its test awaits it.
 */
const boots: Record<string, Promise<Awaited<ReturnType<typeof bootUefi>>>> = {};
function startBoot(name: string, image: string, format: string, virtio: boolean): void {
  boots[name] = bootUefi(image, format, virtio);
  boots[name].catch(() => undefined); // awaited (and reported) by its test
}

describe('UEFI guest on a new VM: re-fit installs \\EFI\\BOOT\\BOOTX64.EFI', () => {
  let raw: string;
  let result: Record<string, any>;
  before(async () => {
    const target = join(dir, 'uefi.qcow2');
    result = await convertJson([g.uefi, target, '--profile', 'kvm-virtio']);
    startBoot('uefi', target, 'qcow2', true);
    // a raw view of the target for the tools that read partitions (the qcow2 is what boots)
    raw = join(dir, 'uefi-view.raw');
    await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', target, raw]);
  });

  it('reports the new removable-media loader', () => {
    const c = (result.refit.changes as { file: string; before: string; after: string }[]).find(x => /BOOTX64\.EFI/i.test(x.file));
    assert.ok(c, JSON.stringify(result.refit.changes));
    assert.equal(c.before, 'absent');
    assert.match(c.after, /\\EFI\\debian\\grubx64\.efi/);
    assert.equal(result.verified, true);
  });

  it('the ESP (read with mtools) holds BOOTX64.EFI equal to the guest\'s loader', async () => {
    const t = await sfdiskJson(raw);
    assert.equal(t.label, 'gpt');
    const esp = t.partitions.find(p => p.type === ESP_TYPE)!;
    assert.ok(esp, 'the target keeps its ESP');
    await withPartition(raw, esp, async dev => {
      const listing = (await execa('mdir', ['-i', dev, '-b', '::/EFI/BOOT'], MT)).stdout;
      assert.match(listing, /BOOTX64\.EFI/i);
      for (const [src, name] of [['::/EFI/BOOT/BOOTX64.EFI', 'boot.efi'], ['::/EFI/debian/grubx64.efi', 'vendor.efi']]) {
        await execa('mcopy', ['-n', '-i', dev, src, join(dir, name)], MT);
      }
    });
    assert.equal(await sha256(join(dir, 'boot.efi')), await sha256(join(dir, 'vendor.efi')));
  });

  it('boots under OVMF with fresh variables (no NVRAM entries): efi=yes, the source\'s root', async () => {
    const m = await boots.uefi;
    assert.equal(m.efi, 'yes');
    assert.equal(m.root, g.info.uefi_root_uuid);
  });
});

describe('BIOS guest → UEFI (convert --firmware uefi), its x86_64-efi GRUB from drivers-db', () => {
  let target: string;
  let result: Record<string, any>;
  let t: { label: string; partitions: SfPart[] };
  let source: { image: string; grubVersion: string };
  let deb: string;
  before(async () => {
    target = join(dir, 'bios-to-uefi.raw');
    source = await withoutGrubEfi(g.bios);
    deb = await fetchGrubEfiDeb(source.grubVersion);
    // a drivers-db of its own: the test's default one stays empty for the DRIVER_MISSING checks
    const env = { FERRY_DRIVERS_DB: join(dir, 'drivers-db') };
    const imported = await ferry(['drivers', 'import', deb, '--json'], { env });
    assert.equal(imported.exitCode, 0, imported.stderr);
    result = await convertJson([source.image, target, '--firmware', 'uefi'], env);
    startBoot('bios-to-uefi', target, 'raw', false);
    t = await sfdiskJson(target);
  });

  it('without the modules in drivers-db: DRIVER_MISSING names grub-efi-amd64-bin of the guest\'s GRUB version', async () => {
    const version = source.grubVersion.replace(/[.+]/g, '\\$&');
    await refused(source.image, ['--firmware', 'uefi'], 'DRIVER_MISSING', new RegExp(`import the Debian package grub-efi-amd64-bin \\(version ${version}\\)`));
  });

  it('the loader and /boot/grub/x86_64-efi come from drivers-db: the package\'s own files', async () => {
    const changes = result.firmware.changes as { file: string; after: string }[];
    assert.ok(changes.some(c => c.file.endsWith('grubx64.efi') && c.after.includes(`drivers-db (grub-efi-amd64-bin ${source.grubVersion})`)), JSON.stringify(changes));
    const unpacked = await mkdtemp(join(dir, 'deb-'));
    await execa('dpkg-deb', ['-x', deb, unpacked]);
    const root = t.partitions.find(p => p.node.endsWith('1'))!;
    const fromTarget = join(dir, 'normal.mod');
    await withPartition(target, root, d => execa('debugfs', ['-R', `dump /boot/grub/x86_64-efi/normal.mod ${fromTarget}`, d]));
    assert.equal(await sha256(fromTarget), await sha256(join(unpacked, 'usr/lib/grub/x86_64-efi/normal.mod')));
  });

  it('the table is GPT with an ESP (vfat); 83 → Linux filesystem, 82 → Linux swap; the root keeps its UUID', async () => {
    assert.equal(t.label, 'gpt');
    const esp = t.partitions.find(p => p.type === ESP_TYPE)!;
    assert.ok(esp, JSON.stringify(t.partitions));
    assert.equal(await withPartition(target, esp, d => blkid(d, 'TYPE')), 'vfat');
    const root = t.partitions.find(p => p.node.endsWith('1'))!;
    assert.equal(root.type, '0FC63DAF-8483-4772-8E79-3D69D8477DE4');
    assert.equal(t.partitions.find(p => p.node.endsWith('2'))!.type, '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F');
    assert.equal(await withPartition(target, root, d => blkid(d, 'UUID')), g.info.bios_root_uuid);
    assert.equal(result.layout.bootCode.mbr, false);
    assert.equal((await stat(target)).size, (await stat(g.bios)).size, 'same disk size: the data partition gave the ESP its room');
  });

  it('the BIOS boot code is gone; fstab mounts the ESP at /boot/efi by UUID; /boot/grub has x86_64-efi and part_gpt', async () => {
    const fh = await open(target, 'r');
    const head = Buffer.alloc(440);
    try { await fh.read(head, 0, 440, 0); } finally { await fh.close(); }
    assert.ok(head.every(b => b === 0), 'no boot code in the protective MBR');
    const esp = t.partitions.find(p => p.type === ESP_TYPE)!;
    const espUuid = await withPartition(target, esp, d => blkid(d, 'UUID'));
    const root = t.partitions.find(p => p.node.endsWith('1'))!;
    const [fstab, cfg, mods] = await withPartition(target, root, async d => [
      await debugfsCat(d, '/etc/fstab'), await debugfsCat(d, '/boot/grub/grub.cfg'),
      (await execa('debugfs', ['-R', 'ls -l /boot/grub/x86_64-efi', d])).stdout,
    ]);
    assert.match(fstab, new RegExp(`^UUID=${espUuid}\\s+/boot/efi\\s+vfat\\s`, 'm'));
    assert.match(cfg, /insmod part_gpt/);
    assert.match(mods, /normal\.mod/);
    assert.ok((result.firmware.changes as { file: string }[]).some(c => /BOOTX64/.test(c.file)));
  });

  it('boots under OVMF with fresh variables: efi=yes, the same root UUID', async () => {
    const m = await boots['bios-to-uefi'];
    assert.equal(m.efi, 'yes');
    assert.equal(m.root, g.info.bios_root_uuid);
  });

  it('register describes it as a UEFI machine: libvirt <os firmware=efi> without secure boot', async () => {
    const r = await ferry(['inspect', target, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const report = JSON.parse(r.stdout) as InspectReport;
    const hw = describeHardware(await loadProfile('kvm-virtio'), { name: 'uefi-vm' }, { path: target, format: 'raw', virtualSize: 2 ** 31 }, guestFacts(report));
    const xml = domainXml(hw, { serialLog: join(dir, 'serial.log') });
    assert.match(xml, /<os firmware='efi'>/);
    assert.match(xml, /<feature enabled='no' name='secure-boot'\/>/);
  });
});

describe('reconfigure --firmware uefi into an overlay (nothing moves; the overlay grows by the ESP)', () => {
  it('the overlay is GPT with the same partition starts, an ESP after them and /boot/efi in fstab; the template is unchanged', async () => {
    const overlay = join(dir, 'reconf.qcow2');
    const r = await ferry(['reconfigure', g.bios, '--overlay', overlay, '--profile', 'kvm-legacy', '--firmware', 'uefi', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const changes = JSON.parse(r.stdout).firmware.changes as { file: string; after: string }[];
    assert.ok(changes.some(c => c.file === '/etc/fstab'));
    assert.ok(changes.some(c => c.file === '/boot/grub/x86_64-efi' && c.after.includes("the guest's /usr/lib/grub/x86_64-efi")), 'the BIOS guest\'s own modules');
    const raw = join(dir, 'reconf.raw');
    await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', overlay, raw]);
    const [before, after] = [await sfdiskJson(g.bios), await sfdiskJson(raw)];
    assert.equal(after.label, 'gpt');
    for (const p of before.partitions) assert.equal(after.partitions.find(q => q.node.endsWith(p.node.slice(-1)))?.start, p.start);
    const esp = after.partitions.find(p => p.type === ESP_TYPE)!;
    assert.ok(esp.start >= Math.max(...before.partitions.map(p => p.start + p.size)));
    const espUuid = await withPartition(raw, esp, d => blkid(d, 'UUID'));
    const fstab = await withPartition(raw, after.partitions.find(p => p.node.endsWith('1'))!, d => debugfsCat(d, '/etc/fstab'));
    assert.match(fstab, new RegExp(`^UUID=${espUuid}\\s+/boot/efi\\s`, 'm'));
  });
});

describe('refused before a byte is written (typed errors, source unchanged, no target)', () => {
  it('a BIOS guest without x86_64-efi GRUB modules: DRIVER_MISSING names grub-efi-amd64-bin', async () => {
    const disk = await buildDebianGuest();
    const root = (await sfdiskJson(disk)).partitions[0];
    const has = await withPartition(disk, root, async d => (await execa('debugfs', ['-R', 'stat /usr/lib/grub/x86_64-efi', d])).stderr);
    assert.match(has, /File not found/, 'the Debian fixture has no x86_64-efi modules');
    await refused(disk, ['--firmware', 'uefi'], 'DRIVER_MISSING', /grub-efi-amd64-bin/);
  });

  it('an ESP that is not FAT: ESP_NOT_FAT, for --firmware uefi and for a re-fit', async () => {
    const bad = join(dir, 'esp-ext2.raw');
    await execa('cp', ['--sparse=always', g.uefi, bad]);
    const esp = (await sfdiskJson(bad)).partitions.find(p => p.type === ESP_TYPE)!;
    const dev = (await execa('losetup', ['--find', '--show', '--offset', String(esp.start * 512), '--sizelimit', String(esp.size * 512), bad])).stdout.trim();
    try { await execa('mkfs.ext2', ['-q', '-F', dev]); } finally { await execa('losetup', ['-d', dev]); }
    await refused(bad, ['--firmware', 'uefi'], 'ESP_NOT_FAT', /not FAT/);
    await refused(bad, ['--profile', 'kvm-virtio'], 'ESP_NOT_FAT', /not FAT/);
  });

  it('a 32-bit guest: FIRMWARE_UNSUPPORTED (a copy of the BIOS guest whose user space looks i386)', async () => {
    const x86 = join(dir, 'i386.raw');
    await execa('cp', ['--sparse=always', g.bios, x86]);
    const root = (await sfdiskJson(x86)).partitions[0];
    const dev = (await execa('losetup', ['--find', '--show', '--offset', String(root.start * 512), '--sizelimit', String(root.size * 512), x86])).stdout.trim();
    try {
      // the 64-bit loader goes, a 32-bit one's name comes: what an i386 Debian has
      for (const cmd of ['rm /usr/lib64/ld-linux-x86-64.so.2', 'write /etc/hostname /usr/lib/ld-linux.so.2']) await execa('debugfs', ['-w', '-R', cmd, dev]);
    } finally { await execa('losetup', ['-d', dev]); }
    await refused(x86, ['--firmware', 'uefi'], 'FIRMWARE_UNSUPPORTED', /32-bit/);
  });

  it('a Windows guest: FIRMWARE_UNSUPPORTED says so', async () => {
    const w = await buildPhonyWindows();
    assert.equal((await sfdiskJson(w.win2019.image)).label, 'dos', 'the phony Windows disk is a BIOS one');
    await refused(w.win2019.image, ['--firmware', 'uefi'], 'FIRMWARE_UNSUPPORTED', /Windows/);
  });
});

describe('pieces (no disk)', () => {
  it('an MBR table with an extended partition becomes GPT: ESP first at 1 MiB, numbers kept, 83/82 mapped, the root gives the room back', () => {
    const GiB = 2 ** 30, s = GiB / 512;
    const mbr: PartitionTable = { label: 'dos', id: '0x12345678', sectorSize: 512, partitions: [
      { number: 1, start: 2048, size: 3 * s / 2, type: '83', bootable: true },
      { number: 2, start: 2048 + 3 * s / 2, size: s / 2 - 2048, type: '5' },
      { number: 5, start: 4096 + 3 * s / 2, size: s / 2 - 4096, type: '82' },
    ] };
    const planned = mbr.partitions.map(p => ({ ...p, role: p.type === '83' ? 'data' as const : p.type === '82' ? 'swap' as const : 'fixed' as const, minSize: p.type === '83' ? s / 4 : p.type === '82' ? 2048 : undefined }));
    const { table, esp } = uefiTable(mbr, planned, 2 * GiB, 2 * GiB);
    assert.equal(table.label, 'gpt');
    assert.deepEqual([esp.number, esp.start, esp.type], [2, 2048, ESP_TYPE]);
    assert.deepEqual(table.partitions.map(p => p.number), [1, 2, 5]);
    const [root, , swap] = table.partitions;
    assert.equal(root.type, '0FC63DAF-8483-4772-8E79-3D69D8477DE4');
    assert.equal(swap.type, '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F');
    assert.equal(swap.size, mbr.partitions[2].size, 'swap keeps its size');
    assert.equal(root.start, esp.start + esp.size);
    assert.ok(swap.start + swap.size <= 2 * s - 33, 'fits before the backup GPT');
    assert.ok(table.partitions.every(p => !p.bootable));
    assert.equal(uefiTable(mbr, planned, 2 * GiB, 2 * GiB).table.id, table.id, 'the same source plans the same disk GUID');
  });

  it('a job spec takes firmware uefi (and refuses another value, or block mode); its steps gain "firmware"', () => {
    const spec = { source: '/a.raw', target: '/b.qcow2' };
    assert.deepEqual(validateSpec({ ...spec, firmware: 'uefi' }), []);
    assert.deepEqual(validateSpec({ ...spec, firmware: 'efi' }).map(e => e.field), ['firmware']);
    assert.deepEqual(validateSpec({ ...spec, firmware: 'uefi', options: { mode: 'block' } }).map(e => e.field), ['firmware']);
    assert.ok(initialSteps({ ...spec, firmware: 'uefi' }).includes('firmware'));
  });

  it('qemu gets OVMF as read-only pflash and the per-boot variable store', () => {
    const args = qemuArgs({ image: '/x.raw', format: 'raw', ovmfVars: '/w/VARS.fd' }).join(' ');
    assert.ok(args.includes(`if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`));
    assert.ok(args.includes('if=pflash,format=raw,unit=1,file=/w/VARS.fd'));
    assert.ok(!qemuArgs({ image: '/x.raw', format: 'raw' }).join(' ').includes('pflash'));
  });
});
