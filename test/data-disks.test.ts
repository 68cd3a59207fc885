// Data disks with every awkward thing a file system can hold (GPT: BIOS boot,
// ESP, xfs, btrfs with subvolumes, ext4, unknown; MBR: ext2/3, logical ext4
// and swap) converted across formats and sizes. Each result is checked by
// `ferry verify` and by an independent comparison written for the tests,
// and the source's sha256 is the same before and after.
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import { join } from 'node:path';
import { execa } from 'execa';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { buildDataDisks, type DataDisks } from './support/fixtures.js';
import { independentCompare } from './support/independent.js';

guardMachine();
const dir = await tempDir();

let disks: DataDisks;
const sums: Record<string, string> = {};

before(async () => {
  disks = await buildDataDisks();
  sums.gpt = await sha256(disks.gpt);
  sums.mbr = await sha256(disks.mbr);
});

after(async () => {
  assert.deepEqual({ gpt: await sha256(disks.gpt).catch(String), mbr: await sha256(disks.mbr).catch(String) }, sums, 'both sources are unchanged');
});

async function convertOk(args: string[]): Promise<Record<string, any>> {
  const r = await ferry(['convert', ...args, '--json']);
  assert.equal(r.exitCode, 0, `convert failed:\n${r.stderr}\n${r.stdout.slice(-2000)}`);
  const lines = r.stdout.trim().split('\n').map(l => JSON.parse(l));
  const result = lines.at(-1);
  assert.equal(result.event, 'result');
  assert.ok(lines.some(l => l.event === 'progress' || l.event === 'phase'), 'progress events were emitted');
  return result;
}

async function verifyOk(source: string, target: string): Promise<void> {
  const v = await ferry(['verify', source, target, '--json']);
  assert.equal(v.exitCode, 0, `verify found differences:\n${v.stdout.slice(0, 3000)}\n${v.stderr}`);
}

async function lsattrOf(image: string, fmt: string, partStartSectors: number, path: string): Promise<string> {
  const raw = join(dir, `lsattr-${Date.now()}.raw`);
  await execa('qemu-img', ['convert', '-f', fmt, '-O', 'raw', image, raw]);
  const dev = (await execa('losetup', ['-f', '--show', '-r', '-o', String(partStartSectors * 512), raw])).stdout.trim();
  const mnt = join(dir, `m-${Date.now()}`);
  await execa('mkdir', [mnt]);
  try {
    await execa('mount', ['-o', 'ro,noload', dev, mnt]);
    try { return (await execa('lsattr', ['-d', join(mnt, path)])).stdout.split(' ')[0]; } finally { await execa('umount', [mnt]); }
  } finally {
    await execa('losetup', ['-d', dev]);
    await execa('rm', ['-rf', raw, mnt]);
  }
}

