// NTFS as a first-class file system: the NTFS data disk (ACLs, streams,
// compressed, sparse, hard-linked and deleted files) and the phony Windows
// disks converted grown and shrunk. Each result is judged by the test itself:
// both sides mounted with ntfs-3g, every file's type, size and sha256, every
// stream (user.*), system.ntfs_acl and system.ntfs_attrib read with getfattr,
// serial and label with blkid, sizes with sfdisk and ntfsinfo, allocation with
// du / qemu-img. Then bad input: a dirty volume, a hibernated one, a cut
// boot sector. No guest boots.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, before, after } from 'node:test';
import { execa } from 'execa';
import { ferry, guardMachine, sha256, sha256All, tempDir } from './support/harness.js';
import { validateSpec } from '../src/jobs/spec.js';
import { buildNtfsDisk, buildPhonyWindows, type NtfsDiskManifest, type PhonyWindows } from './support/fixtures.js';

guardMachine();
const dir = await tempDir('ferry-ntfs-');
const MiB = 2 ** 20;

let m: NtfsDiskManifest;
let w: PhonyWindows;
let data: string;
const sums = new Map<string, string>();

before(async () => {
  [m, w] = await Promise.all([buildNtfsDisk(), buildPhonyWindows()]);
  data = m.disks.ntfs.image;
  for (const f of [data, m.disks['ntfs-hiber'].image, w.win2003.image, w.win2019.image]) sums.set(f, await sha256(f));
});

after(async () => {
  assert.deepEqual(await sha256All([...sums.keys()]), Object.fromEntries(sums), 'every source is unchanged');
});

// ---- the test's own readers -------------------------------------------------

interface Part { start: number; size: number }
/** NTFS partitions of a raw image, in bytes, from sfdisk. */
async function ntfsParts(raw: string): Promise<Part[]> {
  const t = JSON.parse((await execa('sfdisk', ['--json', raw])).stdout).partitiontable;
  const ss = t.sectorsize ?? 512;
  return t.partitions.filter((p: { type: string }) => ['7', 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7'].includes(p.type.toUpperCase()))
    .map((p: { start: number; size: number }) => ({ start: p.start * ss, size: p.size * ss }));
}

async function asRaw(image: string): Promise<string> {
  if (image.endsWith('.raw')) return image;
  const raw = join(dir, `readback-${Date.now()}.raw`);
  await execa('qemu-img', ['convert', '-O', 'raw', image, raw]);
  return raw;
}

/** A loop over one partition (read-only unless rw) and, unless bare, an ntfs-3g mount of it with streams as user.* attributes. */
async function withNtfs<T>(raw: string, p: Part, fn: (dev: string, mnt: string) => Promise<T>, opts: { rw?: boolean; bare?: boolean } = {}): Promise<T> {
  const dev = (await execa('losetup', ['-f', '--show', ...(opts.rw ? [] : ['-r']), '-o', String(p.start), '--sizelimit', String(p.size), raw])).stdout.trim();
  const mnt = join(dir, `mnt-${dev.replace(/\W/g, '')}`);
  try {
    if (opts.bare) return await fn(dev, '');
    await execa('mkdir', ['-p', mnt]);
    await execa('mount', ['-t', 'ntfs-3g', '-o', `${opts.rw ? 'rw' : 'ro'},streams_interface=xattr`, dev, mnt]);
    try { return await fn(dev, mnt); } finally { await execa('umount', [mnt]); await execa('rmdir', [mnt]); }
  } finally {
    await execa('losetup', ['-d', dev]);
  }
}

const hashFile = (f: string) => new Promise<string>((res, rej) => {
  const h = createHash('sha256');
  createReadStream(f).on('data', c => h.update(c)).on('end', () => res(h.digest('hex'))).on('error', rej);
});

/** getfattr output as "name path" → value; names given, or all listed ones. */
async function xattrs(root: string, name?: string): Promise<Map<string, string>> {
  const r = await execa('getfattr', ['-R', '-P', '-h', ...(name ? ['-n', name] : ['-d', '-m', '-']), '-e', 'hex', '--absolute-names', root], { reject: false });
  assert.ok(r.exitCode === 0 || r.exitCode === 1, `getfattr failed: ${r.stderr}`);
  const out = new Map<string, string>();
  let file = '';
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) file = line.slice(8 + root.length) || '/';
    else if (line.includes('=')) { const i = line.indexOf('='); out.set(`${line.slice(0, i)} ${file}`, line.slice(i + 1)); }
  }
  return out;
}

