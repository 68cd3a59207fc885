// `ferry inspect` on Linux guests: every field the fixture scripts put there
// comes back, read without booting and without changing a byte of the source;
// damaged parts become typed error entries while the rest is still reported.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import type { InspectReport, LinuxOs } from '../src/inspect/report.js';
import { buildDebianGuest, buildLegacyGuest, type LegacyGuest } from './support/fixtures.js';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { makeSmallDisk } from './support/small-disk.js';
import { startNbdkit, stopAllServers } from './support/servers.js';

guardMachine();
const dir = await tempDir();

async function inspectJson(source: string): Promise<InspectReport> {
  const r = await ferry(['inspect', source, '--json']);
  assert.equal(r.exitCode, 0, `inspect failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as InspectReport;
}
const linuxOf = (r: InspectReport) => {
  const os = r.operatingSystems.find(o => o.type === 'linux');
  assert.ok(os, `no Linux found: ${JSON.stringify(r.operatingSystems).slice(0, 500)}`);
  return os as LinuxOs;
};
const dashless = (names: string[]) => names.map(n => n.replace(/-/g, '_')).sort();

describe('inspect the Debian guest bound to old hardware', () => {
  let g: LegacyGuest;
  let sum: string;
  let report: InspectReport;
  let os: LinuxOs;
  before(async () => {
    g = await buildLegacyGuest();
    sum = await sha256(g.disk);
    report = await inspectJson(g.disk);
    os = linuxOf(report);
  });
  after(async () => assert.equal(await sha256(g.disk), sum, 'source unchanged'));

  it('reports the file systems with type, UUID, label, size and used bytes', () => {
    const root = report.fileSystems.find(f => f.partition === 1)!;
    assert.equal(root.type, 'ext4');
    assert.equal(root.uuid, g.manifest.rootUuid);
    assert.equal(root.label, g.manifest.rootLabel);
    assert.ok(root.usedBytes! > 300e6 && root.usedBytes! < root.size, `used ${root.usedBytes} of ${root.size}`);
    assert.equal(report.fileSystems.find(f => f.partition === 5)?.type, 'swap');
    assert.equal(report.operatingSystems.length, 1);
  });

  it('names the distribution, release, point release, host and machine', () => {
    const m = g.manifest;
    assert.deepEqual([os.distro, os.version, os.codename, os.patchLevel, os.hostname, os.machineId, os.arch],
      [m.distro, m.version, m.codename, m.patchLevel, m.hostname, m.machineId, 'x86_64']);
    assert.deepEqual(os.mounts, { '/': 1 });
  });

  it('finds the kernel, the default boot entry and its initramfs without virtio', () => {
    assert.equal(os.kernels.length, 1);
    const k = os.kernels[0];
    assert.equal(k.version, g.manifest.kernel);
    assert.equal(k.flavour, g.manifest.flavour);
    assert.equal(k.default, true);
    assert.match(k.cmdline!, new RegExp(g.manifest.cmdlineHas));
    assert.equal(k.initramfs?.compression, g.manifest.initramfs.compression);
    assert.deepEqual(k.initramfs?.modules, dashless(g.manifest.initramfs.modules));
    assert.ok(!k.initramfs!.modules.some(m => m.startsWith('virtio')), 'no virtio in the initramfs');
    for (const m of ['virtio_blk', 'virtio_scsi', 'ahci', 'ata_piix', 'nvme']) assert.ok(k.modules.storage.includes(m), `kernel has ${m}`);
    for (const m of ['virtio_net', 'e1000', 'vmxnet3']) assert.ok(k.modules.network.includes(m), `kernel has ${m}`);
    assert.ok(k.missingFromInitramfs.storage.includes('virtio_blk'), 'virtio_blk missing from the initramfs');
    assert.ok(!k.missingFromInitramfs.storage.includes('ata_piix'), 'ata_piix is in the initramfs');
    assert.deepEqual([os.bootloader.kind, os.firmware], [g.manifest.bootloader, g.manifest.firmware]);
  });

  it('reads fstab by device path, the static address and the MAC binding', () => {
    assert.deepEqual(os.fstab.map(e => ({ spec: e.spec, by: e.by, mountpoint: e.mountpoint })), g.manifest.fstab);
    const i = os.network.interfaces.find(x => x.name === g.manifest.interface.name)!;
    assert.deepEqual({ name: i.name, source: i.source, method: i.method, addresses: i.addresses, gateway: i.gateway }, g.manifest.interface);
    assert.deepEqual(os.network.macBindings.map(b => ({ name: b.name, mac: b.mac, source: b.source })), [g.manifest.macBinding]);
  });

  it('lists the installed packages and the old platform\'s guest tools', () => {
    assert.equal(os.packages.manager, 'dpkg');
    assert.equal(os.packages.list.length, g.manifest.packageCount);
    assert.equal(os.packages.list.find(p => p.name === g.manifest.package.name)?.version, g.manifest.package.version);
    assert.deepEqual(os.guestTools, g.manifest.guestTools);
    assert.deepEqual(os.errors, []);
  });

  it('reads the same over NBD as from the file', async () => {
    const server = await startNbdkit({ file: g.disk });
    try {
      const net = linuxOf(await inspectJson(server.url));
      const { packages: _a, ...local } = os;
      const { packages: _b, ...remote } = net;
      assert.deepEqual(remote, local);
      assert.equal(net.packages.list.length, os.packages.list.length);
    } finally { await stopAllServers(); }
  });

  it('prints a readable summary without --json', async () => {
    const r = await ferry(['inspect', g.disk]);
    assert.equal(r.exitCode, 0, r.stderr);
    for (const s of [g.manifest.hostname, g.manifest.kernel, '(default)', '/dev/sda1 (by path)', g.manifest.macBinding.mac, 'open-vm-tools', 'grub-bios']) {
      assert.ok(r.stdout.includes(s), `summary mentions ${s}:\n${r.stdout}`);
    }
  });
});

describe('inspect the Debian guest as built', () => {
  it('sees fstab by UUID and virtio in the initramfs, and no guest tools', async () => {
    const disk = await buildDebianGuest();
    const os = linuxOf(await inspectJson(disk));
    assert.ok(os.fstab.length >= 2 && os.fstab.every(e => e.by === 'uuid'), JSON.stringify(os.fstab));
    const k = os.kernels[0];
    assert.ok(k.initramfs!.modules.includes('virtio_blk'));
    assert.ok(!k.missingFromInitramfs.storage.includes('virtio_blk'));
    assert.deepEqual(os.guestTools, []);
    assert.deepEqual(os.network.macBindings, []);
    assert.equal(os.network.interfaces.find(i => i.name === 'ens3')?.method, 'static');
  });
});

/** a disk that is one ext4 file system made from a directory (mkfs.ext4 -d: no mount needed) */
async function fsImageFrom(tree: Record<string, string | Buffer>, name: string): Promise<string> {
  const root = join(dir, `${name}.tree`);
  for (const [path, content] of Object.entries(tree)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), content);
  }
  const img = join(dir, `${name}.raw`);
  await execa('truncate', ['-s', '64M', img]);
  await execa('mkfs.ext4', ['-q', '-d', root, img]);
  return img;
}

describe('inspect bad input', () => {
  it('a disk of zeros and a file of garbage: no file systems, no operating system, not an error', async () => {
    const zeros = join(dir, 'zeros.raw');
    await execa('truncate', ['-s', '32M', zeros]);
    const garbage = join(dir, 'garbage.raw');
    await writeFile(garbage, randomBytes(4 << 20));
    for (const disk of [zeros, garbage]) {
      const sum = await sha256(disk);
      const r = await inspectJson(disk);
      assert.deepEqual(r.operatingSystems, []);
      assert.ok(r.fileSystems.every(f => !f.type), JSON.stringify(r.fileSystems));
      assert.match(r.note!, /no operating system/);
      assert.equal(await sha256(disk), sum);
    }
  });

  it('a BitLocker volume is reported as encrypted', async () => {
    const disk = join(dir, 'bitlocker.raw');
    await execa('truncate', ['-s', '16M', disk]);
    await execa('sfdisk', ['-q', disk], { input: 'label: dos\nstart=2048, type=7\n' });
    // a BitLocker (Windows 7+) volume header: "-FVE-FS-" OEM id and three FVE metadata blocks it points to
    const part = 2048 * 512;
    const header = Buffer.alloc(512);
    header.set([0xeb, 0x58, 0x90]); header.write('-FVE-FS-', 3, 'latin1');
    header.writeUInt16LE(512, 11); header[13] = 8; header.writeUInt16LE(0xaa55, 510);
    const fve = Buffer.concat([Buffer.from('-FVE-FS-', 'latin1'), Buffer.from([2, 0])]);
    const fd = await open(disk, 'r+');
    try {
      for (const [i, off] of [1, 2, 3].map(n => [n, n << 20])) { header.writeBigUInt64LE(BigInt(off), 0xb0 + (i - 1) * 8); await fd.write(fve, 0, fve.length, part + off); }
      await fd.write(header, 0, 512, part);
    } finally { await fd.close(); }
    const r = await inspectJson(disk);
    assert.deepEqual(r.fileSystems.map(f => [f.partition, f.type, f.encrypted]), [[1, 'BitLocker', 'bitlocker']]);
    assert.deepEqual(r.operatingSystems, []);
    assert.match((await ferry(['inspect', disk])).stdout, /p1 encrypted \(bitlocker\)/);
  });

  it('a truncated qcow2: typed error, nothing left behind', async () => {
    const raw = join(dir, 'small.raw');
    await makeSmallDisk(raw, { sizeMiB: 64 });
    const q = join(dir, 'cut.qcow2');
    await execa('qemu-img', ['convert', '-O', 'qcow2', raw, q]);
    await execa('truncate', ['-s', '200K', q]);
    const r = await ferry(['inspect', q, '--json']);
    assert.equal(r.exitCode, 3, r.stderr);
    assert.match(r.stderr, /CORRUPT_IMAGE|NOT_A_DISK_IMAGE/);
    assert.match(r.stderr, /cut\.qcow2/);
  });

  it('a garbage file system is an error entry; the other partition and the report still come out', async () => {
    const disk = join(dir, 'badfs.raw');
    await makeSmallDisk(disk, { sizeMiB: 64 });
    // keep ext4's superblock (so blkid still says ext4) and smash the group descriptors and inode tables after it
    await execa('dd', ['if=/dev/urandom', `of=${disk}`, 'bs=4096', `seek=${(2048 * 512) / 4096 + 1}`, 'count=512', 'conv=notrunc', 'status=none']);
    const r = await inspectJson(disk);
    const p1 = r.fileSystems.find(f => f.partition === 1)!;
    assert.equal(p1.type, 'ext4');
    assert.equal(p1.error?.code, 'FS_UNREADABLE', JSON.stringify(p1));
    assert.equal(r.fileSystems.find(f => f.partition === 2)?.type, 'swap');
    assert.deepEqual(r.operatingSystems, []);
  });

  it('an unreadable rpm database and a garbage initramfs are error entries; the rest of the OS is reported', async () => {
    const img = await fsImageFrom({
      'etc/os-release': 'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n',
      'etc/hostname': 'broken-rpm\n',
      'etc/fstab': 'LABEL=x / ext4 defaults 0 1\n',
      'var/lib/rpm/rpmdb.sqlite': randomBytes(64 << 10),
      'boot/vmlinuz-6.8.5-301.fc40.x86_64': randomBytes(1024),
      'boot/initramfs-6.8.5-301.fc40.x86_64.img': randomBytes(8192),
    }, 'badrpm');
    const sum = await sha256(img);
    const r = await inspectJson(img);
    const os = linuxOf(r);
    assert.deepEqual([os.distro, os.version, os.hostname], ['fedora', '40', 'broken-rpm']);
    assert.equal(os.packages.error?.code, 'RPMDB_UNREADABLE', JSON.stringify(os.packages));
    assert.equal(os.kernels[0].flavour, 'x86_64');
    assert.equal(os.kernels[0].initramfs?.error?.code, 'INITRAMFS_UNREADABLE');
    assert.deepEqual(os.errors.map(e => e.code).sort(), ['INITRAMFS_UNREADABLE', 'RPMDB_UNREADABLE']);
    assert.equal(await sha256(img), sum);
  });
});
