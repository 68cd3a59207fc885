// A file tree as a comparable record: one entry per path with type, mode,
// owner, ns times, size, link target, device number, xattrs (so ACLs and
// capabilities) and hard-link group. Two trees are equivalent when
// compareTrees() and contentDifferences() find nothing.
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { run } from '../util/exec.js';
import { throwIfAborted } from '../util/abort.js';

export interface TreeEntry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  mtimeNs: bigint;
  atimeNs: bigint;
  rdev?: bigint;
  link?: string;
  sparse?: boolean;
  /** other paths of the same inode (hard links), sorted */
  links?: string[];
  xattrs?: string;
}

export interface WalkOptions {
  /** compare only what FAT keeps: type, size, content, mtime to the 2-second grain */
  fatOnly?: boolean;
}

const typeOf = (s: { isFile(): boolean; isDirectory(): boolean; isSymbolicLink(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean; isFIFO(): boolean; isSocket(): boolean }) =>
  s.isFile() ? 'file' : s.isDirectory() ? 'dir' : s.isSymbolicLink() ? 'symlink' : s.isCharacterDevice() ? 'char'
    : s.isBlockDevice() ? 'block' : s.isFIFO() ? 'fifo' : s.isSocket() ? 'socket' : 'unknown';

const COMPARE_WORKERS = 8;
const CHUNK = 1 << 20;

type Range = [start: number, end: number];

/**
 * Byte ranges of a file that hold data (FIEMAP through xfs_io, which works on
 * any file system); undefined when they cannot be had. Reading a 4 GiB sparse
 * file's holes through a FUSE export costs seconds; its extents cost one call.
 */
async function dataRanges(path: Buffer): Promise<Range[] | undefined> {
  const name = path.toString('utf8');
  if (!Buffer.from(name, 'utf8').equals(path)) return undefined;
  const r = await run('xfs_io', ['-r', '-c', 'fiemap', name], { okCodes: [1] }).catch(() => undefined);
  if (!r || r.exitCode !== 0) return undefined;
  return [...r.stdout.matchAll(/\[(\d+)\.\.(\d+)\]: (?!hole)/g)].map(m => [Number(m[1]) * 512, (Number(m[2]) + 1) * 512] as Range);
}

function mergeRanges(ranges: Range[], size: number): Range[] {
  const out: Range[] = [];
  for (const [s, e] of ranges.sort((x, y) => x[0] - y[0])) {
    const end = Math.min(e, size);
    if (s >= end) continue;
    const last = out.at(-1);
    if (last && s <= last[1]) last[1] = Math.max(last[1], end);
    else out.push([s, end]);
  }
  return out;
}

/** Compare two files chunk by chunk over the given ranges (no hashing: memcmp is ~20x cheaper). */
async function sameContent(a: Buffer, b: Buffer, ranges: Range[], bufA: Buffer, bufB: Buffer): Promise<boolean> {
  const [fa, fb] = await Promise.all([open(a, 'r'), open(b, 'r')]);
  try {
    for (const [start, end] of ranges) {
      for (let pos = start; pos < end; pos += CHUNK) {
        const len = Math.min(CHUNK, end - pos);
        const [ra, rb] = await Promise.all([fa.read(bufA, 0, len, pos), fb.read(bufB, 0, len, pos)]);
        if (ra.bytesRead !== rb.bytesRead) return false;
        if (!bufA.subarray(0, ra.bytesRead).equals(bufB.subarray(0, rb.bytesRead))) return false;
        if (ra.bytesRead < len) break;
      }
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** What to read of a pair: all of it, or (sparse files) the union of both sides' data extents; outside it both are holes. */
async function rangesToCompare(a: Buffer, ea: TreeEntry, b: Buffer, eb: TreeEntry): Promise<Range[]> {
  const size = Number(ea.size);
  const whole: Range[] = [[0, size]];
  if (!ea.sparse && !eb.sparse) return whole;
  const [ra, rb] = await Promise.all([dataRanges(a), dataRanges(b)]);
  return ra && rb ? mergeRanges([...ra, ...rb], size) : whole;
}

/** getfattr prints names with octal escapes for bytes outside printable ASCII. */
function unescapeOctal(s: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && /^[0-7]{3}$/.test(s.slice(i + 1, i + 4))) { bytes.push(parseInt(s.slice(i + 1, i + 4), 8)); i += 3; }
    else if (s[i] === '\\' && s[i + 1] === '\\') { bytes.push(0x5c); i++; }
    else bytes.push(...Buffer.from(s[i], 'utf8'));
  }
  return Buffer.from(bytes).toString('latin1');
}

// Paths are kept as byte strings (latin1: one char per byte), because file
// names need not be UTF-8; show() turns one back into readable text.
const bytesOf = (p: string) => Buffer.from(p, 'latin1');
const show = (p: string) => bytesOf(p).toString('utf8');

/** Every extended attribute in the tree, all namespaces (or only the one named: some are served but not listed): relative path → "name=0xvalue;…". */
export async function treeXattrs(root: string, name?: string): Promise<Map<string, string>> {
  const which = name ? ['-n', name] : ['-d', '-m', '-'];
  const r = await run('getfattr', ['-R', '-P', '-h', ...which, '-e', 'hex', '--absolute-names', root], { okCodes: [1] });
  const out = new Map<string, string>();
  let current: string | undefined;
  let attrs: string[] = [];
  const flush = () => { if (current !== undefined && attrs.length) out.set(current, attrs.sort().join(';')); attrs = []; };
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      flush();
      const abs = unescapeOctal(line.slice(8));
      const rootBytes = bytesOf(root).toString('latin1');
      current = abs === rootBytes ? '' : abs.slice(rootBytes.length + 1);
    } else if (line.includes('=')) attrs.push(line);
  }
  flush();
  return out;
}

