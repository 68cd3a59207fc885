// LVM as a source and a target (issue 14): the Debian guest whose root is an
// ext4 logical volume and /srv an xfs one is converted larger (qcow2, re-fitted
// to kvm-virtio, booted once) and smaller (raw). Each target is judged with
// LVM's own tools (same VG name and UUIDs, tags, every LV one segment, the
// data LV grown or shrunk), blkid at the LVs' offsets and an independent tree
// comparison; converted to UEFI (--firmware uefi, checked without a boot: GPT,
// an ESP with its loaders, fstab, the LVs intact); then bad LVM input: typed
// errors, source unchanged.
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import type { DiskInfo } from '../src/info.js';
import type { InspectReport, LinuxOs } from '../src/inspect/report.js';
import { bootImage } from '../src/verify/boot.js';
import { buildLvmGuest } from './support/fixtures.js';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { bootBudget } from './support/boot-budget.js';
import { independentCompareRanges } from './support/independent.js';
import { blkidAt, EXTENT, lvmView, lvText, PE_START, sha256Ranges, withLvm, writeSmallVg, type LvmView } from './support/lvm.js';

guardMachine();
const dir = await tempDir();
const MiB = 2 ** 20;
// what test/fixtures/build-lvm-guest.sh wrote
const VG = { name: 'ferryvg', uuid: 'FerryV-G000-0000-0000-0000-0000-vg0001', pv: 'FerryP-V000-0000-0000-0000-0000-pv0001' };
const LVS = {
  root: { uuid: 'FerryL-V000-0000-0000-0000-0000-root01', tags: '', fs: 'ext4', fsUuid: '7d2e3f40-5b6c-4d7e-9f80-a1b2c3d4e5f6', label: 'ferry-root', size: 1200 * MiB },
  srv: { uuid: 'FerryL-V000-0000-0000-0000-0000-srv001', tags: 'ferry-data', fs: 'xfs', fsUuid: '8e3f4051-6c7d-4e8f-a091-b2c3d4e5f607', label: 'ferry-srv', size: 320 * MiB },
} as const;
const MARKER = /FERRY-BOOT-OK root=(\S+) host=(\S+) net=\S+ uuid=(\S+) srv=(\S+)/;

let source: string;
let sum: string;
let src: LvmView;
before(async () => {
  source = await buildLvmGuest();
  sum = await sha256(source);
  src = await lvmView(source, 2);
});
after(async () => assert.equal(await sha256(source), sum, 'the source is unchanged'));

async function convertJson(args: string[]): Promise<Record<string, any>> {
  const r = await ferry(['convert', ...args, '--json', '--no-progress']);
  assert.equal(r.exitCode, 0, `convert failed:\n${r.stderr}\n${r.stdout.slice(-1500)}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
}

/** The target's VG seen by LVM's tools: same identity; every LV one segment; sizes as expected; file systems as blkid sees them. */
async function checkTarget(raw: string, sizes: Record<keyof typeof LVS, (bytes: number) => boolean>): Promise<LvmView> {
  const t = await lvmView(raw, 2);
  assert.equal(t.vg.vg_name, VG.name);
  assert.equal(t.vg.vg_uuid, VG.uuid);
  assert.equal(t.pv.pv_uuid, VG.pv);
  assert.deepEqual(t.lvs.map(l => l.lv_name).sort(), ['root', 'srv']);
  for (const l of t.lvs) {
    const want = LVS[l.lv_name as keyof typeof LVS];
    assert.equal(l.lv_uuid, want.uuid, `${l.lv_name} keeps its UUID`);
    assert.equal(l.lv_tags, want.tags, `${l.lv_name} keeps its tags`);
    assert.equal(l.seg_count, '1', `${l.lv_name} is one segment`);
    assert.ok(sizes[l.lv_name as keyof typeof LVS](Number(l.lv_size)), `${l.lv_name}: size ${Number(l.lv_size) / MiB} MiB`);
    const id = await blkidAt(raw, t.offsets[l.lv_name]);
    assert.deepEqual([id.TYPE, id.UUID, id.LABEL], [want.fs, want.fsUuid, want.label], `blkid at ${l.lv_name}'s offset`);
  }
  return t;
}

