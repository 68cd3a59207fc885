// --mode clone: ext4 and xfs copied by their used blocks. The source is a
// small GPT disk made here, with a deleted file on each file system whose
// blocks still hold a known pattern. Judged by the independent comparison
// (every file, mode, owner, xattr, blkid identity), dumpe2fs / xfs_db for the
// file systems' own identity and features, and a byte search of the target
// for the deleted pattern (present in the source, absent from every target).
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { independentCompare } from './support/independent.js';
import { checkCopyProof, copyUsedRanges } from '../src/fs/used-copy.js';
import { silentProgress } from '../src/util/progress.js';

// registered before the guard, which removes the temp dirs the source lives in
after(async () => { if (sum) assert.equal(await sha256(src), sum, 'source unchanged'); });
guardMachine();
const dir = await tempDir();
const MiB = 2 ** 20;
const src = join(dir, 'src.raw');
// partition starts and sizes in MiB
const P1 = { start: 1, size: 100 }, P2 = { start: 101, size: 310 };
const SIZE = 412;
const STALE = { ext4: 'FERRY-STALE-EXT4-c1a9e7', xfs: 'FERRY-STALE-XFS-5b02d4' };
const EXT_UUID = '7c1e0a55-1111-4c0e-9e11-00000000c10e', XFS_UUID = '7c1e0a55-2222-4c0e-9e11-00000000c10e';
let sum = '';

async function onLoop<T>(file: string, p: { start: number; size: number }, fn: (dev: string) => Promise<T>): Promise<T> {
  const dev = (await execa('losetup', ['-f', '--show', '-o', String(p.start * MiB), '--sizelimit', String(p.size * MiB), file])).stdout.trim();
  try { return await fn(dev); } finally { await execa('losetup', ['-d', dev]); }
}

async function mounted(dev: string, type: string, fn: (mnt: string) => Promise<void>): Promise<void> {
  const mnt = join(dir, `mnt-${type}`);
  await mkdir(mnt, { recursive: true });
  await execa('mount', ['-t', type, dev, mnt]);
  try { await fn(mnt); } finally { await execa('umount', [mnt]); }
}

/** Files worth comparing, and a deleted 8 MiB file of a known pattern whose blocks stay behind. */
async function fill(mnt: string, stale: string): Promise<void> {
  await mkdir(join(mnt, 'etc/deep'), { recursive: true });
  await writeFile(join(mnt, 'etc/hostname'), 'clone\n');
  for (let i = 0; i < 200; i++) await writeFile(join(mnt, 'etc/deep', `f${i}`), randomBytes(1 + (i * 997) % 20000));
  await writeFile(join(mnt, 'random'), randomBytes(12 * MiB));
  await execa('ln', [join(mnt, 'etc/hostname'), join(mnt, 'hostname.link')]);
  await execa('ln', ['-s', 'etc/hostname', join(mnt, 'hostname.sym')]);
  await execa('setfattr', ['-n', 'user.note', '-v', 'kept', join(mnt, 'etc/hostname')]);
  await execa('chown', ['1234:4321', join(mnt, 'random')]);
  await execa('chmod', ['4750', join(mnt, 'random')]);
  await execa('truncate', ['-s', '30M', join(mnt, 'sparse')]);
  await writeFile(join(mnt, 'stale'), Buffer.from(stale.repeat(Math.ceil(8 * MiB / stale.length))));
  await execa('sync');
  await rm(join(mnt, 'stale'));
  await execa('sync');
}

async function makeSource(): Promise<void> {
  await execa('truncate', ['-s', `${SIZE}M`, src]);
  await execa('sfdisk', ['-q', src], {
    input: `label: gpt\nlabel-id: 5E1F0C1A-0000-4000-8000-0000000C10E0\nstart=${P1.start * 2048}, size=${P1.size * 2048}, type=linux\nstart=${P2.start * 2048}, size=${P2.size * 2048}, type=linux\n`,
  });
  await onLoop(src, P1, async dev => {
    await execa('mkfs.ext4', ['-q', '-L', 'clone-ext4', '-U', EXT_UUID, dev]);
    await mounted(dev, 'ext4', m => fill(m, STALE.ext4));
  });
  await onLoop(src, P2, async dev => {
    await execa('mkfs.xfs', ['-q', '-L', 'clone-xfs', '-m', `uuid=${XFS_UUID}`, dev]);
    await mounted(dev, 'xfs', m => fill(m, STALE.xfs));
  });
}

/** Does the (raw) image hold this byte pattern anywhere? grep -a reads every byte. */
async function holds(raw: string, pattern: string): Promise<boolean> {
  const r = await execa('grep', ['-q', '-a', '-F', pattern, raw], { reject: false });
  if (r.exitCode === 2) throw new Error(`grep ${raw}: ${r.stderr}`);
  return r.exitCode === 0;
}