export async function walkTree(root: string, opts: WalkOptions = {}): Promise<Map<string, TreeEntry>> {
  const entries = new Map<string, TreeEntry>();
  const inodes = new Map<string, string[]>();
  const absOf = (rel: string) => rel ? Buffer.concat([Buffer.from(root + '/'), bytesOf(rel)]) : Buffer.from(root);
  const visit = async (rel: string) => {
    const abs = absOf(rel);
    const s = await lstat(abs, { bigint: true });
    const type = typeOf(s);
    const e: TreeEntry = {
      type, mode: Number(s.mode), uid: Number(s.uid), gid: Number(s.gid),
      size: type === 'dir' ? 0n : s.size, mtimeNs: s.mtimeNs, atimeNs: s.atimeNs,
    };
    if (type === 'symlink') e.link = (await readlink(abs, { encoding: 'buffer' })).toString('latin1');
    if (type === 'char' || type === 'block') e.rdev = s.rdev;
    if (type === 'file') {
      e.sparse = s.blocks * 512n + 65536n < s.size;
      if (s.nlink > 1n) {
        const key = `${s.dev}:${s.ino}`;
        const group = inodes.get(key) ?? [];
        group.push(rel);
        inodes.set(key, group);
      }
    }
    entries.set(rel, e);
    if (type === 'dir') {
      const names = (await readdir(abs, { encoding: 'buffer' })).map(n => n.toString('latin1')).sort();
      // siblings in parallel: lstat latency through FUSE, not CPU, is what a walk waits on
      await Promise.all(names.map(name => visit(rel ? `${rel}/${name}` : name)));
    }
  };
  await visit('');
  for (const group of inodes.values()) {
    const sorted = group.sort();
    for (const p of sorted) entries.get(p)!.links = sorted;
  }
  if (!opts.fatOnly) {
    for (const [rel, x] of await treeXattrs(root)) { const e = entries.get(rel); if (e) e.xattrs = x; }
  }
  return entries;
}

/** Regular files of the same size on both sides whose bytes differ. */
export async function contentDifferences(rootA: string, a: Map<string, TreeEntry>, rootB: string, b: Map<string, TreeEntry>, prefix = '',
  onBytes: (n: number) => void = () => undefined): Promise<string[]> {
  const pairs = [...a].filter(([p, e]) => e.type === 'file' && b.get(p)?.type === 'file' && b.get(p)!.size === e.size).map(([p]) => p);
  const abs = (root: string, rel: string) => Buffer.concat([Buffer.from(root + '/'), bytesOf(rel)]);
  const diffs: string[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: COMPARE_WORKERS }, async () => {
    const bufA = Buffer.allocUnsafe(CHUNK), bufB = Buffer.allocUnsafe(CHUNK);
    while (next < pairs.length) {
      throwIfAborted();
      const rel = pairs[next++];
      const pa = abs(rootA, rel), pb = abs(rootB, rel);
      const ranges = await rangesToCompare(pa, a.get(rel)!, pb, b.get(rel)!);
      if (!(await sameContent(pa, pb, ranges, bufA, bufB))) diffs.push(`${prefix}/${show(rel)}: content differs`);
      onBytes(ranges.reduce((n, [s, e]) => n + e - s, 0));
    }
  }));
  return diffs.sort();
}

export function compareTrees(src: Map<string, TreeEntry>, dst: Map<string, TreeEntry>, opts: WalkOptions = {}, prefix = ''): string[] {
  const diffs: string[] = [];
  const name = (p: string) => `${prefix}/${show(p)}`;
  for (const [p, a] of src) {
    const b = dst.get(p);
    if (!b) { diffs.push(`${name(p)}: missing in target`); continue; }
    const differ = (what: string, x: unknown, y: unknown) => { if (x !== y) diffs.push(`${name(p)}: ${what} ${String(x)} → ${String(y)}`); };
    differ('type', a.type, b.type);
    if (a.type !== b.type) continue;
    if (a.type !== 'dir') differ('size', a.size, b.size);
    if (opts.fatOnly) {
      if (a.type === 'file' && (a.mtimeNs - b.mtimeNs > 2_000_000_000n || b.mtimeNs - a.mtimeNs > 2_000_000_000n)) differ('mtime', a.mtimeNs, b.mtimeNs);
      continue;
    }
    differ('mode', a.mode.toString(8), b.mode.toString(8));
    differ('uid', a.uid, b.uid);
    differ('gid', a.gid, b.gid);
    differ('mtime', a.mtimeNs, b.mtimeNs);
    differ('atime', a.atimeNs, b.atimeNs);
    differ('link target', a.link, b.link);
    differ('device', a.rdev, b.rdev);
    differ('xattrs', a.xattrs ?? '', b.xattrs ?? '');
    differ('hard links', (a.links ?? []).join(','), (b.links ?? []).join(','));
    if (a.sparse && !b.sparse) diffs.push(`${name(p)}: sparse in source, fully allocated in target`);
  }
  for (const p of dst.keys()) if (!src.has(p)) diffs.push(`${name(p)}: only in target`);
  return diffs;
}
