// Static inspection of a second Linux family: the rpm-based (Rocky 9.4-like)
// UEFI guest that test/fixtures/build-rpm-guest.sh builds from real packages —
// GPT with an ESP (shim + GRUB EFI), ext4 /boot with BLS entries and a
// grubenv that picks the default, an xfs root with an sqlite rpm database
// written by rpm, real kernel module files, network configuration in five
// forms (NetworkManager, ifcfg, netplan, systemd-networkd/.link, udev) and a
// LUKS2 volume. `ferry inspect --json` is compared with the script's manifest
// field by field, and the disk is byte-for-byte unchanged afterwards.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ferry, guardMachine, sha256 } from './support/harness.js';
import { buildRpmGuest, type RpmGuest, type RpmGuestManifest } from './support/fixtures.js';
import type { InspectReport, LinuxKernel, LinuxOs } from '../src/inspect/report.js';

guardMachine();

let guest: RpmGuest;
let m: RpmGuestManifest['os'];
let sumBefore: string;
let report: InspectReport;
let os: LinuxOs;

before(async () => {
  guest = await buildRpmGuest();
  m = guest.manifest.os;
  sumBefore = await sha256(guest.disk);
  assert.equal(sumBefore, guest.manifest.disk.sha256, 'the cached fixture is the one its manifest describes');
  const r = await ferry(['inspect', guest.disk, '--json']);
  assert.equal(r.exitCode, 0, `inspect failed:\n${r.stderr}\n${r.stdout.slice(-2000)}`);
  report = JSON.parse(r.stdout) as InspectReport;
  const linux = report.operatingSystems.filter((o): o is LinuxOs => o.type === 'linux');
  assert.equal(linux.length, 1, `one Linux found (got ${report.operatingSystems.map(o => o.type).join(', ') || 'none'})`);
  os = linux[0];
});

after(async () => {
  if (guest) assert.equal(await sha256(guest.disk), sumBefore, 'the source disk is unchanged');
});

const sorted = <T>(a: T[], key: (x: T) => string = String) => [...a].sort((x, y) => key(x).localeCompare(key(y)));
const byName = <T extends { name: string }>(a: T[]) => new Map(a.map(x => [x.name, x]));
const mac = (s: string) => s.toLowerCase();

describe('rpm guest: disk and file systems', () => {
  it('GPT with its disk GUID and the full size', () => {
    assert.equal(report.virtualSize, guest.manifest.disk.virtualSize);
    assert.equal(report.partitionTable?.label, 'gpt');
    assert.equal(report.partitionTable?.id.toLowerCase(), guest.manifest.disk.partitionTable.id);
  });

  for (const n of [1, 2, 3, 4]) {
    it(`partition ${n}: type, UUID, label, place (and LUKS reported as encrypted)`, () => {
      const want = guest.manifest.fileSystems.find(f => f.partition === n)!;
      const got = report.fileSystems.find(f => f.partition === n);
      assert.ok(got, `partition ${n} is in the report`);
      assert.equal(got.type, want.type, 'type');
      assert.equal(got.uuid, want.uuid, 'uuid');
      assert.equal(got.label, want.label, 'label');
      assert.equal(got.start, want.start, 'start');
      assert.equal(got.size, want.size, 'size');
      assert.equal(got.encrypted, want.encrypted, 'encrypted');
      if (want.encrypted) assert.ok(!got.usedBytes, 'no usage read from a volume without its key');
      else assert.equal(got.error, undefined, `no error: ${JSON.stringify(got.error)}`);
    });
  }
});

describe('rpm guest: operating system', () => {
  it('distribution, release and patch level from os-release (a symlink) and redhat-release', () => {
    assert.equal(os.distro, m.distro);
    assert.ok([m.name, m.osReleaseName].includes(os.name), `name ${os.name}`);
    assert.equal(os.version, m.version);
    assert.equal(os.patchLevel, m.patchLevel);
    assert.equal(os.arch, m.arch);
  });

  it('hostname and machine-id', () => {
    assert.equal(os.hostname, m.hostname);
    assert.equal(os.machineId, m.machineId);
  });

  it('mount layout from fstab: /, /boot by LABEL and /boot/efi by PARTUUID', () => {
    for (const [mp, part] of Object.entries(m.mounts)) assert.equal(os.mounts[mp], part, `mount ${mp}`);
  });

  it('UEFI with GRUB (ESP with shim and grubx64.efi)', () => {
    assert.equal(os.firmware, m.firmware);
    assert.equal(os.bootloader.kind, m.bootloader.kind);
    if (os.bootloader.config !== undefined) {
      assert.ok([m.bootloader.config, m.bootloader.espConfig].includes(os.bootloader.config), `config ${os.bootloader.config}`);
    }
  });

  it('fstab entries, each with how it names its device', () => {
    assert.deepEqual(
      sorted(os.fstab.map(e => ({ spec: e.spec, by: e.by, mountpoint: e.mountpoint, type: e.type, options: e.options })), e => e.mountpoint),
      sorted(m.fstab, e => e.mountpoint));
  });
});