async function asRaw(image: string, format: string): Promise<string> {
  if (format === 'raw') return image;
  const raw = `${image}.raw`;
  await execa('qemu-img', ['convert', '-f', format, '-O', 'raw', image, raw]);
  return raw;
}

async function convertOk(args: string[]): Promise<{ result: Record<string, any>; notes: string[] }> {
  const r = await ferry(['convert', ...args, '--json']);
  assert.equal(r.exitCode, 0, `convert failed:\n${r.stderr}\n${r.stdout.slice(-2000)}`);
  const lines = r.stdout.trim().split('\n').map(l => JSON.parse(l));
  assert.equal(lines.at(-1).event, 'result');
  return { result: lines.at(-1), notes: lines.filter(l => l.event === 'note').map(l => l.message) };
}

const partsOf = async (raw: string) => (JSON.parse((await execa('sfdisk', ['--json', raw])).stdout).partitiontable.partitions as { start: number; size: number }[])
  .map(p => ({ start: p.start / 2048, size: p.size / 2048 }));

/** dumpe2fs -h fields that make the file system what it is (not its counters or times) */
async function extIdentity(raw: string, p: { start: number; size: number }): Promise<Record<string, string>> {
  const text = await onLoop(raw, p, async dev => (await execa('dumpe2fs', ['-h', dev])).stdout);
  const kv = Object.fromEntries(text.split('\n').map(l => /^([^:]+):\s*(.*)$/.exec(l)).filter(Boolean).map(m => [m![1].trim(), m![2].trim()]));
  const keep = ['Filesystem volume name', 'Filesystem UUID', 'Filesystem features', 'Block size', 'Inode size', 'Inode count', 'Directory Hash Seed', 'Filesystem state', 'Block count'];
  return Object.fromEntries(keep.map(k => [k, kv[k]]));
}

/** xfs_db's superblock fields: UUID, label, feature bits and size */
async function xfsIdentity(raw: string, p: { start: number; size: number }): Promise<Record<string, string>> {
  const text = await onLoop(raw, p, async dev => (await execa('xfs_db', ['-r', '-c', 'sb 0', '-c', 'p uuid fname versionnum features2 features_compat features_ro_compat features_incompat blocksize inodesize dblocks', dev])).stdout);
  return Object.fromEntries(text.split('\n').map(l => l.split(' = ')).filter(x => x.length === 2).map(([k, v]) => [k.trim(), v.trim()]));
}

before(async () => {
  await makeSource();
  sum = await sha256(src);
  assert.ok(await holds(src, STALE.ext4) && await holds(src, STALE.xfs), 'the source holds both deleted patterns');
});