async function compareLvs(raw: string, t: LvmView, names = Object.keys(LVS)): Promise<void> {
  for (const name of names) {
    const [a, b] = [src.offsets[name], t.offsets[name]];
    const diffs = await independentCompareRanges({ raw: source, offset: a[0], size: a[1] }, { raw, offset: b[0], size: b[1] });
    assert.deepEqual(diffs, [], `LV ${name}: independent comparison`);
  }
}

describe('LVM guest converted larger, re-fitted to kvm-virtio, booted', () => {
  let target: string;
  let raw: string;
  let result: Record<string, any>;
  let view: LvmView;
  before(async () => {
    target = join(dir, 'grown.qcow2');
    result = await convertJson([source, target, '--size', '3G', '--profile', 'kvm-virtio']);
    raw = join(dir, 'grown.raw');
    await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', target, raw]);
  });

  it('the source fixture is what LVM says it is', () => {
    assert.equal(src.vg.vg_uuid, VG.uuid);
    assert.deepEqual(src.lvs.map(l => [l.lv_name, Number(l.lv_size)]).sort(), [['root', LVS.root.size], ['srv', LVS.srv.size]]);
  });

  it('reports the volume group and each LV; verified', () => {
    const pv = (result.layout.partitions as any[]).find(p => p.number === 2);
    assert.equal(pv.method, 'lvm');
    assert.equal(pv.lvm.vg, VG.name);
    assert.deepEqual(pv.lvm.lvs.map((l: any) => [l.name, l.method, l.fs]), [['root', 'clone', 'ext4'], ['srv', 'clone', 'xfs']]);
    assert.equal(result.verified, true);
  });

  it('LVM tools: same VG/PV/LV UUIDs and tags, one segment each, the data LV (srv, the last) took the extra GiB; blkid at the offsets', async () => {
    view = await checkTarget(raw, { root: n => n === LVS.root.size, srv: n => n >= LVS.srv.size + 1000 * MiB });
  });

  it('each LV holds the same tree as the source (independent comparison)', async () => {
    await compareLvs(raw, view ?? await lvmView(raw, 2));
  });

  it('info and inspect show the LVs and find Debian on the root LV', async () => {
    const i = await ferry(['info', target, '--json']);
    assert.equal(i.exitCode, 0, i.stderr);
    const p2 = (JSON.parse(i.stdout) as DiskInfo).partitions.find(p => p.number === 2)!;
    assert.equal(p2.lvm?.uuid, VG.uuid);
    assert.deepEqual(p2.lvm?.lvs.map(l => [l.name, l.uuid, l.fsUuid, l.tags.join(',')]), Object.entries(LVS).map(([n, l]) => [n, l.uuid, l.fsUuid, l.tags]));
    const r = await ferry(['inspect', target, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const rep = JSON.parse(r.stdout) as InspectReport;
    assert.deepEqual(rep.fileSystems.filter(f => f.lv).map(f => [f.lv, f.type, f.uuid]), [['ferryvg/root', 'ext4', LVS.root.fsUuid], ['ferryvg/srv', 'xfs', LVS.srv.fsUuid]]);
    const os = rep.operatingSystems[0] as LinuxOs;
    assert.equal(os?.distro, 'debian');
    assert.ok(os.fstab.some(e => e.spec === '/dev/mapper/ferryvg-root' && e.mountpoint === '/'));
    assert.deepEqual(Object.keys(os.mounts).sort(), ['/', '/boot', '/srv'], 'fstab resolved: /dev/mapper/… and /dev/VG/LV found');
    assert.ok(os.kernels[0].initramfs?.modules.includes('virtio_blk'), 're-fitted: virtio_blk in the initramfs');
    assert.ok(os.kernels[0].initramfs?.modules.includes('dm_mod'), 'the initramfs can still activate LVM');
  });

  it('boots on virtio with its root on the logical volume', async () => {
    void uefiConversion(); // beside the boot: TCG takes one core
    const b = await bootImage({ image: target, format: 'qcow2', diskBus: 'virtio', machine: 'q35', nic: { model: 'virtio-net-pci' }, ...bootBudget(420_000), failOn: /Dropping to a shell|Kernel panic|Gave up waiting/ });
    const m = MARKER.exec(b.serialLog);
    assert.ok(m, `boots:\n${b.serialLog.slice(-2500)}`);
    assert.equal(m[1], '/dev/mapper/ferryvg-root');
    assert.equal(m[3], LVS.root.fsUuid);
    assert.equal(m[4], '/dev/mapper/ferryvg-srv', '/srv is mounted from its LV');
  });
});

/** --firmware uefi of the LVM guest (same size), started once, beside the boot when there is one */
let uefi: Promise<{ target: string; result: Record<string, any> }> | undefined;
function uefiConversion() {
  uefi ??= (async () => {
    const target = join(dir, 'uefi.raw');
    return { target, result: await convertJson([source, target, '--firmware', 'uefi']) };
  })();
  uefi.catch(() => undefined); // awaited (and reported) by its describe
  return uefi;
}

describe('LVM guest → UEFI (convert --firmware uefi), checked without a boot', () => {
  const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
  const LVM_TYPE = 'E6D6D379-F507-44C2-A23C-238F2A3DF928';
  const MT = { env: { MTOOLS_SKIP_CHECK: '1' } };
  let target: string;
  let result: Record<string, any>;
  let parts: { node: string; start: number; size: number; type: string }[];
  /** a read-only loop over [offset, size] of the target, detached after fn */
  const at = async <T>([offset, size]: [number, number], fn: (dev: string) => Promise<T>): Promise<T> => {
    const dev = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(offset), '--sizelimit', String(size), target])).stdout).trim();
    try { return await fn(dev); } finally { await execa('losetup', ['-d', dev], { reject: false }); }
  };
  const partition = (p: { start: number; size: number }): [number, number] => [p.start * 512, p.size * 512];
  before(async () => {
    ({ target, result } = await uefiConversion());
    const table = JSON.parse((await execa('sfdisk', ['--json', target])).stdout).partitiontable;
    assert.equal(table.label, 'gpt');
    parts = table.partitions;
  });

  it('GPT: the PV partition typed LVM, an ESP (vfat) holding \\EFI\\BOOT\\BOOTX64.EFI and \\EFI\\debian\\grubx64.efi; verified', async () => {
    assert.equal(result.verified, true);
    assert.equal(parts.find(p => p.node.endsWith('2'))!.type, LVM_TYPE);
    const esp = parts.find(p => p.type === ESP_TYPE)!;
    assert.ok(esp, JSON.stringify(parts));
    await at(partition(esp), async dev => {
      assert.equal(String((await execa('blkid', ['-p', '-s', 'TYPE', '-o', 'value', dev])).stdout).trim(), 'vfat');
      assert.match(String((await execa('mdir', ['-i', dev, '-b', '::/EFI/BOOT'], MT)).stdout), /BOOTX64\.EFI/i);
      assert.match(String((await execa('mdir', ['-i', dev, '-b', '::/EFI/debian'], MT)).stdout), /grubx64\.efi/i);
    });
  });

  it('the VG and its LVs keep their identity and sizes (LVM tools, blkid); srv holds the source\'s tree (independent comparison)', async () => {
    const t = await checkTarget(target, { root: n => n === LVS.root.size, srv: n => n === LVS.srv.size });
    await compareLvs(target, t, ['srv']);
  });

  it('fstab on the root LV mounts the ESP at /boot/efi by UUID and keeps the LV lines; /boot holds grub/x86_64-efi', async () => {
    const espUuid = await at(partition(parts.find(p => p.type === ESP_TYPE)!), async dev => String((await execa('blkid', ['-p', '-s', 'UUID', '-o', 'value', dev])).stdout).trim());
    const view = await lvmView(target, 2);
    const fstab = await at(view.offsets.root, async dev => String((await execa('debugfs', ['-R', 'cat /etc/fstab', dev])).stdout));
    assert.match(fstab, new RegExp(`^UUID=${espUuid}\\s+/boot/efi\\s+vfat\\s`, 'm'));
    assert.match(fstab, /^\/dev\/mapper\/ferryvg-root\s+\/\s/m);
    const mods = await at(partition(parts.find(p => p.node.endsWith('1'))!), async dev => String((await execa('debugfs', ['-R', 'ls -l /grub/x86_64-efi', dev])).stdout));
    assert.match(mods, /normal\.mod/);
  });
});

