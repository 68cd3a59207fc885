// A second, independent equivalence check for tests: it does not use Ferry's
// verify code. Each image is converted to raw by qemu-img, each partition
// mounted read-only, and the trees compared with find, sha256sum, getfattr
// and lsattr.
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';

interface Part { node: string; start: number; size: number; type: string }

async function partitions(raw: string): Promise<Part[]> {
  const r = await execa('sfdisk', ['--json', raw]);
  return (JSON.parse(r.stdout).partitiontable.partitions as Part[]);
}

/** TYPE, UUID and LABEL as blkid reads them from the superblock itself (-p: no cache) */
async function identity(dev: string): Promise<string> {
  const out = String((await execa('blkid', ['-p', '-s', 'TYPE', '-s', 'UUID', '-s', 'LABEL', '-o', 'export', dev])).stdout);
  return out.split('\n').filter(l => l && !l.startsWith('DEVNAME=')).join(' ');
}

async function blkType(dev: string): Promise<string> {
  const r = await execa('blkid', ['-p', '-s', 'TYPE', '-o', 'value', dev], { reject: false });
  return String(r.stdout).trim();
}

const MOUNT_OPTS: Record<string, string> = { xfs: 'ro,nouuid,norecovery', btrfs: 'ro,subvolid=5', ext4: 'ro,noload', ext3: 'ro,noload', ext2: 'ro' };