describe('rpm guest: kernels and initramfs', () => {
  const kernel = (v: string): LinuxKernel => {
    const k = os.kernels.find(x => x.version === v);
    assert.ok(k, `kernel ${v} found (got ${os.kernels.map(x => x.version).join(', ')})`);
    return k;
  };

  it('both kernels, no others', () => {
    assert.deepEqual(sorted(os.kernels.map(k => k.version)), sorted(m.kernels.map(k => k.version)));
  });

  it('the default is the one grubenv\'s saved_entry names, not a guess', () => {
    assert.deepEqual(os.kernels.filter(k => k.default).map(k => k.version), [m.defaultKernel]);
  });

  for (const i of [0, 1]) {
    it(`kernel ${i === 0 ? 'new (zstd initramfs, virtio_blk)' : 'old (xz initramfs, no virtio)'}: path, flavour, command line`, () => {
      const want = m.kernels[i];
      const k = kernel(want.version);
      assert.equal(k.path, want.path);
      assert.equal(k.flavour, want.flavour);
      assert.equal(k.default, want.default);
      // GRUB expands $tuned_params (set to "" in grub.cfg): compare with whitespace collapsed
      assert.equal(k.cmdline?.replace(/\s+/g, ' ').trim(), want.cmdline);
    });

    it(`kernel ${i}: initramfs compression, early cpio and every module in it`, () => {
      const want = m.kernels[i];
      const k = kernel(want.version);
      assert.ok(k.initramfs, 'initramfs found');
      assert.equal(k.initramfs.error, undefined, `no error: ${JSON.stringify(k.initramfs.error)}`);
      assert.equal(k.initramfs.path, want.initramfs.path);
      assert.equal(k.initramfs.compression, want.initramfs.compression);
      assert.equal(k.initramfs.earlyCpio, want.initramfs.earlyCpio);
      assert.deepEqual(k.initramfs.modules, want.initramfs.modules);
      assert.equal(k.initramfs.modules.some(x => x.startsWith('virtio')), want.hasVirtioInInitramfs);
    });

    it(`kernel ${i}: storage and network drivers from /usr/lib/modules (usr-merged, .ko.xz), and what the initramfs lacks`, () => {
      const want = m.kernels[i];
      const k = kernel(want.version);
      for (const d of want.modules.storage) assert.ok(k.modules.storage.includes(d), `storage driver ${d} (got ${k.modules.storage.join(' ')})`);
      for (const d of want.modules.network) assert.ok(k.modules.network.includes(d), `network driver ${d} (got ${k.modules.network.join(' ')})`);
      assert.deepEqual(k.modules.storage.filter(d => k.modules.network.includes(d)), [], 'no driver is both storage and network');
      for (const d of [...k.modules.storage, ...k.modules.network]) assert.ok(want.allModules.includes(d), `${d} is a module this kernel has`);
      for (const d of want.missingFromInitramfs.storage) assert.ok(k.missingFromInitramfs.storage.includes(d), `${d} missing from the initramfs`);
      for (const d of want.missingFromInitramfs.network) assert.ok(k.missingFromInitramfs.network.includes(d), `${d} missing from the initramfs`);
      for (const d of want.initramfs.modules) {
        assert.ok(!k.missingFromInitramfs.storage.includes(d) && !k.missingFromInitramfs.network.includes(d), `${d} is in the initramfs, not missing`);
      }
    });
  }
});

describe('rpm guest: network', () => {
  it('one interface per configuration system: NetworkManager, ifcfg, netplan (2), networkd', () => {
    const got = byName(os.network.interfaces);
    assert.deepEqual(sorted([...got.keys()]), sorted(m.network.interfaces.map(x => x.name)), 'interface names');
    for (const want of m.network.interfaces) {
      const g = got.get(want.name)!;
      assert.equal(g.source, want.source, `${want.name} source`);
      assert.equal(g.file, want.file, `${want.name} file`);
      assert.equal(g.method, want.method, `${want.name} method`);
      assert.deepEqual(g.addresses, want.addresses, `${want.name} addresses`);
      assert.equal(g.gateway, want.gateway, `${want.name} gateway`);
      if (want.dns) assert.deepEqual(g.dns, want.dns, `${want.name} dns`);
    }
  });

  it('MAC bindings from every source: networkmanager, ifcfg, netplan, systemd-link, udev-rules', () => {
    const got = sorted(os.network.macBindings.map(b => ({ name: b.name, mac: mac(b.mac), source: b.source, file: b.file })), b => b.source + b.name);
    assert.deepEqual(got, sorted(m.network.macBindings, b => b.source + b.name));
  });
});

describe('rpm guest: packages and guest tools', () => {
  it('the rpm database (sqlite) lists every package with epoch:version-release and arch', () => {
    assert.equal(os.packages.manager, 'rpm');
    assert.equal(os.packages.error, undefined, `no error: ${JSON.stringify(os.packages.error)}`);
    const key = (p: { name: string; version: string; arch?: string }) => `${p.name} ${p.version} ${p.arch}`;
    assert.deepEqual(sorted(os.packages.list.map(key)), sorted(m.packages.list.map(key)));
  });

  it('guest tools: open-vm-tools, qemu-guest-agent, hyperv-daemons', () => {
    assert.deepEqual(sorted(os.guestTools), m.guestTools);
  });

  it('no errors on the OS', () => {
    assert.deepEqual(os.errors, []);
  });
});