describe('GPT data disk', () => {
  it('same size to qcow2: every file system rebuilt, unknown partitions copied as blocks, sparse output', async () => {
    const t = join(dir, 'gpt.qcow2');
    const r = await convertOk([disks.gpt, t]);
    const methods = Object.fromEntries(r.layout.partitions.map((p: any) => [p.number, `${p.fs ?? '-'}:${p.method}`]));
    assert.deepEqual(methods, { 1: '-:blocks', 2: 'vfat:rebuild', 3: 'xfs:clone', 4: 'btrfs:rebuild', 5: 'ext4:clone', 6: '-:blocks' });
    assert.equal(r.verified, true);
    assert.ok(r.allocatedBytes < 200 * 2 ** 20, `target stays sparse (${r.allocatedBytes} bytes allocated)`);
    await verifyOk(disks.gpt, t);
    assert.deepEqual(await independentCompare(disks.gpt, 'raw', t, 'qcow2'), []);
    // identity the guest depends on
    const info = JSON.parse((await ferry(['info', t, '--json'])).stdout);
    const byNum = Object.fromEntries(info.partitions.map((p: any) => [p.number, p]));
    assert.equal(byNum[2].uuid, '1234-ABCD');
    assert.equal(byNum[2].label, 'FERRYESP');
    assert.equal(byNum[3].uuid, 'a1b2c3d4-0003-4000-8000-00000000f003');
    assert.equal(byNum[6].name, 'ferry-unknown-données');
    const src = JSON.parse((await ferry(['info', disks.gpt, '--json'])).stdout);
    assert.equal(info.partitionTable.id, src.partitionTable.id);
    // formatted with the source's features, not the host's defaults
    for (const p of src.partitions) assert.deepEqual(byNum[p.number].features, p.features, `partition ${p.number} features`);
    assert.ok(src.partitions.find((p: any) => p.fs === 'btrfs').features.includes('skinny-metadata'));
    // inode flags survive
    const p5 = disks.manifest.disks.gpt.partitions.find(p => p.number === 5)!;
    const immutable = String(p5.notable?.immutable);
    assert.match(await lsattrOf(t, 'qcow2', 1314816, immutable), /i/);
  });

  it('larger, to vmdk: the last data partition grows, the one after it moves', async () => {
    const t = join(dir, 'gpt-big.vmdk');
    const r = await convertOk([disks.gpt, t, '--size', '3G']);
    assert.equal(r.virtualSize, 3 * 2 ** 30);
    const p5 = r.layout.partitions.find((p: any) => p.number === 5);
    const p6 = r.layout.partitions.find((p: any) => p.number === 6);
    assert.ok(p5.targetSize > p5.sourceSize, 'ext4 grew');
    assert.equal(p6.targetSize, p6.sourceSize, 'the unknown partition kept its size');
    assert.ok(p6.targetStart > p6.sourceStart, 'and moved after the grown one');
    assert.deepEqual(await independentCompare(disks.gpt, 'raw', t, 'vmdk'), []);
  });

  it('smaller, to raw: data partitions shrink to what they need and everything still verifies', async () => {
    const t = join(dir, 'gpt-small.img');
    const r = await convertOk([disks.gpt, t, '--size', '800M']);
    assert.equal(r.virtualSize, 800 * 2 ** 20);
    const shrunk = r.layout.partitions.filter((p: any) => p.targetSize < p.sourceSize);
    assert.ok(shrunk.length >= 1, 'at least one partition shrank');
    const st = await execa('stat', ['-c', '%b %B %s', t]);
    const [blocks, bsize, size] = st.stdout.split(' ').map(Number);
    assert.ok(blocks * bsize < size / 4, 'raw target is a sparse file');
    await verifyOk(disks.gpt, t);
  });

  it('verify finds and lists differences (a changed time, xattr and block)', async () => {
    const t = join(dir, 'gpt-tampered.img');
    await convertOk([disks.gpt, t, '--no-verify']);
    const dev = (await execa('losetup', ['-f', '--show', '-o', String(1314816 * 512), '--sizelimit', String(524288 * 512), t])).stdout.trim();
    const mnt = join(dir, 'tamper');
    await execa('mkdir', [mnt]);
    try {
      await execa('mount', [dev, mnt]);
      await execa('touch', ['-m', '-d', '2001-01-01', join(mnt, 'random/random-3MiB')]);
      await execa('setfattr', ['-n', 'user.sneaky', '-v', '1', join(mnt, 'empty/empty-file')]);
      // same size and mtime, one byte changed: only a content comparison sees it
      const victim = join(mnt, 'random/random-5MiB-plus-123');
      const mtime = (await execa('stat', ['-c', '%.9Y', victim])).stdout.trim();
      await execa('dd', [`of=${victim}`, 'bs=1', 'seek=4000000', 'conv=notrunc', 'status=none'], { input: 'Z' });
      await execa('touch', ['-m', '-d', `@${mtime}`, victim]);
      // a byte written into a hole of a sparse file: verify reads only data extents, so it must take both sides' extents
      const sparse = join(mnt, 'sparse/big-sparse');
      const smtime = (await execa('stat', ['-c', '%.9Y', sparse])).stdout.trim();
      await execa('dd', [`of=${sparse}`, 'bs=1', `seek=${50 * 2 ** 20 + 7}`, 'conv=notrunc', 'status=none'], { input: 'H' });
      await execa('touch', ['-m', '-d', `@${smtime}`, sparse]);
      await execa('umount', [mnt]);
    } finally {
      await execa('losetup', ['-d', dev]);
    }
    const p6 = 1841152 * 512;
    await execa('dd', [`of=${t}`, 'bs=1', `seek=${p6 + 2 * 2 ** 20}`, 'conv=notrunc', 'status=none'], { input: 'X' });
    const v = await ferry(['verify', disks.gpt, t]);
    assert.equal(v.exitCode, 6);
    assert.match(v.stdout, /random\/random-3MiB: mtime/);
    assert.match(v.stdout, /empty\/empty-file: xattrs/);
    assert.match(v.stdout, /random\/random-5MiB-plus-123: content differs/);
    assert.match(v.stdout, /sparse\/big-sparse: content differs/);
    assert.match(v.stdout, /partition 6: block contents differ/);
  });
});