describe('LVM guest converted smaller', () => {
  it('gives back the VG\'s free extents and what root does not need; LVM tools, blkid and the trees agree', async () => {
    const target = join(dir, 'small.img');
    const result = await convertJson([source, target, '--size', '1536M']);
    assert.equal((await stat(target)).size, 1536 * MiB);
    assert.equal(result.verified, true);
    const t = await checkTarget(target, { root: n => n < LVS.root.size, srv: n => n <= LVS.srv.size });
    await compareLvs(target, t);

    // reconfigure reaches the root LV too (into an overlay: the image stays as it is)
    const imgSum = await sha256(target);
    const overlay = join(dir, 'small-refit.qcow2');
    const r = await ferry(['reconfigure', target, '--profile', 'kvm-virtio', '--overlay', overlay, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const i = await ferry(['inspect', overlay, '--json']);
    const os = (JSON.parse(i.stdout) as InspectReport).operatingSystems[0] as LinuxOs;
    assert.ok(os.kernels[0].initramfs?.modules.includes('virtio_net'), 're-fitted through the overlay');
    assert.equal(await sha256(target), imgSum, 'reconfigure --overlay leaves the image as it was');
  });
});

describe('small LVM disks: a whole-disk PV, a multi-range LV, a segment type Ferry does not rebuild', () => {
  const PV = 'Pvpvpv-0000-0000-0000-0000-0000-000001';
  const attachAt = async (disk: string, [offset, size]: [number, number]) =>
    String((await execa('losetup', ['-f', '--show', '-o', String(offset), '--sizelimit', String(size), disk])).stdout).trim();
  const lvStart = (pe: number) => PE_START * 512 + pe * EXTENT;

  it('whole-disk PV grown: the ext4 LV takes the space, the two-range LV becomes one range with the same bytes', async () => {
    const disk = join(dir, 'wholepv.raw');
    await execa('truncate', ['-s', '64M', disk]);
    // data: extents 0..5 (ext4); pieces: extents 8..9 then 12..13 (random bytes, copied as blocks)
    await writeSmallVg(disk, 0, 64 * MiB, 'smallvg', PV,
      lvText('data', 'Lvdata-0000-0000-0000-0000-0000-000001', [[0, 6]]) + '\n' + lvText('pieces', 'Lvpiec-0000-0000-0000-0000-0000-000001', [[8, 2], [12, 2]]));
    const data = await attachAt(disk, [lvStart(0), 6 * EXTENT]);
    try {
      await execa('mkfs.ext4', ['-q', '-F', '-U', '0d1e2f30-4152-4637-8899-aabbccddeeff', '-L', 'smalldata', data]);
      await execa('debugfs', ['-w', '-R', 'mkdir hello', data]);
    } finally { await execa('losetup', ['-d', data]); }
    for (const pe of [8, 12]) await execa('dd', ['if=/dev/urandom', `of=${disk}`, 'bs=1M', 'count=8', `seek=${lvStart(pe) / MiB}`, 'conv=notrunc', 'status=none']);
    const before = await sha256(disk);
    const target = join(dir, 'wholepv-big.img');
    const result = await convertJson([disk, target, '--size', '96M']);
    assert.equal(result.verified, true);
    assert.equal(await sha256(disk), before);
    const [s, t] = [await lvmView(disk, 0), await lvmView(target, 0)];
    assert.equal(t.pv.pv_uuid, PV);
    const size = (v: LvmView, n: string) => Number(v.lvs.find(l => l.lv_name === n)!.lv_size);
    assert.equal(size(t, 'data'), size(s, 'data') + 32 * MiB, 'the data LV took the 32 MiB');
    assert.deepEqual(t.lvs.map(l => [l.lv_name, l.seg_count]), [['data', '1'], ['pieces', '1']]);
    assert.equal(s.ranges.pieces.length, 2);
    assert.equal(await sha256Ranges(target, t.ranges.pieces), await sha256Ranges(disk, s.ranges.pieces), 'the two-range LV holds the same bytes in one range');
    assert.equal((await blkidAt(target, t.offsets.data)).UUID, '0d1e2f30-4152-4637-8899-aabbccddeeff');
    assert.deepEqual(await independentCompareRanges({ raw: disk, offset: s.offsets.data[0], size: s.offsets.data[1] }, { raw: target, offset: t.offsets.data[0], size: t.offsets.data[1] }), []);

    // verify looks into the LVs: a directory added to the target's data LV is a difference
    const dev = await attachAt(target, t.offsets.data);
    try { await execa('debugfs', ['-w', '-R', 'mkdir extra', dev]); } finally { await execa('losetup', ['-d', dev]); }
    const v = await ferry(['verify', disk, target]);
    assert.equal(v.exitCode, 6, v.stderr + v.stdout);
    assert.match(v.stderr + v.stdout, /p0-data:.*extra/);
  });

  it('a VG with a "zero" segment LV: its PV is copied as blocks, byte for byte, and the command says why', async () => {
    const disk = join(dir, 'zero.raw');
    await execa('truncate', ['-s', '48M', disk]);
    await execa('sfdisk', ['-q', disk], { input: 'label: dos\nstart=2048, type=8e\n' });
    await writeSmallVg(disk, MiB, 47 * MiB, 'zerovg', PV, lvText('nothing', 'Lvzero-0000-0000-0000-0000-0000-000001', { type: 'zero', extents: 4 }));
    const r = await ferry(['convert', disk, join(dir, 'zero.img'), '--size', '64M']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stderr + r.stdout, /zerovg\/nothing has zero segments.*copying its used blocks/);
    assert.equal(await sha256Ranges(join(dir, 'zero.img'), [[MiB, 47 * MiB]]), await sha256Ranges(disk, [[MiB, 47 * MiB]]));
  });
});

describe('bad LVM input', () => {
  /** A 64 MiB disk: two 30 MiB partitions, each a PV of VG badvg */
  async function twoPvDisk(name: string): Promise<string> {
    const disk = join(dir, name);
    await execa('truncate', ['-s', '64M', disk]);
    await execa('sfdisk', ['-q', disk], { input: 'label: dos\nstart=2048, size=61440, type=8e\nstart=63488, size=61440, type=8e\n' });
    const loops: string[] = [];
    try {
      for (const start of [2048, 63488]) loops.push(String((await execa('losetup', ['-f', '--show', '-o', String(start * 512), '--sizelimit', String(61440 * 512), disk])).stdout).trim());
      const devs = loops.flatMap(l => ['--devices', l]);
      await withLvm(async env => {
        for (const l of loops) await execa('pvcreate', ['-q', ...devs, l], { env });
        await execa('vgcreate', ['-q', ...devs, '-s', '4M', 'badvg', ...loops], { env });
      });
    } finally { for (const l of loops) await execa('losetup', ['-d', l], { reject: false }); }
    return disk;
  }
  async function refused(disk: string, code: RegExp): Promise<void> {
    const before = await sha256(disk);
    const out = join(dir, 'bad.qcow2');
    const r = await ferry(['convert', disk, out]);
    assert.equal(r.exitCode, 3, r.stderr);
    assert.match(r.stderr, code);
    await assert.rejects(stat(out), 'no target is left');
    const i = await ferry(['info', disk]);
    assert.match(i.stderr, code, 'info says the same');
    assert.equal(await sha256(disk), before, 'the bad source is unchanged');
  }

  it('a volume group with a PV that is not on the disk: LVM_PV_MISSING', async () => {
    const disk = await twoPvDisk('missing-pv.raw');
    await execa('sfdisk', ['-q', '--delete', disk, '2']);
    await refused(disk, /LVM_PV_MISSING.*badvg/);
  });

  it('a PV that claims more than its partition: LVM_INVALID', async () => {
    const disk = await twoPvDisk('past-end.raw');
    // the PV of p1 now reaches past the end of its (shrunk) partition; p2 is gone
    await execa('sfdisk', ['-q', '--delete', disk, '2']);
    await execa('sfdisk', ['-q', '-N', '1', disk], { input: 'start=2048, size=20480, type=8e\n' });
    await refused(disk, /LVM_INVALID/);
  });
});
