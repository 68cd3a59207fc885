// Walking one volume's tree and comparing two of them file by file.
//
// Unchanged files are recognised by size and mtime, and only files whose size
// is the same but whose mtime differs are hashed (sha256) to decide. That is
// sound for every "changed" this module reports: a different size, a
// different hash, a different link target, mode, owner or xattr are each
// proof of a change, so nothing unchanged is ever called changed. What it may
// miss: a file rewritten to the same size whose mtime was set back to the old
// nanosecond (touch -r, tar/rsync restoring times, a clock moved back) is
// taken as unchanged without reading it, as rsync and make do.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { run } from '../util/exec.js';

export type Kind = 'file' | 'dir' | 'symlink' | 'other';

export interface Entry {
  kind: Kind;
  /** permission bits with setuid/setgid/sticky */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** nanoseconds since the epoch, as decimal strings (too large for a double) */
  mtime: string;
  atime: string;
  link?: string;
  /** name → hex value */
  xattrs?: Record<string, string>;
  /** the inode and its link count: names of one file (hard links) share an inode */
  ino: string;
  nlink: number;
}

export type Tree = Map<string, Entry>;

/** Every entry below dir ('/'-rooted paths, the root itself as '/'), with its xattrs. */
export async function walkTree(dir: string, opts: { xattrs?: boolean } = {}): Promise<Tree> {
  const tree: Tree = new Map();
  // breadth first, each level's entries stat'ed many at a time (the libuv pool works them in parallel)
  let level = ['/'];
  while (level.length) {
    const next: string[] = [];
    for (let i = 0; i < level.length; i += 256) {
      await Promise.all(level.slice(i, i + 256).map(async path => {
        const host = join(dir, path);
        const st = await lstat(host, { bigint: true });
        const kind: Kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
        const e: Entry = { kind, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), size: Number(st.size), mtime: String(st.mtimeNs), atime: String(st.atimeNs), ino: String(st.ino), nlink: Number(st.nlink) };
        if (kind === 'symlink') e.link = await readlink(host);
        tree.set(path, e);
        if (kind === 'dir') for (const name of await readdir(host)) next.push(posix.join(path, name));
      }));
    }
    level = next;
  }
  if (opts.xattrs !== false) await readXattrs(dir, tree);
  return tree;
}

/** getfattr once for the whole tree (one process, not one per file); files it cannot read keep no xattrs */
async function readXattrs(dir: string, tree: Tree): Promise<void> {
  const r = await run('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: dir, okCodes: [1] });
  let cur: Entry | undefined;
  for (const line of r.stdout.split('\n')) {
    if (line.startsWith('# file: ')) {
      const rel = unescapeGetfattr(line.slice(8));
      cur = tree.get(rel === '.' ? '/' : posix.normalize('/' + rel.replace(/^\.\//, '')));
      continue;
    }
    const m = /^([^=]+)=(0x[0-9a-f]*)$/.exec(line);
    if (m && cur) (cur.xattrs ??= {})[m[1]] = m[2];
  }
}

/** getfattr writes unusual bytes of a name as \ooo */
const unescapeGetfattr = (s: string) => Buffer.from(s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))), 'latin1').toString('utf8');

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export type Aspect = 'content' | 'type' | 'mode' | 'owner' | 'xattrs' | 'times';

export interface TreeChange {
  path: string;
  change: 'added' | 'removed' | 'changed';
  kind: Kind;
  /** changed: what differs */
  aspects?: Aspect[];
  /** the base's and the new side's entries */
  a?: Entry;
  b?: Entry;
}

const sameXattrs = (x?: Record<string, string>, y?: Record<string, string>) => JSON.stringify(sortKeys(x)) === JSON.stringify(sortKeys(y));
const sortKeys = (x?: Record<string, string>) => Object.fromEntries(Object.entries(x ?? {}).sort(([p], [q]) => p.localeCompare(q)));

/** Compare two walked trees; hashes (at most 8 at a time) only files of one size with different mtimes. */
export async function compareTrees(dirA: string, a: Tree, dirB: string, b: Tree, include: (path: string) => boolean = () => true): Promise<TreeChange[]> {
  const out: TreeChange[] = [];
  const toHash: { c: TreeChange; path: string }[] = [];
  for (const [path, ea] of a) {
    if (!include(path)) continue;
    const eb = b.get(path);
    if (!eb) { out.push({ path, change: 'removed', kind: ea.kind, a: ea }); continue; }
    const aspects: Aspect[] = [];
    if (ea.kind !== eb.kind) aspects.push('type');
    else if (ea.kind === 'symlink' && ea.link !== eb.link) aspects.push('content');
    else if (ea.kind === 'file' && ea.size !== eb.size) aspects.push('content');
    if (ea.mode !== eb.mode && ea.kind !== 'symlink') aspects.push('mode');
    if (ea.uid !== eb.uid || ea.gid !== eb.gid) aspects.push('owner');
    if (!sameXattrs(ea.xattrs, eb.xattrs)) aspects.push('xattrs');
    if (ea.mtime !== eb.mtime) aspects.push('times');
    const c: TreeChange = { path, change: 'changed', kind: eb.kind, aspects, a: ea, b: eb };
    if (ea.kind === 'file' && eb.kind === 'file' && ea.size === eb.size && ea.mtime !== eb.mtime) toHash.push({ c, path });
    if (aspects.length) out.push(c);
  }
  for (const [path, eb] of b) if (include(path) && !a.has(path)) out.push({ path, change: 'added', kind: eb.kind, b: eb });
  await pool(toHash, 8, async ({ c, path }) => {
    const [ha, hb] = await Promise.all([sha256File(join(dirA, path)), sha256File(join(dirB, path))]);
    if (ha !== hb) c.aspects!.unshift('content');
  });
  return out.sort((x, y) => x.path < y.path ? -1 : x.path > y.path ? 1 : 0);
}

export async function pool<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

/**
 * Hard links: each name of a file with more than one link → the group's first
 * name (in path order), which a delta writes and the others link to.
 */
export function linkLeaders(tree: Tree): Map<string, string> {
  const byInode = new Map<string, string[]>();
  for (const [path, e] of tree) if (e.kind === 'file' && e.nlink > 1) byInode.set(e.ino, [...(byInode.get(e.ino) ?? []), path]);
  const out = new Map<string, string>();
  for (const names of byInode.values()) {
    if (names.length < 2) continue;
    const first = names.sort((x, y) => x < y ? -1 : x > y ? 1 : 0)[0];
    for (const n of names) out.set(n, first);
  }
  return out;
}

/** --paths: shell-style globs on the guest path (* within a name, ** across directories, ? one character) */
export function globMatcher(globs: string[]): (path: string) => boolean {
  if (!globs.length) return () => true;
  const res = globs.map(g => new RegExp('^' + g.split(/(\*\*\/?|\*|\?)/).map(p =>
    p === '**' || p === '**/' ? '.*' : p === '*' ? '[^/]*' : p === '?' ? '[^/]' : p.replace(/[.+^${}()|[\]\\]/g, '\\$&')).join('') + '$'));
  return path => res.some(r => r.test(path));
}
