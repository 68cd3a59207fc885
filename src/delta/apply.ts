// `ferry delta apply FILE IMAGE --overlay NEW.qcow2`: check the delta whole,
// check the target read-only against the delta's base (every conflict named),
// and only then write — into a new qcow2 overlay whose backing file is IMAGE,
// so IMAGE stays byte for byte as it was. A failed apply leaves no overlay.
import { chmod, lchown, link, lstat, mkdir, readFile, readlink, realpath, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { dirname, join, posix, resolve } from 'node:path';
import { openWritable } from '../blockdev/disk.js';
import { openSource } from '../sources/open.js';
import { workDir } from '../blockdev/mount.js';
import { FerryError, notRoot, sourceMissing, targetExists, usageError } from '../errors.js';
import { mtools } from '../fs/vfat.js';
import { createOverlay } from '../refit/reconfigure.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { run } from '../util/exec.js';
import { withScope } from '../util/scope.js';
import { copyBlob, readBlob, readDelta, type DeltaFile, type NewState, type Op } from './format.js';
import { applyLineEdits, mergeRegistry, readHive, registryConflicts } from './parts.js';
import { sha256File } from './tree.js';
import { displayPath, openVolumes, type Volume, type Volumes } from './volumes.js';

export interface ApplyRequest { delta: string; image: string; overlay?: string; dryRun?: boolean; force?: boolean }
export interface ApplyResult {
  delta: string; image: string; overlay?: string; dryRun: boolean;
  /** what each operation does (or would do), as guest paths */
  operations: { op: Op['op']; path: string; note?: string }[];
  /** conflicts overridden by --force */
  forced: string[];
}

export const deltaConflict = (image: string, paths: string[]) =>
  new FerryError('DELTA_CONFLICT', 5, `${image} differs from the delta's base at ${paths.length} path(s): ${paths.join(', ')}; apply it to the image the delta was made from, or pass --force to apply it anyway`, { image, paths });

export const deltaWrongOs = (file: string, delta: string, image: string, family: string) =>
  new FerryError('DELTA_WRONG_OS', 5, `${file} is a delta for a ${delta} system but ${image} holds ${family === 'none' ? 'no operating system Ferry recognises' : `a ${family} system`}; apply it to a ${delta} image`, { file, delta, image, family });

export async function applyDelta(r: ApplyRequest): Promise<ApplyResult> {
  if (process.getuid?.() !== 0) throw notRoot();
  if (!r.overlay && !r.dryRun) throw usageError('delta apply writes into a new qcow2 overlay: give --overlay NEW.qcow2');
  // the whole delta is checked (magic, version, length, checksum) before the image is even opened
  const delta = await readDelta(r.delta);
  if (!(await stat(r.image).catch(() => undefined))?.isFile()) throw sourceMissing(r.image);
  if (r.overlay && await stat(r.overlay).catch(() => undefined)) throw targetExists(r.overlay);
  const image = resolve(r.image);
  const result: ApplyResult = { delta: r.delta, image, dryRun: !!r.dryRun, operations: [], forced: [] };
  result.forced = await checkDeltaOn(delta, image, !!r.force);
  for (const op of delta.manifest.ops) result.operations.push({ op: op.op, path: displayPath(op.volume, op.path) });
  if (r.dryRun) return result;
  const overlay = resolve(r.overlay!);
  result.overlay = overlay;
  await withScope(async scope => {
    let done = false;
    await createOverlay(image, overlay);
    // registered first, so released last: after the file systems are unmounted and the export closed
    scope.defer(`overlay ${overlay}`, () => (done ? undefined : rm(overlay, { force: true })));
    await writeDeltaInto(delta, overlay, !!r.force);
    done = true;
  });
  return result;
}

/** Open image read-only and check it against the delta: its OS family, then every conflict (refused unless force; returned when forced). */
export async function checkDeltaOn(delta: DeltaFile, image: string, force: boolean): Promise<string[]> {
  const conflicts = await withScope(async scope => {
    const work = await workDir(scope);
    const vols = await openVolumes(scope, await openSource(scope, parseEndpoint(image), work, 'image'), work);
    const want = delta.manifest.osFamily;
    if (want !== 'none' && vols.family !== want) throw deltaWrongOs(delta.file, want, image, vols.family);
    return findConflicts(delta, vols);
  });
  if (conflicts.length && !force) throw deltaConflict(image, conflicts);
  return conflicts;
}

/** Write a checked delta into a writable image (an overlay, never a source). */
export async function writeDeltaInto(delta: DeltaFile, written: string, force: boolean): Promise<void> {
  await withScope(async s => {
    const work = await workDir(s);
    const vols = await openVolumes(s, await openWritable(s, written, work), work, true);
    await writeOps(delta, vols, work, force);
  });
}

const volumeOf = (vols: Volumes, name: string) => vols.volumes.find(v => v.name === name);

async function entryState(host: string): Promise<{ kind: string; sha256?: string; link?: string } | undefined> {
  const st = await lstat(host).catch(() => undefined);
  if (!st) return undefined;
  if (st.isFile()) return { kind: 'file', sha256: await sha256File(host) };
  if (st.isDirectory()) return { kind: 'dir' };
  if (st.isSymbolicLink()) return { kind: 'symlink', link: await readlink(host) };
  return { kind: 'other' };
}

const sameAs = (now: { kind: string; sha256?: string; link?: string }, want: { kind: string; sha256?: string; link?: string }) =>
  now.kind === want.kind && (want.sha256 === undefined || now.sha256 === want.sha256) && (want.link === undefined || now.link === want.link);

const newAsBase = (n: NewState) => ({ kind: n.kind, sha256: n.blob, link: n.link });

/** Every path where the target is neither the delta's base nor already its result. */
async function findConflicts(delta: DeltaFile, vols: Volumes): Promise<string[]> {
  const out: string[] = [];
  const added = new Set(delta.manifest.ops.filter(o => o.op === 'add').map(o => `${o.volume}\0${o.path}`));
  for (const op of delta.manifest.ops) {
    const shown = displayPath(op.volume, op.path);
    const v = volumeOf(vols, op.volume);
    if (!v) { out.push(`${shown} (the image has no volume ${op.volume})`); continue; }
    const host = join(v.dir, op.path);
    if (!(await insideVolume(v, host))) { out.push(`${shown} (a link in its directory leads out of the volume)`); continue; }
    const now = await entryState(host);
    if (op.op === 'add') {
      const parent = posix.dirname(op.path);
      if (!now && parent !== op.path && !added.has(`${op.volume}\0${parent}`) && (await entryState(join(v.dir, parent)))?.kind !== 'dir') out.push(`${shown} (its directory does not exist)`);
      if (now && !sameAs(now, newAsBase(op.new))) out.push(shown);
    } else if (op.op === 'change') {
      if (!now || !(sameAs(now, op.base) || sameAs(now, newAsBase(op.new)))) out.push(shown);
    } else if (op.op === 'remove') {
      if (now && !sameAs(now, op.base)) out.push(shown);
    } else {
      if (now?.kind !== 'file') { out.push(`${shown} (no such registry hive)`); continue; }
      for (const k of registryConflicts(await readHive(host), op.changes)) out.push(`${shown}:${k}`);
    }
  }
  return out;
}

/** the directory a path is written in resolves inside the volume (a guest's absolute link must never lead to the host) */
async function insideVolume(v: Volume, host: string): Promise<boolean> {
  // the volume's own root (an op on '/': its times or mode changed) has no directory in the volume
  if (resolve(host) === v.dir) return true;
  let dir = dirname(host);
  // the nearest existing ancestor decides: what is missing below it is created by the delta
  for (;;) {
    const real = await realpath(dir).catch(() => undefined);
    if (real) return real === v.dir || real.startsWith(v.dir + '/');
    if (dir === v.dir || dir === '/') return false;
    dir = dirname(dir);
  }
}

async function writeOps(delta: DeltaFile, vols: Volumes, work: string, force: boolean): Promise<void> {
  const ops = delta.manifest.ops;
  const host = (op: Op) => join(volumeOf(vols, op.volume)!.dir, op.path);
  // NTFS keeps ACLs, not modes and owners (ntfs-3g's are made up); FAT has neither
  const noUnixMeta = (op: Op) => ['ntfs', 'vfat'].includes(volumeOf(vols, op.volume)!.type);
  // a FAT volume is an unpacked copy: what changes in it is also written to the volume with mtools
  const fat = (op: Op) => { const v = volumeOf(vols, op.volume)!; return v.type === 'vfat' ? v.fs.dev : undefined; };
  // a directory the delta does not name keeps its times: saved before its entries change, put back at the end
  const named = new Set(ops.filter(o => o.op !== 'remove' && o.op !== 'registry' && o.new.kind === 'dir').map(o => `${o.volume}\0${o.path}`));
  const parents = new Map<string, { host: string; atime: string; mtime: string }>();
  for (const op of ops) {
    const parent = posix.dirname(op.path);
    const key = `${op.volume}\0${parent}`;
    if (parent === op.path || named.has(key) || parents.has(key)) continue;
    const st = await lstat(join(volumeOf(vols, op.volume)!.dir, parent), { bigint: true }).catch(() => undefined);
    if (st?.isDirectory()) parents.set(key, { host: join(volumeOf(vols, op.volume)!.dir, parent), atime: String(st.atimeNs), mtime: String(st.mtimeNs) });
  }
  // removals deepest first, then additions and changes parents first, then the registry, then directory times
  const pending = new Pending();
  /** files this apply wrote → their sha256 (undefined: merged text) */
  const written = new Map<string, string | undefined>();
  const removes = ops.filter(o => o.op === 'remove').sort((x, y) => y.path.localeCompare(x.path));
  for (const op of removes) {
    await rm(host(op), { recursive: true, force: true });
    if (fat(op)) await fatWrite(fat(op)!, op);
  }
  const writes = ops.filter((o): o is Extract<Op, { op: 'add' | 'change' }> => o.op === 'add' || o.op === 'change')
    .sort((x, y) => x.path < y.path ? -1 : x.path > y.path ? 1 : 0);
  for (const op of writes) {
    const h = host(op);
    if (!(await insideVolume(volumeOf(vols, op.volume)!, h))) throw deltaConflict(delta.file, [displayPath(op.volume, op.path)]);
    const n = op.new;
    if (n.kind === 'dir') {
      await mkdir(h, { recursive: true });
    } else if (n.kind === 'symlink') {
      if (op.op === 'add' || op.aspects.includes('content')) {
        await rm(h, { force: true });
        await symlink(n.link!, h);
      }
    } else if (n.kind === 'file' && await linkToGroup(h, n, join(volumeOf(vols, op.volume)!.dir, n.linkGroup ?? ''), written)) {
      // linked to its group's first name, as in the image the delta was made from
    } else if (n.kind === 'file' && n.blob) {
      // --force over a file that is not the base: the line edits go into the target's own text
      let merged: string | undefined;
      if (force && op.op === 'change' && op.lines && op.baseBlob) {
        const now = await entryState(h);
        if (now?.kind === 'file' && now.sha256 !== op.base.sha256 && now.sha256 !== n.blob) {
          merged = applyLineEdits(await readFile(h, 'utf8'), (await readBlob(delta, op.baseBlob)).toString('utf8'), op.lines);
        }
      }
      // an existing file is rewritten in place (its directory's times stay as they are), unless it has
      // other names: those keep their bytes, and the group's own names are linked to this one afterwards
      const st = await lstat(h).catch(() => undefined);
      if (st && (!st.isFile() || st.nlink > 1)) await rm(h, { recursive: true, force: true });
      if (merged !== undefined) await writeFile(h, merged);
      else await copyBlob(delta, n.blob, h);
      written.set(h, merged === undefined ? n.blob : undefined);
    }
    if (fat(op)) await fatWrite(fat(op)!, op, h);
    await setMeta(h, n, noUnixMeta(op), op.op === 'change' && op.aspects.includes('xattrs'), pending);
  }
  for (const op of ops) {
    if (op.op !== 'registry') continue;
    await mergeRegistry(host(op), op.changes, join(work, 'merge.reg'));
  }
  const dirs = writes.filter(o => o.new.kind === 'dir').sort((x, y) => y.path.localeCompare(x.path));
  // an addition or a removal changed its parent's times: put back those the delta recorded, deepest first
  for (const op of dirs) pending.time(host(op), op.new);
  for (const p of parents.values()) pending.time(p.host, p);
  await pending.flush(work);
}

/**
 * A file of a hard-link group that is not the group's first name becomes
 * another name of that file when the first name holds what this one should
 * (its blob, or, for a change of metadata only, its bytes now). False: it is
 * written on its own (the first name is missing or holds other bytes).
 */
async function linkToGroup(h: string, n: NewState, first: string, written: Map<string, string | undefined>): Promise<boolean> {
  if (!n.linkGroup || first === h) return false;
  const st = await lstat(first).catch(() => undefined);
  if (!st?.isFile()) return false;
  const firstSha = written.has(first) ? written.get(first) : await sha256File(first);
  const want = n.blob ?? (await entryState(h))?.sha256;
  if (!firstSha || firstSha !== want) return false;
  const now = await lstat(h).catch(() => undefined);
  if (now && now.ino === st.ino && now.dev === st.dev) return true;
  await rm(h, { recursive: true, force: true });
  await link(first, h);
  return true;
}

/**
 * Times to the nanosecond for many paths in one process: node's utimes takes
 * seconds as a double and loses the last digits, touch is one process per
 * time. Python's os.utime takes integer nanoseconds (python3 is a Ferry
 * dependency, scripts/setup.sh). Links are not followed.
 */
const UTIME_PY = 'import json,os,sys\nfor p,a,m in json.load(sys.stdin): os.utime(p, ns=(int(a), int(m)), follow_symlinks=False)\n';

class Pending {
  readonly times: [string, string, string][] = [];
  readonly xattrs: string[] = [];
  time(h: string, t: { atime: string; mtime: string }) { this.times.push([h, t.atime, t.mtime]); }
  async flush(work: string): Promise<void> {
    if (this.xattrs.length) {
      const file = join(work, 'xattrs.dump');
      await writeFile(file, this.xattrs.join('\n') + '\n');
      await run('setfattr', ['-h', `--restore=${file}`]);
    }
    if (this.times.length) await run('python3', ['-c', UTIME_PY], { input: JSON.stringify(this.times) });
  }
}

/** a path as getfattr/setfattr dumps write it: unusual bytes as \ooo */
const dumpPath = (p: string) => [...Buffer.from(p, 'utf8')].map(b => b <= 0x20 || b === 0x5c || b >= 0x7f ? '\\' + b.toString(8).padStart(3, '0') : String.fromCharCode(b)).join('');

/**
 * One operation onto a FAT volume (dev) through mtools, after it was done on
 * the unpacked copy (h): directories made, files copied with their mtime
 * (mcopy -m), entries removed. FAT has no links, modes or owners.
 */
async function fatWrite(dev: string, op: Op, h?: string): Promise<void> {
  const at = `::${op.path}`;
  if (op.op === 'remove') {
    await mtools(op.base.kind === 'dir' ? 'mdeltree' : 'mdel', ['-i', dev, at]);
    return;
  }
  if (op.op === 'registry' || !h) return;
  const n = op.new;
  if (n.kind === 'dir') {
    if (op.op === 'add') await mtools('mmd', ['-i', dev, at]);
  } else if (n.kind === 'file' && (op.op === 'add' || op.aspects.includes('content') || op.aspects.includes('times'))) {
    await utimes(h, Number(BigInt(n.atime) / 1_000_000_000n), Number(BigInt(n.mtime) / 1_000_000_000n));
    await mtools('mcopy', ['-o', '-m', '-i', dev, h, at]);
  }
}

async function setMeta(h: string, n: NewState, noUnixMeta: boolean, xattrsChanged: boolean, pending: Pending): Promise<void> {
  if (!noUnixMeta) {
    await lchown(h, n.uid, n.gid);
    if (n.kind !== 'symlink') await chmod(h, n.mode);
    if (xattrsChanged) {
      const now = await run('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', h], { okCodes: [1] });
      for (const m of now.stdout.matchAll(/^([^#=\n][^=\n]*)=/gm)) if (!(m[1] in (n.xattrs ?? {}))) await run('setfattr', ['-h', '-x', m[1], h]);
    }
    const xs = Object.entries(n.xattrs ?? {});
    if (xs.length) pending.xattrs.push(`# file: ${dumpPath(h)}`, ...xs.map(([k, v]) => `${k}=${v}`), '');
  }
  pending.time(h, n);
}

export function formatApply(r: ApplyResult): string {
  const out = r.operations.map(o => `${o.op.padEnd(8)} ${o.path}`);
  if (r.forced.length) out.push(`forced over ${r.forced.length} conflict(s): ${r.forced.join(', ')}`);
  out.push(r.dryRun ? `dry run: ${r.operations.length} operations, nothing written` : `${r.operations.length} operations applied into ${r.overlay} (${r.image} unchanged)`);
  return out.join('\n') + '\n';
}