async function describeTree(dir: string): Promise<string> {
  const find = await execa('find', ['.', '-printf', '%p\\0%y %m %U %G %s %T@ %A@ %n %l\\0'], { cwd: dir, encoding: 'buffer' });
  const fields = Buffer.from(find.stdout as Uint8Array).toString('latin1').split('\0');
  const lines: string[] = [];
  for (let i = 0; i + 1 < fields.length; i += 2) {
    // a directory's size is its on-disk block size: not a property of the tree
    lines.push(`${fields[i]} ${fields[i + 1].replace(/^d (\S+ \S+ \S+) \d+/, 'd $1 -')}`);
  }
  const sums = await execa('find', ['.', '-type', 'f', '-exec', 'sha256sum', '-z', '{}', '+'], { cwd: dir, encoding: 'buffer' });
  // strict: a getfattr that fails fails the comparison (two failed reads must never compare equal)
  const xattrs = await execa('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: dir });
  return [lines.sort().join('\n'), Buffer.from(sums.stdout as Uint8Array).toString('latin1').split('\0').sort().join('\n'), String(xattrs.stdout)].join('\n---\n');
}

async function flags(dir: string): Promise<string> {
  // lsattr cannot read flags of symlinks and device nodes and says so per file (exit 1): those lines are
  // skipped; any other failure, or no output at all, fails the comparison
  const r = await execa('lsattr', ['-R', '-a', '.'], { cwd: dir, reject: false });
  const bad = String(r.stderr).split('\n').filter(l => l.trim() && !/Operation not supported|Inappropriate ioctl|No such device or address|While reading flags on .*: (Operation not supported|Inappropriate ioctl)/.test(l));
  if (bad.length || !String(r.stdout).trim()) throw new Error(`lsattr in ${dir} failed: ${bad.join('; ') || 'no output'}`);
  const out: string[] = [];
  for (const line of String(r.stdout).split('\n')) {
    const m = /^(\S+) (\.\/.*)$/.exec(line);
    if (!m || /\/\.\.?$/.test(m[2])) continue;
    // only flags a user sets; e (extents) and friends depend on how the data was written
    const flags = m[1].replace(/[^aAcdDijsStTu]/g, '');
    if (flags) out.push(`${flags} ${m[2]}`);
  }
  return out.sort().join('\n');
}

/** Mount dev read-only at mnt (recorded in mounts for the caller to undo): its identity (blkid's low-level probe) and tree, and its inode flags. */
async function readMounted(dev: string, type: string, mnt: string, mounts: string[]): Promise<{ tree: string; flags: string }> {
  await execa('mkdir', [mnt]);
  await execa('mount', ['-t', type, '-o', MOUNT_OPTS[type], dev, mnt]);
  mounts.push(mnt);
  return { tree: `${await identity(dev)}\n${await describeTree(mnt)}`, flags: type.startsWith('ext') ? await flags(mnt) : '' };
}

/** Returns a list of differences between the file systems of two images (empty = same). */
export async function independentCompare(a: string, aFormat: string, b: string, bFormat: string): Promise<string[]> {
  const work = await mkdtemp('/var/tmp/indep-');
  const loops: string[] = [];
  const mounts: string[] = [];
  try {
    const raws: string[] = [];
    for (const [img, fmt, name] of [[a, aFormat, 'a.raw'], [b, bFormat, 'b.raw']]) {
      const raw = join(work, name);
      await execa('qemu-img', ['convert', '-f', fmt, '-O', 'raw', img, raw]);
      raws.push(raw);
    }
    // an extended partition is a container: its logicals are compared one by one
    const plain = (ps: Part[]) => ps.filter(p => !['5', 'f', '85'].includes(p.type.toLowerCase()));
    const [pa, pb] = [plain(await partitions(raws[0])), plain(await partitions(raws[1]))];
    const diffs: string[] = [];
    if (pa.length !== pb.length) diffs.push(`partition count ${pa.length} → ${pb.length}`);
    for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
      const trees: string[] = [];
      const attrs: string[] = [];
      for (const [raw, p, side] of [[raws[0], pa[i], 'a'], [raws[1], pb[i], 'b']] as const) {
        const dev = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(p.start * 512), '--sizelimit', String(p.size * 512), raw])).stdout).trim();
        loops.push(dev);
        const type = await blkType(dev);
        attrs.push('');
        if (type === 'vfat') {
          const dir = join(work, `${side}${i}-fat`);
          await execa('mkdir', [dir]);
          // strict: a failed read must fail the comparison, never compare equal (an empty FAT has nothing to copy)
          const listing = await execa('mdir', ['-b', '-i', dev, '::'], { env: { MTOOLS_SKIP_CHECK: '1' }, reject: false });
          if (listing.exitCode !== 0 && !/No files/i.test(String(listing.stderr) + String(listing.stdout))) throw new Error(`mdir ${dev}: ${listing.stderr}`);
          if (String(listing.stdout).trim()) await execa('mcopy', ['-s', '-n', '-i', dev, '::*', `${dir}/`], { env: { MTOOLS_SKIP_CHECK: '1' } });
          const sums = await execa('find', ['.', '-type', 'f', '-exec', 'sha256sum', '{}', '+'], { cwd: dir });
          trees.push(`vfat ${String((await execa('blkid', ['-p', '-s', 'UUID', '-s', 'LABEL', '-o', 'value', dev])).stdout)}\n${String(sums.stdout).split('\n').sort().join('\n')}`);
          continue;
        }
        if (type === 'swap' || type === '') {
          // same signature for swap; same bytes for what Ferry copies as blocks
          const id = type === 'swap' ? (await execa('blkid', ['-p', '-s', 'UUID', '-o', 'value', dev])).stdout : (await execa('sha256sum', [dev])).stdout.split(' ')[0];
          trees.push(`${type} ${String(id)}`);
          continue;
        }
        attrs.pop();
        if (!MOUNT_OPTS[type]) throw new Error(`the independent comparison cannot read ${type} (partition ${i + 1})`);
        const v = await readMounted(dev, type, join(work, `${side}${i}`), mounts);
        trees.push(v.tree);
        attrs.push(v.flags);
      }
      if (trees[0] !== trees[1]) diffs.push(`partition ${i + 1}: trees differ\n${firstDifference(trees[0], trees[1])}`);
      if (attrs[0] !== attrs[1]) diffs.push(`partition ${i + 1}: inode flags differ\n${firstDifference(attrs[0], attrs[1])}`);
    }
    return diffs;
  } finally {
    for (const m of mounts.reverse()) await execa('umount', [m], { reject: false });
    for (const l of loops) await execa('losetup', ['-d', l], { reject: false });
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Two file systems given as [offset, length] ranges of raw images, compared
 * the same way as partitions (a logical volume found with LVM's own tools).
 */
export async function independentCompareRanges(a: { raw: string; offset: number; size: number }, b: { raw: string; offset: number; size: number }): Promise<string[]> {
  const work = await mkdtemp('/var/tmp/indep-');
  const loops: string[] = [];
  const mounts: string[] = [];
  try {
    const trees: string[] = [];
    const attrs: string[] = [];
    for (const [side, v] of [['a', a], ['b', b]] as const) {
      const dev = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(v.offset), '--sizelimit', String(v.size), v.raw])).stdout).trim();
      loops.push(dev);
      const type = await blkType(dev);
      if (!MOUNT_OPTS[type]) throw new Error(`${v.raw}@${v.offset}: no mountable file system (blkid TYPE '${type}')`);
      const r = await readMounted(dev, type, join(work, side), mounts);
      trees.push(r.tree);
      attrs.push(r.flags);
    }
    const diffs: string[] = [];
    if (trees[0] !== trees[1]) diffs.push(`trees differ\n${firstDifference(trees[0], trees[1])}`);
    if (attrs[0] !== attrs[1]) diffs.push(`inode flags differ\n${firstDifference(attrs[0], attrs[1])}`);
    return diffs;
  } finally {
    for (const m of mounts.reverse()) await execa('umount', [m], { reject: false });
    for (const l of loops) await execa('losetup', ['-d', l], { reject: false });
    await rm(work, { recursive: true, force: true });
  }
}

function firstDifference(a: string, b: string): string {
  const la = a.split('\n'), lb = b.split('\n');
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) return `  source: ${la[i]}\n  target: ${lb[i]}`;
  }
  return '';
}

/** the format qemu-img sees (never a guess from the name); -U: a source may be open elsewhere read-only */
async function formatOf(image: string): Promise<string> {
  return (JSON.parse(String((await execa('qemu-img', ['info', '-U', '--output=json', image])).stdout)) as { format: string }).format;
}

/** Assert two images hold the same file systems, judged without Ferry's code (any tool failure fails). */
export async function assertSameFiles(source: string, target: string, what = `${target} against ${source}`): Promise<void> {
  const diffs = await independentCompare(source, await formatOf(source), target, await formatOf(target));
  if (diffs.length) throw new Error(`${what}: the independent comparison found differences:\n${diffs.join('\n')}`);
}