interface Volume { files: Map<string, string>; attrs: Map<string, string>; inodes: Map<string, number> }
async function readVolume(mnt: string): Promise<Volume> {
  const files = new Map<string, string>(), inodes = new Map<string, number>();
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(mnt, rel))).sort()) {
      const p = rel ? `${rel}/${name}` : name, abs = join(mnt, p);
      const s = await lstat(abs);
      inodes.set(p, s.ino);
      if (s.isDirectory()) { files.set(p, 'dir'); await walk(p); }
      else if (s.isFile()) files.set(p, `file ${s.size} ${await hashFile(abs)}`);
      else files.set(p, `other ${s.mode.toString(8)}`);
    }
  };
  await walk('');
  assert.ok(files.size > 0, `nothing read from ${mnt}`);
  const attrs = new Map([...await xattrs(mnt), ...await xattrs(mnt, 'system.ntfs_acl'), ...await xattrs(mnt, 'system.ntfs_attrib')]);
  return { files, attrs, inodes };
}

interface VolumeFacts { uuid: string; label: string; flags: string; volumeBytes: number; clusterSize: number }
async function volumeFacts(dev: string): Promise<VolumeFacts> {
  // export form escapes like a shell (System\ Reserved)
  const kv = Object.fromEntries((await execa('blkid', ['-p', '-o', 'export', dev])).stdout.split('\n').map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/\\(.)/g, '$1')]));
  assert.equal(kv.TYPE, 'ntfs');
  const info = (await execa('ntfsinfo', ['-f', '-m', dev])).stdout;
  const num = (re: RegExp) => Number(re.exec(info)![1]);
  const clusterSize = num(/Cluster Size: (\d+)/);
  return { uuid: kv.UUID, label: kv.LABEL, flags: /Volume Flags: (.*)/.exec(info)![1].trim(), volumeBytes: num(/Volume Size in Clusters: (\d+)/) * clusterSize, clusterSize };
}

async function hiddenSectors(dev: string): Promise<number> {
  const fh = await open(dev, 'r');
  try { const b = Buffer.alloc(4); await fh.read(b, 0, 4, 0x1c); return b.readUInt32LE(); } finally { await fh.close(); }
}

async function allocated(image: string): Promise<number> {
  if (image.endsWith('.raw')) return (await stat(image)).blocks * 512;
  return JSON.parse((await execa('qemu-img', ['info', '--output=json', image])).stdout)['actual-size'];
}

interface Judged { source: VolumeFacts; target: VolumeFacts; targetPart: Part; sourcePart: Part; used: number; src: Volume; dst: Volume }
/** Every NTFS partition of target against the source's, file by file; returns what each side showed. */
async function judge(source: string, target: string): Promise<Judged[]> {
  const raw = await asRaw(target);
  const [sp, tp] = [await ntfsParts(source), await ntfsParts(raw)];
  assert.equal(tp.length, sp.length, 'same NTFS partitions');
  const out: Judged[] = [];
  for (const [i, p] of sp.entries()) {
    out.push(await withNtfs(source, p, async (sdev, smnt) => withNtfs(raw, tp[i], async (tdev, tmnt) => {
      const [src, dst] = await Promise.all([readVolume(smnt), readVolume(tmnt)]);
      assert.deepEqual([...dst.files], [...src.files], `p${i + 1}: names, types, sizes, sha256`);
      assert.deepEqual([...dst.attrs].sort(), [...src.attrs].sort(), `p${i + 1}: streams, system.ntfs_acl, system.ntfs_attrib`);
      const s = await execa('df', ['-B1', '--output=used', smnt]);
      // the boot sector's hidden sectors name the partition's start (Windows' boot code reads it)
      const [hs, ht] = [await hiddenSectors(sdev), await hiddenSectors(tdev)];
      if (hs === p.start / 512) assert.equal(ht, tp[i].start / 512, `p${i + 1}: hidden sectors follow the partition`);
      return { source: await volumeFacts(sdev), target: await volumeFacts(tdev), sourcePart: p, targetPart: tp[i], used: Number(s.stdout.split('\n')[1]), src, dst };
    })));
  }
  for (const j of out) {
    assert.equal(j.target.uuid, j.source.uuid, 'serial kept');
    assert.equal(j.target.label, j.source.label, 'label kept');
    assert.equal(j.target.flags, '0x0000', 'clean volume (no chkdsk at first boot)');
    assert.ok(j.target.volumeBytes <= j.targetPart.size, 'the volume lies within its partition');
    assert.ok(j.target.volumeBytes >= j.targetPart.size - j.target.clusterSize - 4096, `the volume fills its partition (${j.target.volumeBytes} of ${j.targetPart.size})`);
  }
  return out;
}