describe('MBR data disk and source formats', () => {
  // every source format Ferry reads, each to a different target format
  const cases: { name: string; make: (raw: string, out: string) => Promise<string>; srcFmt: string; target: string; size?: string }[] = [
    { name: 'qcow2 with a backing chain → vdi', srcFmt: 'qcow2', target: 'mbr.vdi',
      make: async (raw, out) => { await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', raw, '-F', 'raw', out]); return out; } },
    { name: 'streamOptimized vmdk → qcow2 (smaller)', srcFmt: 'vmdk', target: 'mbr.qcow2', size: '400M',
      make: async (raw, out) => { await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, out]); return out; } },
    { name: 'monolithic sparse vmdk → vhdx', srcFmt: 'vmdk', target: 'mbr.vhdx',
      make: async (raw, out) => { await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', raw, out]); return out; } },
    { name: 'vhd → raw (larger)', srcFmt: 'vpc', target: 'mbr.raw', size: '1G',
      make: async (raw, out) => { await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'force_size=on', raw, out]); return out; } },
    { name: 'vhdx → vmdk', srcFmt: 'vhdx', target: 'mbr.vmdk',
      make: async (raw, out) => { await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', raw, out]); return out; } },
    { name: 'vdi → qcow2', srcFmt: 'vdi', target: 'mbr2.qcow2',
      make: async (raw, out) => { await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vdi', raw, out]); return out; } },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const src = await c.make(disks.mbr, join(dir, `src-${c.target}.${c.srcFmt}`));
      const before = await sha256(src);
      const t = join(dir, c.target);
      const r = await convertOk([src, t, ...(c.size ? ['--size', c.size] : [])]);
      const methods = r.layout.partitions.map((p: any) => `${p.number}:${p.fs}:${p.method}`);
      // by default each ext file system is copied by its used blocks; the one shrunk below its own size (the last, smaller case) by its files
      const shrunk = c.name.includes('(smaller)');
      assert.deepEqual(methods, ['1:ext2:clone', '2:ext3:clone', `5:ext4:${shrunk ? 'rebuild' : 'clone'}`, '6:swap:signature']);
      assert.ok(r.layout.bootCode.mbr && r.layout.bootCode.gapBytes > 0, 'boot code and gap carried');
      // the old-style ext4 (no metadata_csum, no 64bit, 1 KiB blocks) stays old-style
      const ext4 = JSON.parse((await ferry(['info', t, '--json'])).stdout).partitions.find((p: any) => p.number === 5);
      assert.ok(!ext4.features.includes('metadata_csum') && !ext4.features.includes('64bit') && ext4.features.includes('block_size=1024'), ext4.features.join(' '));
      const tfmt = c.target.endsWith('.raw') ? 'raw' : c.target.split('.').pop()!;
      assert.deepEqual(await independentCompare(disks.mbr, 'raw', t, tfmt), []);
      assert.equal(await sha256(src), before, 'source file unchanged');
    });
  }

  it('--mode block copies blocks with zero skipping and verifies', async () => {
    const t = join(dir, 'mbr-block.qcow2');
    const r = await convertOk([disks.mbr, t, '--mode', 'block']);
    assert.equal(r.mode, 'block');
    assert.equal(r.verified, true);
    const cmp = await execa('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', disks.mbr, t], { reject: false });
    assert.equal(cmp.exitCode, 0);
  });
});