describe('--mode clone', () => {
  it('same size to qcow2: both file systems copied by their used blocks; same files, identity and features; no stale block', async () => {
    const t = join(dir, 'same.qcow2');
    const { result: r, notes } = await convertOk([src, t, '--mode', 'clone']);
    assert.equal(r.mode, 'clone');
    assert.deepEqual(r.layout.partitions.map((p: any) => `${p.fs}:${p.method}`), ['ext4:clone', 'xfs:clone']);
    assert.ok(r.layout.partitions.every((p: any) => /used blocks copied, same size/.test(p.why)), JSON.stringify(r.layout.partitions.map((p: any) => p.why)));
    assert.ok(notes.some(n => /^p1 ext4: clone: /.test(n)) && notes.some(n => /^p2 xfs: clone: /.test(n)), notes.join('\n'));
    assert.equal(r.verified, true);
    // verified by the copy's own proof (its used blocks hashed as read, read back from the target), not by walking the files again
    assert.deepEqual(r.layout.partitions.map((p: any) => p.proven), [true, true]);
    assert.deepEqual(r.verify.filesystems.map((f: any) => `${f.fs}:${f.by}`), ['ext4:copy proof', 'xfs:copy proof']);
    const raw = await asRaw(t, 'qcow2');
    assert.deepEqual(await independentCompare(src, 'raw', raw, 'raw'), []);
    assert.deepEqual(await extIdentity(raw, P1), await extIdentity(src, P1));
    assert.deepEqual(await xfsIdentity(raw, P2), await xfsIdentity(src, P2));
    assert.equal(await holds(raw, STALE.ext4), false, 'the deleted ext4 file is not in the target');
    assert.equal(await holds(raw, STALE.xfs), false, 'the deleted xfs file is not in the target');
    // only what is used, and about what the file systems use
    assert.ok(r.allocatedBytes < 60 * MiB, `allocated ${r.allocatedBytes}`);
    await rm(raw);
  });

  it('grown to raw, --mode unset (the default picks clone): the last file system (xfs) grown with xfs_growfs after the copy', async () => {
    const t = join(dir, 'grown.raw');
    const { result: r } = await convertOk([src, t, '--size', `${SIZE + 200}M`]);
    assert.equal(r.mode, 'clone');
    assert.deepEqual(r.layout.partitions.map((p: any) => `${p.fs}:${p.method}`), ['ext4:clone', 'xfs:clone']);
    assert.match(r.layout.partitions[1].why, /grown from 310 MiB to 510 MiB/);
    const parts = await partsOf(t);
    assert.equal(parts[1].size, P2.size + 200);
    assert.deepEqual(await independentCompare(src, 'raw', t, 'raw'), []);
    const [a, b] = [await xfsIdentity(src, P2), await xfsIdentity(t, parts[1])];
    assert.ok(Number(b.dblocks) * Number(b.blocksize) >= 500 * MiB, `xfs grown: ${b.dblocks} blocks`);
    assert.deepEqual({ ...b, dblocks: '' }, { ...a, dblocks: '' }, 'same xfs but for its size');
    assert.deepEqual(await extIdentity(t, parts[0]), await extIdentity(src, P1));
    assert.equal(await holds(t, STALE.ext4), false);
    assert.equal(await holds(t, STALE.xfs), false);
  });

  it('the copy\'s proof: a byte changed in a used range of the target after the copy is found, one in free space is not', async () => {
    // the functions the clone path runs, on real files: copy with the proof, change the target, read it back
    const a = join(dir, 'proof-src.bin'), b = join(dir, 'proof-dst.bin');
    await writeFile(a, randomBytes(24 * MiB));
    await execa('truncate', ['-s', String(24 * MiB), b]);
    const used: [number, number][] = [[0, 5 * MiB], [9 * MiB, 3 * MiB + 4096], [20 * MiB, 4096]];
    const { written, proof } = await copyUsedRanges(a, b, used, silentProgress, { prove: true });
    assert.equal(written, used.reduce((n, r) => n + r[1], 0));
    assert.equal(await checkCopyProof(b, 0, proof!, silentProgress), undefined, 'an exact copy');
    const poke = async (at: number) => {
      const fh = await open(b, 'r+');
      try { await fh.write(Buffer.from([0xa5 ^ (await fh.read(Buffer.alloc(1), 0, 1, at)).buffer[0]]), 0, 1, at); } finally { await fh.close(); }
    };
    await poke(7 * MiB); // free space: not part of the file system's content
    assert.equal(await checkCopyProof(b, 0, proof!, silentProgress), undefined, 'free space is not proved');
    await poke(11 * MiB + 17); // inside the second range (one piece: 9 MiB to 12 MiB + 4 KiB)
    assert.equal(await checkCopyProof(b, 0, proof!, silentProgress), 9 * MiB, 'the start of the piece holding the changed byte');
    // the same proof read at an offset: the volume's place on a larger disk
    const c = join(dir, 'proof-disk.bin');
    await execa('truncate', ['-s', String(32 * MiB), c]);
    await execa('dd', [`if=${a}`, `of=${c}`, 'bs=1M', 'seek=8', 'conv=notrunc,sparse', 'status=none']);
    assert.equal(await checkCopyProof(c, 8 * MiB, proof!, silentProgress), undefined, 'read at the volume\'s offset');
    await rm(a); await rm(b); await rm(c);
  });

  it('--mode clone with --firmware uefi (a table change) is a usage error before anything is written', async () => {
    const t = join(dir, 'uefi.qcow2');
    const r = await ferry(['convert', src, t, '--mode', 'clone', '--firmware', 'uefi', '--json']);
    assert.equal(r.exitCode, 2, r.stderr);
    assert.match(r.stderr + r.stdout, /needs --mode rebuild/);
    assert.equal(await execa('ls', ['-A', dir]).then(x => x.stdout.split('\n').some(n => n.includes('uefi'))), false, 'nothing written');
  });

  it('shrunk below the xfs file system: that partition falls back to the file-level rebuild and says so', async () => {
    const t = join(dir, 'shrunk.qcow2');
    const { result: r, notes } = await convertOk([src, t, '--mode', 'clone', '--size', `${SIZE - 8}M`]);
    assert.deepEqual(r.layout.partitions.map((p: any) => `${p.fs}:${p.method}`), ['ext4:clone', 'xfs:rebuild']);
    assert.deepEqual(r.verify.filesystems.map((f: any) => `${f.fs}:${f.by}`), ['ext4:copy proof', 'xfs:files'], 'the rebuilt file system is verified by its files');
    assert.match(r.layout.partitions[1].why, /below the 310 MiB xfs file system's own size: file-level rebuild/);
    assert.ok(notes.some(n => /^p2 xfs: rebuild: shrunk/.test(n)), notes.join('\n'));
    const raw = await asRaw(t, 'qcow2');
    assert.deepEqual(await independentCompare(src, 'raw', raw, 'raw'), []);
    assert.equal(await holds(raw, STALE.ext4), false);
    assert.equal(await holds(raw, STALE.xfs), false);
    await rm(raw);
  });
});