async function convertOk(args: string[]): Promise<Record<string, any>> {
  const r = await ferry(['convert', ...args, '--json']);
  assert.equal(r.exitCode, 0, `convert failed:\n${r.stderr}\n${r.stdout.slice(-2000)}`);
  const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(result.event, 'result');
  assert.equal(result.verified, true);
  for (const p of result.layout.partitions) assert.equal(p.method, 'rebuild', 'NTFS is rebuilt, not block-copied');
  return result;
}

async function convertFails(args: string[], exitCode: number, code: string): Promise<Record<string, any>> {
  const r = await ferry(['convert', ...args, '--json']);
  assert.equal(r.exitCode, exitCode, `${r.stderr}\n${r.stdout.slice(-1000)}`);
  const err = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(err.code, code, r.stdout.slice(-1000));
  const name = args[1].split('/').at(-1)!;
  assert.deepEqual((await readdir(dir)).filter(f => f.includes(name)), [], 'no target and no partial left');
  return err;
}

const allocationLine = (name: string, alloc: number, used: number) =>
  console.log(`# ${name}: allocated ${(alloc / MiB).toFixed(1)} MiB for ${(used / MiB).toFixed(1)} MiB used (ratio ${(alloc / used).toFixed(3)})`);

describe('NTFS data disk', () => {
  for (const [name, size, ext] of [['grown', '1G', 'qcow2'], ['shrunk', '120M', 'raw']] as const) {
    it(`${name} to ${size} (${ext}): every file, stream, ACL and attribute equal; serial and label kept; only used clusters written`, async () => {
      const target = join(dir, `data-${name}.${ext}`);
      const t0 = Date.now();
      const r = await convertOk([data, target, '--size', size]);
      console.log(`# convert ${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      const [j] = await judge(data, target);
      assert.equal(j.target.uuid, m.partition.serial);
      assert.equal(j.target.label, m.partition.label);
      if (name === 'grown') assert.ok(j.targetPart.size > j.sourcePart.size);
      else assert.ok(j.targetPart.size < j.sourcePart.size / 4);
      assert.equal(r.virtualSize, size === '1G' ? 2 ** 30 : 120 * MiB);

      // the traits the fixture put there, seen on the target
      const f = m.files;
      assert.equal(j.dst.attrs.get(`system.ntfs_acl /${f.acl}`), `0x${f.aclHex}`, 'the explicit security descriptor');
      for (const s of f.streamNames) assert.ok(j.dst.attrs.has(`${s} /${f.streams}`), `stream ${s}`);
      const attrib = (p: string) => Buffer.from(j.dst.attrs.get(`system.ntfs_attrib /${p}`)!.slice(2), 'hex').readUInt32LE();
      for (const p of f.compressed) assert.ok(attrib(p) & 0x800, `${p} compressed`);
      assert.ok(attrib(f.sparse) & 0x200, 'sparse.bin sparse');
      assert.equal(attrib(f.hidden) & 0x3, 0x3, 'hidden and read-only');
      assert.equal(j.dst.inodes.get(f.hardLinks[0]), j.dst.inodes.get(f.hardLinks[1]), 'hard link kept');

      // allocation against the source's used bytes: the 48 MiB of deleted data are not copied
      const alloc = await allocated(target);
      allocationLine(`data ${name}`, alloc, j.used);
      assert.ok(alloc <= j.used + 4 * MiB, `allocated ${alloc} ≤ used ${j.used} + 4 MiB`);
      assert.ok(alloc >= j.used * 0.9, 'and the data is really there');
    });
  }

  it('verify notices a changed security descriptor, a lost stream and a changed attribute', async () => {
    const target = join(dir, 'data-shrunk.raw');
    const copy = join(dir, 'data-tampered.raw');
    await execa('cp', ['--sparse=always', target, copy]);
    const [p] = await ntfsParts(copy);
    await withNtfs(copy, p, async (_dev, mnt) => {
      const other = (await execa('getfattr', ['-h', '-n', 'system.ntfs_acl', '-e', 'hex', '--only-values', join(mnt, m.files.hidden)], { encoding: 'buffer' })).stdout;
      await execa('setfattr', ['-n', 'system.ntfs_acl', '-v', `0x${Buffer.from(other).toString('hex')}`, join(mnt, m.files.acl)]);
      await execa('setfattr', ['-x', 'user.payload', join(mnt, m.files.streams)]);
      await execa('setfattr', ['-n', 'system.ntfs_attrib', '-v', '0x20000000', join(mnt, m.files.hidden)]);
    }, { rw: true });
    const v = await ferry(['verify', data, copy, '--json']);
    assert.equal(v.exitCode, 6, v.stdout.slice(-2000));
    const text = v.stdout;
    assert.match(text, new RegExp(`${m.files.acl}: system.ntfs_acl differs`));
    assert.match(text, new RegExp(`${m.files.hidden}: system.ntfs_attrib differs`));
    assert.match(text, /streams\.txt: xattrs/);
  });
});

describe('NTFS partition that moves', () => {
  it('two NTFS partitions, the disk shrunk: p1 shrinks, p2 moves down and its boot sector says where it is now', async () => {
    const src = join(dir, 'two.raw');
    const p1 = m.partition, p2Start = p1.start + p1.size, p2Size = 64 * 2048;
    await execa('truncate', ['-s', String((p2Start + p2Size + 2048) * 512), src]);
    await execa('sfdisk', ['--quiet', src], { input: `label: gpt\nstart=${p1.start}, size=${p1.size}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nstart=${p2Start}, size=${p2Size}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n` });
    await execa('dd', [`if=${data}`, `of=${src}`, 'bs=1M', `skip=${p1.start / 2048}`, `seek=${p1.start / 2048}`, `count=${p1.size / 2048}`, 'conv=notrunc,sparse', 'status=none']);
    const part2 = join(dir, 'two-p2.ntfs');
    await execa('truncate', ['-s', String(p2Size * 512), part2]);
    await execa('mkntfs', ['-F', '-Q', '-q', '-s', '512', '-L', 'SECOND', '-p', String(p2Start), '-H', '255', '-S', '63', part2]);
    const mnt2 = join(dir, 'two-p2');
    await execa('mkdir', [mnt2]);
    await execa('ntfs-3g', [part2, mnt2]);
    try { await execa('cp', ['-r', '/etc/os-release', '/etc/hostname', mnt2]); } finally { await execa('umount', [mnt2]); await execa('rmdir', [mnt2]); }
    await execa('dd', [`if=${part2}`, `of=${src}`, 'bs=1M', `seek=${p2Start / 2048}`, 'conv=notrunc,sparse', 'status=none']);
    await execa('rm', [part2]);
    const target = join(dir, 'two-shrunk.raw');
    const r = await convertOk([src, target, '--size', '200M']);
    const [a, b] = r.layout.partitions;
    assert.ok(a.targetSize < a.sourceSize && b.targetStart < b.sourceStart, `p1 shrank and p2 moved: ${JSON.stringify(r.layout.partitions)}`);
    const judged = await judge(src, target);
    assert.deepEqual(judged.map(j => j.target.label), ['FERRYDATA', 'SECOND']);
  });
});

describe('phony Windows disks', () => {
  for (const [disk, size, ext] of [['win2019', '200M', 'qcow2'], ['win2019', '40M', 'raw'], ['win2003', '128M', 'raw']] as const) {
    it(`${disk} to ${size} (${ext}): each NTFS partition file by file equal, serial and label kept`, async () => {
      const src = w[disk].image;
      const target = join(dir, `${disk}-${size}.${ext}`);
      await convertOk([src, target, '--size', size]);
      const judged = await judge(src, target);
      assert.deepEqual(judged.map(j => j.target.uuid), w[disk].fileSystems.map(f => f.uuid));
      assert.deepEqual(judged.map(j => j.target.label), w[disk].fileSystems.map(f => f.label));
      const last = judged.at(-1)!;
      if (size === '40M') assert.ok(last.targetPart.size < last.sourcePart.size, 'the Windows partition shrank');
      else assert.ok(last.targetPart.size > last.sourcePart.size, 'the last partition grew');
      const used = judged.reduce((n, j) => n + j.used, 0);
      const alloc = await allocated(target);
      allocationLine(`${disk} ${size}`, alloc, used);
      assert.ok(alloc <= used + 4 * MiB, `allocated ${alloc} ≤ used ${used} + 4 MiB`);
    });
  }
});

// ---- bad input ------------------------------------------------------------------

/** Patch the $Volume record's flags (in $MFT and $MFTMirr) to say dirty, as Windows leaves a volume it did not close. */
async function markDirty(raw: string, p: Part): Promise<void> {
  const fh = await open(raw, 'r+');
  try {
    const boot = Buffer.alloc(512);
    await fh.read(boot, 0, 512, p.start);
    const cluster = boot.readUInt16LE(0x0b) * boot[0x0d];
    const rec = boot.readInt8(0x40) > 0 ? boot.readInt8(0x40) * cluster : 2 ** -boot.readInt8(0x40);
    for (const lcn of [boot.readBigUInt64LE(0x30), boot.readBigUInt64LE(0x38)]) {
      const at = p.start + Number(lcn) * cluster + 3 * rec;
      const r = Buffer.alloc(rec);
      await fh.read(r, 0, rec, at);
      assert.equal(r.toString('latin1', 0, 4), 'FILE');
      let a = r.readUInt16LE(0x14);
      while (r.readUInt32LE(a) !== 0x70) { assert.notEqual(r.readUInt32LE(a), 0xffffffff, 'no $VOLUME_INFORMATION'); a += r.readUInt32LE(a + 4); }
      const flags = a + r.readUInt16LE(a + 0x14) + 0x0a;
      assert.ok(flags % 512 < 510, 'flags not under an update-sequence slot');
      r.writeUInt16LE(r.readUInt16LE(flags) | 1, flags);
      await fh.write(r, flags, 2, at + flags);
    }
  } finally { await fh.close(); }
}

describe('NTFS bad input', () => {
  it('a dirty volume: NTFS_NOT_CLEAN (exit 3) before anything is written; --force-ntfs-dirty copies it as it is', async () => {
    const src = join(dir, 'dirty.raw');
    await execa('cp', ['--sparse=always', data, src]);
    const [p] = await ntfsParts(src);
    await markDirty(src, p);
    assert.match((await withNtfs(src, p, dev => volumeFacts(dev), { bare: true })).flags, /DIRTY/, 'ntfsinfo sees the patch');
    const sum = await sha256(src);
    const err = await convertFails([src, join(dir, 'dirty-out.qcow2')], 3, 'NTFS_NOT_CLEAN');
    assert.match(err.message, /partition 1.*dirty.*--force-ntfs-dirty/);
    const target = join(dir, 'dirty-forced.qcow2');
    const r = await ferry(['convert', src, target, '--size', '800M', '--force-ntfs-dirty', '--json']);
    assert.equal(r.exitCode, 0, r.stdout.slice(-2000) + r.stderr);
    const raw = await asRaw(target);
    const [tp] = await ntfsParts(raw);
    assert.match((await withNtfs(raw, tp, dev => volumeFacts(dev), { bare: true })).flags, /DIRTY/, 'still dirty: Windows checks it at boot');
    assert.equal(await sha256(src), sum, 'source unchanged');
  });

  it('the job spec takes options.forceNtfsDirty (a boolean)', () => {
    const spec = (v: unknown) => ({ source: '/a.raw', target: '/b.qcow2', options: { forceNtfsDirty: v } });
    assert.deepEqual(validateSpec(spec(true)), []);
    assert.deepEqual(validateSpec(spec('yes')).map(e => e.field), ['options.forceNtfsDirty']);
  });

  it('a hibernated volume (hiberfil.sys says HIBR): NTFS_NOT_CLEAN, nothing written', async () => {
    const err = await convertFails([m.disks['ntfs-hiber'].image, join(dir, 'hiber-out.qcow2')], 3, 'NTFS_NOT_CLEAN');
    assert.match(err.message, /hibernated/);
  });

  // cut: the sector's second part lost (blkid no longer calls it NTFS); oversized: it claims more sectors than its partition holds
  for (const [name, why] of [['cut', /no 55AA end marker/], ['oversized', /larger than its \d+-byte partition/]] as const) {
    it(`a boot sector ${name === 'cut' ? 'cut short' : 'claiming a volume larger than its partition'}: NTFS_DAMAGED (exit 3), no target, source unchanged`, async () => {
      const src = join(dir, `${name}.raw`);
      await execa('cp', ['--sparse=always', data, src]);
      const [p] = await ntfsParts(src);
      const fh = await open(src, 'r+');
      const patch = name === 'cut' ? Buffer.alloc(512 - 0x40) : Buffer.alloc(8);
      if (name === 'oversized') patch.writeBigUInt64LE(BigInt(p.size / 512 * 2));
      await fh.write(patch, 0, patch.length, p.start + (name === 'cut' ? 0x40 : 0x28)).finally(() => fh.close());
      const sum = await sha256(src);
      const err = await convertFails([src, join(dir, `${name}-out.qcow2`)], 3, 'NTFS_DAMAGED');
      assert.match(err.message, new RegExp(`partition at byte ${p.start}.*boot sector: .*${why.source}`));
      assert.equal(await sha256(src), sum, 'source unchanged');
    });
  }
});
