// Re-fit a Linux guest to new hardware (issue "Re-fit the guest"): the Debian
// guest bound to old hardware (IDE/SATA-only initramfs, /dev/sda names, eth0
// bound to an old MAC) does not boot on virtio until Ferry re-fits it; after
// `convert --profile kvm-virtio --mac …` it boots on virtio-blk and virtio-net
// with its root, hostname and eth0's static address; with kvm-legacy it still
// boots on IDE. Templates re-fitted through overlays stay byte for byte the
// same. Missing drivers and unknown profiles fail before anything is written.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import type { InspectReport, LinuxOs } from '../src/inspect/report.js';
import { bootImage } from '../src/verify/boot.js';
import { buildLegacyGuest, type LegacyGuest } from './support/fixtures.js';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { readMarker } from './support/marker.js';

guardMachine();
const dir = await tempDir();
const NEW_MAC = '52:54:00:12:34:56';
const ROOT_FAILS = /Dropping to a shell|Kernel panic/;

let g: LegacyGuest;
let sum: string;
before(async () => { g = await buildLegacyGuest(); sum = await sha256(g.disk); });
after(async () => assert.equal(await sha256(g.disk), sum, 'the source is unchanged'));

async function convertJson(args: string[], env?: Record<string, string>): Promise<Record<string, any>> {
  const r = await ferry(['convert', ...args, '--json'], { env });
  assert.equal(r.exitCode, 0, `convert failed:\n${r.stderr}\n${r.stdout.slice(-1500)}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
}
const linuxOf = async (image: string) => {
  const r = await ferry(['inspect', image, '--json']);
  assert.equal(r.exitCode, 0, r.stderr);
  return (JSON.parse(r.stdout) as InspectReport).operatingSystems[0] as LinuxOs;
};

describe('Linux re-fit: old hardware to kvm-virtio and kvm-legacy', () => {
  let virtio: string;
  let legacy: string;
  let virtioResult: Record<string, any>;

  before(async () => {
    virtio = join(dir, 'virtio.qcow2');
    legacy = join(dir, 'legacy.qcow2');
    virtioResult = await convertJson([g.disk, virtio, '--profile', 'kvm-virtio', '--mac', NEW_MAC]);
    await convertJson([g.disk, legacy, '--profile', 'kvm-legacy']);
  });

  it('reports every change with file, before, after and reason', () => {
    const changes = virtioResult.refit.changes as { file: string; before: string; after: string; reason: string }[];
    const files = changes.map(c => c.file);
    for (const f of [`/boot/initrd.img-${g.manifest.kernel}`, '/etc/fstab', '/boot/grub/grub.cfg', '/etc/udev/rules.d/70-persistent-net.rules', '/etc/systemd/system/open-vm-tools.service']) {
      assert.ok(files.includes(f), `a change of ${f} is reported: ${files.join(' ')}`);
    }
    assert.ok(changes.every(c => c.before !== c.after && c.reason.length > 10));
    assert.equal(virtioResult.verified, true);
  });

  it('the re-fitted target names disks by UUID, binds eth0 to the new MAC and has virtio in its initramfs', async () => {
    const os = await linuxOf(virtio);
    assert.ok(os.fstab.every(e => e.by === 'uuid'), JSON.stringify(os.fstab));
    assert.match(os.kernels[0].cmdline!, new RegExp(`root=UUID=${g.manifest.rootUuid}`));
    for (const m of ['virtio_blk', 'virtio_pci', 'virtio_net', 'ata_piix']) assert.ok(os.kernels[0].initramfs!.modules.includes(m), `initramfs has ${m}`);
    assert.deepEqual(os.network.macBindings.map(b => [b.name, b.mac]), [['eth0', NEW_MAC]]);
    assert.deepEqual(os.network.interfaces.find(i => i.name === 'eth0')?.addresses, g.manifest.interface.addresses);
  });

  it('boots: unconverted not on virtio (negative control); kvm-virtio on virtio-blk + virtio-net; kvm-legacy on IDE', async () => {
    const [unconverted, onVirtio, onIde] = await Promise.all([
      bootImage({ image: g.disk, format: 'raw', diskBus: 'virtio', machine: 'q35', nic: { model: 'virtio-net-pci', mac: NEW_MAC }, timeoutMs: 300_000, failOn: ROOT_FAILS }),
      bootImage({ image: virtio, format: 'qcow2', diskBus: 'virtio', machine: 'q35', nic: { model: 'virtio-net-pci', mac: NEW_MAC }, timeoutMs: 300_000, failOn: ROOT_FAILS }),
      bootImage({ image: legacy, format: 'qcow2', diskBus: 'ide', machine: 'pc', nic: { model: 'e1000', mac: g.manifest.macBinding.mac }, timeoutMs: 300_000, failOn: ROOT_FAILS }),
    ]);
    assert.doesNotMatch(unconverted.serialLog, /FERRY-BOOT-OK/, 'the unconverted guest must not boot on virtio-blk');
    assert.match(unconverted.serialLog, /does not exist|Gave up waiting for root/);
    for (const [name, b] of [['kvm-virtio', onVirtio], ['kvm-legacy', onIde]] as const) {
      const m = readMarker(b.serialLog, `${name} boots`);
      assert.equal(m.root, g.manifest.rootUuid);
      assert.equal(m.host, g.manifest.hostname);
      assert.equal(m.fields.net, `eth0:${g.manifest.interface.addresses[0]}`, `${name}: eth0 comes up with its static address`);
    }
  });
});

describe('Linux re-fit through overlays on a template', () => {
  it('two re-fits of one template run at once; the template stays byte for byte the same', async () => {
    const template = join(dir, 'template.raw');
    await execa('cp', ['--sparse=always', g.disk, template]);
    const before = await sha256(template);
    const [a, b] = await Promise.all(['kvm-virtio', 'vmware'].map(p =>
      ferry(['reconfigure', template, '--profile', p, '--overlay', join(dir, `${p}.qcow2`), '--json'])));
    assert.equal(a.exitCode, 0, a.stderr);
    assert.equal(b.exitCode, 0, b.stderr);
    assert.equal(await sha256(template), before, 'template unchanged');
    for (const p of ['kvm-virtio', 'vmware']) {
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', join(dir, `${p}.qcow2`)])).stdout);
      assert.equal(info['backing-filename'], template);
    }
    const vm = await linuxOf(join(dir, 'vmware.qcow2'));
    assert.ok(vm.kernels[0].initramfs!.modules.includes('vmw_pvscsi') && vm.kernels[0].initramfs!.modules.includes('vmxnet3'));
    assert.ok(!vm.kernels[0].initramfs!.modules.includes('virtio_blk'), 'each overlay has its own re-fit');
    assert.equal(JSON.parse(a.stdout).changes.some((c: { file: string }) => c.file === '/etc/systemd/system/open-vm-tools.service'), true);
    assert.equal(JSON.parse(b.stdout).changes.some((c: { file: string }) => c.file === '/etc/systemd/system/open-vm-tools.service'), false, 'vmware keeps open-vm-tools');
  });
});

describe('Linux re-fit: profiles', () => {
  it('profiles list and show name every shipped profile and what it needs', async () => {
    const list = await ferry(['profiles', 'list', '--json']);
    assert.equal(list.exitCode, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout).map((p: { name: string }) => p.name), ['hyperv', 'kvm-legacy', 'kvm-virtio', 'physical', 'vmware']);
    const show = await ferry(['profiles', 'show', 'kvm-virtio']);
    assert.match(show.stdout, /virtio-blk/);
    assert.match(show.stdout, /virtio_blk/);
    const bad = await ferry(['profiles', 'show', 'nope']);
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /UNKNOWN_PROFILE/);
  });

  it('physical: the drivers of the inventory\'s controllers and NICs, looked up by PCI id in modules.alias', async () => {
    const inventory = join(dir, 'inventory.json');
    await writeFile(inventory, JSON.stringify({
      ferryInventory: 1,
      // an NVMe controller and an Intel 82574L NIC (e1000e), as the P2V agent writes them
      storageControllers: [{ address: '0000:01:00.0', id: '144d:a808', class: '0x010802', modalias: 'pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02' }],
      nics: [{ name: 'eno1', mac: '00:1b:21:aa:bb:cc', pci: { id: '8086:10d3', modalias: 'pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00' } }],
    }));
    const overlay = join(dir, 'physical.qcow2');
    const r = await ferry(['reconfigure', g.disk, '--profile', 'physical', '--inventory', inventory, '--overlay', overlay, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const initrd = (await linuxOf(overlay)).kernels[0].initramfs!.modules;
    for (const m of ['nvme', 'nvme_core', 'e1000e']) assert.ok(initrd.includes(m), `initramfs has ${m}: ${initrd.join(' ')}`);
    assert.ok(!initrd.includes('virtio_blk'));
  });
});

describe('Linux re-fit: bad input', () => {
  it('an unknown profile: typed error listing the known ones, no target', async () => {
    const target = join(dir, 'unknown.qcow2');
    const r = await ferry(['convert', g.disk, target, '--profile', 'kvm-virtoi']);
    assert.equal(r.exitCode, 2, r.stderr);
    assert.match(r.stderr, /UNKNOWN_PROFILE.*kvm-virtoi.*kvm-virtio/);
    assert.equal(await stat(target).catch(() => undefined), undefined);
  });

  it('a bad --mac and --profile physical without an inventory: usage errors', async () => {
    const r1 = await ferry(['convert', g.disk, join(dir, 'm.qcow2'), '--profile', 'kvm-virtio', '--mac', '52:54:00:zz:00:01']);
    assert.equal(r1.exitCode, 2); assert.match(r1.stderr, /not a MAC address/);
    const r2 = await ferry(['reconfigure', g.disk, '--profile', 'physical']);
    assert.equal(r2.exitCode, 2); assert.match(r2.stderr, /--inventory/);
  });

  it('a kernel without the driver: DRIVER_MISSING names the package before anything is written; imported into drivers-db, it is used', async () => {
    // the guest with virtio_blk taken out of its kernel's module tree
    const crippled = join(dir, 'no-virtio-blk.raw');
    await execa('cp', ['--sparse=always', g.disk, crippled]);
    const rel = await withRootMounted(crippled, async mnt => {
      const base = join(mnt, 'lib/modules', g.manifest.kernel);
      const dep = await readFile(join(base, 'modules.dep'), 'utf8');
      const line = dep.split('\n').find(l => /\/virtio_blk\.ko[^:]*:/.test(l))!;
      const relPath = line.slice(0, line.indexOf(':'));
      await writeFile(join(base, 'modules.dep'), dep.split('\n').filter(l => l !== line).join('\n'));
      await execa('rm', [join(base, relPath)]);
      return relPath;
    });
    const crippledSum = await sha256(crippled);
    const home = join(dir, 'ferry-home');
    const env = { FERRY_HOME: home, FERRY_DRIVERS_DB: join(home, 'drivers-db') };
    const target = join(dir, 'refit-missing.qcow2');
    const r = await ferry(['convert', crippled, target, '--profile', 'kvm-virtio'], { env });
    assert.equal(r.exitCode, 5, r.stderr);
    assert.match(r.stderr, /DRIVER_MISSING/);
    assert.match(r.stderr, new RegExp(`virtio_blk.*${g.manifest.kernel}`));
    assert.match(r.stderr, new RegExp(`linux-image-${g.manifest.kernel}`));
    assert.equal(await stat(target).catch(() => undefined), undefined, 'no target');
    assert.equal(await sha256(crippled), crippledSum, 'source unchanged');

    // the module, as a kernel package ships it, imported from a directory container
    const container = join(dir, 'virtio-blk-module');
    await mkdir(join(container, 'lib/modules', g.manifest.kernel, rel, '..'), { recursive: true });
    await withRootMounted(g.disk, mnt => copyFile(join(mnt, 'lib/modules', g.manifest.kernel, rel), join(container, 'lib/modules', g.manifest.kernel, rel)), true);
    const imp = await ferry(['drivers', 'import', container], { env });
    assert.equal(imp.exitCode, 0, imp.stderr);
    const done = await convertJson([crippled, target, '--profile', 'kvm-virtio'], env);
    assert.ok(done.refit.changes.some((c: { after: string }) => /from drivers-db/.test(c.after)), JSON.stringify(done.refit.changes));
    const os = await linuxOf(target);
    assert.ok(os.kernels[0].initramfs!.modules.includes('virtio_blk'));
    assert.equal(await sha256(crippled), crippledSum, 'source unchanged');
  });
});

/** mount partition 1 of a raw disk (read-write unless readOnly) for the test's own preparation */
async function withRootMounted<T>(disk: string, fn: (mnt: string) => Promise<T>, readOnly = false): Promise<T> {
  const loop = (await execa('losetup', ['-f', '--show', ...(readOnly ? ['-r'] : []), '-o', String(2048 * 512), disk])).stdout.trim();
  const mnt = join(dir, `mnt-${Date.now()}`);
  await mkdir(mnt);
  try {
    await execa('mount', [...(readOnly ? ['-o', 'ro,noload'] : []), loop, mnt]);
    try { return await fn(mnt); } finally { await execa('umount', [mnt]); }
  } finally {
    await execa('losetup', ['-d', loop]);
    await execa('rmdir', [mnt]);
  }
}
