// A file tree as a comparable record: one entry per path with type, mode,
// owner, ns times, size, content hash, link target, device number, xattrs
// (so ACLs and capabilities) and hard-link group. Two trees are equivalent
// when compareTrees() finds nothing.
import { createHash } from 'node:crypto';
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
  hash?: string;
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

const HASH_WORKERS = 8;

/** sha256 of a file, read through one reused buffer (a stream per file made GC the bottleneck). */
async function hashFile(path: Buffer, buf: Buffer): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(path, 'r');
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (!bytesRead) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
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

/** Every extended attribute in the tree, all namespaces: relative path → "name=0xvalue;…". */
async function treeXattrs(root: string): Promise<Map<string, string>> {
  const r = await run('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', root], { okCodes: [1] });
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
  const files: string[] = [];
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
      files.push(rel);
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
  // hash files a few at a time: the FUSE export and page cache like parallel reads
  let next = 0;
  await Promise.all(Array.from({ length: HASH_WORKERS }, async () => {
    const buf = Buffer.allocUnsafe(1 << 20);
    while (next < files.length) {
      throwIfAborted();
      const rel = files[next++];
      entries.get(rel)!.hash = await hashFile(absOf(rel), buf);
    }
  }));
  if (!opts.fatOnly) {
    for (const [rel, x] of await treeXattrs(root)) { const e = entries.get(rel); if (e) e.xattrs = x; }
  }
  return entries;
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
    differ('content', a.hash, b.hash);
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
