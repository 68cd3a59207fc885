// ext2/3/4: format with the source's own feature list, block and inode size
// (an older guest kernel or GRUB must still read it), copy, then carry the
// inode flags (immutable, append-only, …) that cp cannot.
import { run } from '../util/exec.js';
import { withMountedRo, mountedCopy } from './mounted.js';
import { usedBytes } from './copy-tree.js';
import { MiB, usedFromFree, type ByteRange, type FsFacts, type FsModule } from './types.js';

// Features that describe a state, not a format choice.
const STATE_FEATURES = new Set(['needs_recovery', 'orphan_present']);
// Flags worth carrying; e (extents), I (indexed dir), E, h, N are set by the file system itself.
const CARRIED_FLAGS = 'aAcdDijsStTu';

function parseDumpe2fs(text: string): Record<string, string> {
  const kv: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m) kv[m[1].trim()] = m[2].trim();
  }
  return kv;
}

// ext4 without a journal replay on a read-only mount: never write the source.
const SOURCE_OPTS = (type: string) => (type === 'ext2' ? [] : ['noload']);

async function probe(_scope: unknown, dev: string, work: string, type: string): Promise<FsFacts> {
  const kv = parseDumpe2fs((await run('dumpe2fs', ['-h', dev])).stdout);
  const label = kv['Filesystem volume name'];
  const used = await withMountedRo(dev, work, type, SOURCE_OPTS(type), usedBytes);
  return {
    type,
    uuid: kv['Filesystem UUID'],
    label: label && label !== '<none>' ? label : undefined,
    usedBytes: used,
    detail: {
      features: (kv['Filesystem features'] ?? '').split(/\s+/).filter(f => f && !STATE_FEATURES.has(f)),
      blockSize: Number(kv['Block size']),
      inodeSize: Number(kv['Inode size'] ?? 128),
      inodeCount: Number(kv['Inode count']),
      freeInodes: Number(kv['Free inodes']),
      blockCount: Number(kv['Block count']),
      hashSeed: kv['Directory Hash Seed'],
      // what the used-block path must know: a journal to replay or errors make a block copy unsafe to resize
      state: kv['Filesystem state'],
      needsRecovery: (kv['Filesystem features'] ?? '').split(/\s+/).includes('needs_recovery'),
    },
  };
}

/** From each group's "Free blocks: 10-20, 31" line of dumpe2fs (it reads only the bitmaps). */
async function usedRanges(dev: string): Promise<ByteRange[]> {
  const text = (await run('dumpe2fs', [dev])).stdout;
  const kv = parseDumpe2fs(text.slice(0, text.indexOf('\nGroup 0:')));
  const free: [number, number][] = [];
  for (const m of text.matchAll(/^\s+Free blocks: (.+)$/gm)) {
    for (const r of m[1].split(',')) {
      const [a, b] = r.trim().split('-').map(Number);
      if (Number.isFinite(a)) free.push([a, (Number.isFinite(b) ? b : a) - a + 1]);
    }
  }
  return usedFromFree(free.sort((x, y) => x[0] - y[0]), Number(kv['Block count']), Number(kv['Block size']));
}

function minBytes(f: FsFacts): number {
  return Math.ceil(f.usedBytes * 1.1) + 64 * MiB;
}

async function format(dev: string, f: FsFacts, sizeBytes: number): Promise<void> {
  const d = f.detail as { features: string[]; blockSize: number; inodeSize: number; inodeCount: number; freeInodes: number; blockCount: number; hashSeed?: string };
  // Same inode density as the source, but never fewer inodes than it uses.
  const bytesPerInode = (d.blockCount * d.blockSize) / d.inodeCount;
  const inodes = Math.max(Math.floor(sizeBytes / bytesPerInode), d.inodeCount - d.freeInodes + 1024);
  const ext = ['nodiscard'];
  if (d.hashSeed) ext.push(`hash_seed=${d.hashSeed}`);
  const args = ['-F', '-q', '-t', f.type, '-O', ['none', ...d.features].join(','),
    '-b', String(d.blockSize), '-I', String(d.inodeSize), '-N', String(inodes), '-E', ext.join(',')];
  if (f.uuid) args.push('-U', f.uuid);
  if (f.label) args.push('-L', f.label);
  args.push(dev);
  await run('mke2fs', args);
}

/** `lsattr -R -a` lines of files whose flags matter: path relative to root → flags. */
async function carriedFlags(root: string): Promise<Map<string, string>> {
  const r = await run('lsattr', ['-R', '-a', root], { okCodes: [1] });
  const out = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^(\S+) (\/.*)$/.exec(line);
    if (!m || m[2].endsWith('/.') || m[2].endsWith('/..')) continue;
    const flags = [...m[1]].filter(c => CARRIED_FLAGS.includes(c)).join('');
    if (flags) out.set(m[2].slice(root.length), flags);
  }
  // lsattr -a skips the root itself
  const top = await run('lsattr', ['-d', root], { okCodes: [1] });
  const t = [...(top.stdout.split(' ')[0] ?? '')].filter(c => CARRIED_FLAGS.includes(c)).join('');
  if (t) out.set('', t);
  return out;
}

async function applyFlags(flags: Map<string, string>, dst: string): Promise<void> {
  for (const [rel, f] of flags) await run('chattr', [`+${f}`, dst + rel]);
}

export const extModule: FsModule = {
  types: ['ext2', 'ext3', 'ext4'],
  probe,
  minBytes,
  format,
  usedRanges,
  clone: {
    refuse(f) {
      const d = f.detail as { state?: string; needsRecovery?: boolean };
      if (d.needsRecovery) return 'its journal needs recovery (not cleanly unmounted)';
      if (d.state && d.state !== 'clean') return `its state is "${d.state}", not clean`;
      return undefined;
    },
    sizeBytes: f => Number(f.detail.blockCount) * Number(f.detail.blockSize),
    // -f: resize2fs asks for a fresh e2fsck after any mount; the copy is of a clean file system, checked by refuse
    async grow(ctx) { await run('resize2fs', ['-f', ctx.targetDev]); },
  },
  copy(ctx) {
    // The source never changes, so its flags are scanned while cp runs.
    let scan: Promise<Map<string, string>> | undefined;
    return mountedCopy(ctx, {
      sourceOptions: SOURCE_OPTS(ctx.facts.type),
      targetOptions: [],
      before: async src => { scan = carriedFlags(src); scan.catch(() => undefined); },
      after: async (_src, dst) => applyFlags(await scan!, dst),
    });
  },
  verifyAs: { kind: 'mount', options: SOURCE_OPTS },
  features: f => [...(f.detail as { features: string[] }).features, `block_size=${f.detail.blockSize}`, `inode_size=${f.detail.inodeSize}`].sort(),
  async compareExtra(src, dst) {
    const [a, b] = await Promise.all([carriedFlags(src), carriedFlags(dst)]);
    const diffs: string[] = [];
    for (const p of new Set([...a.keys(), ...b.keys()])) {
      if ((a.get(p) ?? '') !== (b.get(p) ?? '')) diffs.push(`/${p.replace(/^\//, '')}: inode flags ${a.get(p) ?? '-'} → ${b.get(p) ?? '-'}`);
    }
    return diffs;
  },
};
