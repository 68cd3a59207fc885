// `ferry diff A B`: two images compared volume by volume (volumes.ts), file by
// file (tree.ts), and inside the configuration files Ferry knows by their
// parts (parts.ts). With --delta the difference is written, with the new
// bytes, into a delta file (format.ts) while both images are still open.
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { openSource } from '../sources/open.js';
import { workDir } from '../blockdev/mount.js';
import { notRoot, targetExists } from '../errors.js';
import { GuestFs } from '../inspect/guest-fs.js';
import { readPackages } from '../inspect/linux/packages.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { withScope, type Scope } from '../util/scope.js';
import { writeDelta, type BaseState, type DeltaManifest, type NewState, type Op } from './format.js';
import { TEXT_LIMIT, isText, lineEdits, packageChanges, readHive, registryChanges, type LineEdit, type PackageChange, type RegChange } from './parts.js';
import { compareTrees, globMatcher, linkLeaders, sha256File, walkTree, type Entry, type TreeChange } from './tree.js';
import { displayPath, openVolumes, type OsFamily, type Volume, type Volumes } from './volumes.js';

export interface FileDiff { volume: string; path: string; change: TreeChange['change']; kind: string; aspects?: string[] }
export interface DiffResult {
  a: string;
  b: string;
  osFamily: OsFamily;
  files: FileDiff[];
  /** text files under /etc: their line edits */
  lines: { path: string; edits: LineEdit[] }[];
  packages: PackageChange[];
  registry: { path: string; changes: RegChange[] }[];
  /** entries whose only difference is their times (counted, not listed) */
  timesOnly: number;
  /** volumes not compared, and why */
  skipped: string[];
  delta?: { file: string; ops: number; blobs: number; bytes: number };
}

const HIVES = /^\/(?:[^/]+)\/system32\/config\/(system|software|sam|security|default)$/i;
export const isHivePath = (v: Volume, path: string) => v.name === 'C:' && !!v.systemRoot && path.toLowerCase().startsWith(v.systemRoot.toLowerCase() + '/') && HIVES.test(path);

export interface DiffRequest { a: string; b: string; json?: boolean; delta?: string; paths?: string[] }

export async function diffImages(r: DiffRequest): Promise<DiffResult> {
  if (process.getuid?.() !== 0) throw notRoot();
  if (r.delta && await stat(r.delta).catch(() => undefined)) throw targetExists(r.delta);
  return withScope(async scope => {
    const work = await workDir(scope);
    const da = await openSource(scope, parseEndpoint(r.a), join(work, 'a'), 'a');
    const db = await openSource(scope, parseEndpoint(r.b), join(work, 'b'), 'b');
    const va = await openVolumes(scope, da, join(work, 'a'));
    const vb = await openVolumes(scope, db, join(work, 'b'));
    return compareImages(scope, r, va, vb, work);
  });
}

async function compareImages(_scope: Scope, r: DiffRequest, va: Volumes, vb: Volumes, work: string): Promise<DiffResult> {
  const include = globMatcher(r.paths ?? []);
  const result: DiffResult = { a: r.a, b: r.b, osFamily: vb.family, files: [], lines: [], packages: [], registry: [], timesOnly: 0, skipped: [] };
  const ops: Op[] = [];
  const blobs = new Map<string, { size: number; from: string }>();
  const addBlob = async (host: string, size: number) => { const sha = await sha256File(host); blobs.set(sha, { size, from: host }); return sha; };
  for (const b of vb.volumes) {
    const a = va.volumes.find(v => v.name === b.name);
    if (!a) { result.skipped.push(`${b.name}: only in ${r.b}`); continue; }
    if ((a.type === 'vfat') !== (b.type === 'vfat')) { result.skipped.push(`${b.name}: FAT in one image, ${a.type === 'vfat' ? b.type : a.type} in the other`); continue; }
    const [ta, tb] = await Promise.all([walkTree(a.dir), walkTree(b.dir)]);
    const leaders = linkLeaders(tb);
    const changes = (await compareTrees(a.dir, ta, b.dir, tb, p => include(displayPath(b.name, p))))
      // FAT is read from an unpacked copy: its directories' times are the unpacking's, not the volume's
      .filter(c => !(b.type === 'vfat' && c.change === 'changed' && c.kind === 'dir' && c.aspects!.every(x => x === 'times')));
    for (const c of changes) {
      const shown = displayPath(b.name, c.path);
      if (c.change === 'changed' && c.a!.kind === 'file' && c.b!.kind === 'file' && c.aspects!.includes('content') && isHivePath(b, c.path)) {
        const regChanges = registryChanges(await readHive(join(a.dir, c.path)), await readHive(join(b.dir, c.path)));
        if (regChanges.length) {
          result.registry.push({ path: shown, changes: regChanges });
          ops.push({ op: 'registry', volume: b.name, path: c.path, changes: regChanges });
        }
        continue;
      }
      const onlyTimes = c.change === 'changed' && c.aspects!.every(x => x === 'times');
      if (onlyTimes) result.timesOnly++;
      else result.files.push({ volume: b.name, path: shown, change: c.change, kind: c.kind, ...(c.aspects ? { aspects: c.aspects } : {}) });
      if (!r.delta && !(b.name.startsWith('/') && shown.startsWith('/etc/') && c.change === 'changed' && c.aspects!.includes('content'))) continue;
      if (c.kind === 'other' || c.a?.kind === 'other') { result.skipped.push(`${shown}: a device node, FIFO or socket is not carried in a delta`); continue; }
      const baseOf = async (e: Entry): Promise<BaseState> => ({ kind: e.kind, ...(e.kind === 'file' ? { sha256: await sha256File(join(a.dir, c.path)) } : {}), ...(e.link !== undefined ? { link: e.link } : {}) });
      const newOf = async (e: Entry, withData: boolean): Promise<NewState> => ({
        kind: e.kind, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, atime: e.atime,
        ...(e.link !== undefined ? { link: e.link } : {}), ...(e.xattrs ? { xattrs: e.xattrs } : {}),
        ...(withData && e.kind === 'file' ? { blob: await addBlob(join(b.dir, c.path), e.size) } : {}),
        ...(e.kind === 'file' && leaders.has(c.path) ? { linkGroup: leaders.get(c.path) } : {}),
      });
      if (c.change === 'removed') { ops.push({ op: 'remove', volume: b.name, path: c.path, base: await baseOf(c.a!) }); continue; }
      if (c.change === 'added') { ops.push({ op: 'add', volume: b.name, path: c.path, new: await newOf(c.b!, true) }); continue; }
      if (c.aspects!.includes('type')) {
        ops.push({ op: 'remove', volume: b.name, path: c.path, base: await baseOf(c.a!) }, { op: 'add', volume: b.name, path: c.path, new: await newOf(c.b!, true) });
        continue;
      }
      const content = c.aspects!.includes('content');
      const op: Extract<Op, { op: 'change' }> = { op: 'change', volume: b.name, path: c.path, aspects: c.aspects!, base: content ? await baseOf(c.a!) : { kind: c.a!.kind }, new: await newOf(c.b!, content) };
      if (content && c.kind === 'file' && c.a!.kind === 'file' && b.name.startsWith('/') && shown.startsWith('/etc/') && c.a!.size <= TEXT_LIMIT && c.b!.size <= TEXT_LIMIT) {
        const [x, y] = await Promise.all([readFile(join(a.dir, c.path)), readFile(join(b.dir, c.path))]);
        const edits = isText(x) && isText(y) ? lineEdits(x.toString('utf8'), y.toString('utf8')) : undefined;
        if (edits) {
          result.lines.push({ path: shown, edits });
          op.lines = edits;
          // --force applies the edits to a file that is not the base: the base text says where they go
          op.baseBlob = await addBlob(join(a.dir, c.path), c.a!.size);
        }
      }
      ops.push(op);
    }
  }
  for (const a of va.volumes) if (!vb.volumes.some(v => v.name === a.name)) result.skipped.push(`${a.name}: only in ${r.a}`);
  if (va.family === 'linux' && vb.family === 'linux') {
    const guest = (v: Volumes) => new GuestFs(v.volumes.filter(x => x.name.startsWith('/')).map(x => ({ mountpoint: x.name, dir: x.dir })));
    const [pa, pb] = await Promise.all([readPackages(guest(va), join(work, 'pa')), readPackages(guest(vb), join(work, 'pb'))]);
    result.packages = packageChanges(pa.list, pb.list);
  }
  if (r.delta) {
    const m: Omit<DeltaManifest, 'blobs' | 'dataSize' | 'format' | 'version'> = {
      createdAt: new Date().toISOString(), osFamily: vb.family, base: { image: r.a }, target: { image: r.b }, packages: result.packages, ops,
    };
    try {
      const written = await writeDelta(r.delta, m, blobs);
      result.delta = { file: r.delta, ops: ops.length, blobs: blobs.size, bytes: written.dataSize };
    } catch (e) {
      await rm(r.delta, { force: true });
      throw e;
    }
  }
  return result;
}

export function formatDiff(d: DiffResult): string {
  const out = [`--- ${d.a}`, `+++ ${d.b}`];
  const word = { added: 'added  ', removed: 'removed', changed: 'changed' } as const;
  const lines = new Map(d.lines.map(l => [l.path, l.edits]));
  for (const f of d.files) {
    out.push(`${word[f.change]} ${f.path}${f.kind !== 'file' ? ` (${f.kind})` : ''}${f.aspects ? `: ${f.aspects.join(', ')}` : ''}`);
    for (const e of lines.get(f.path) ?? []) out.push(`    ${e.op}${e.line}`);
  }
  for (const p of d.packages) out.push(p.change === 'added' ? `package added   ${p.name} ${p.to}` : p.change === 'removed' ? `package removed ${p.name} ${p.from}` : `package version ${p.name} ${p.from} → ${p.to}`);
  for (const h of d.registry) {
    out.push(`registry ${h.path}:`);
    for (const c of h.changes) {
      if (c.op === 'add-key') out.push(`    + [${c.key}]`);
      else if (c.op === 'remove-key') out.push(`    - [${c.key}]`);
      else if (c.op === 'remove') out.push(`    - ${c.key}\\${c.name || '@'}`);
      else out.push(`    ${c.base ? '~' : '+'} ${c.key}\\${c.name || '@'} = ${showReg(c.value)}`);
    }
  }
  if (d.timesOnly) out.push(`${d.timesOnly} entries differ only in their times`);
  for (const s of d.skipped) out.push(`not compared: ${s}`);
  if (d.delta) out.push(`delta written to ${d.delta.file}: ${d.delta.ops} operations, ${d.delta.blobs} blobs, ${d.delta.bytes} bytes of data`);
  if (!d.files.length && !d.packages.length && !d.registry.length) out.push('no differences');
  return out.join('\n') + '\n';
}

export function showReg(v: { type: number; hex: string }): string {
  const b = Buffer.from(v.hex, 'hex');
  if ((v.type === 1 || v.type === 2) && b.length % 2 === 0) return JSON.stringify(b.toString('utf16le').replace(/\0+$/, ''));
  if (v.type === 4 && b.length === 4) return `dword:${b.readUInt32LE(0)}`;
  if (v.type === 7) return JSON.stringify(b.toString('utf16le').split('\0').filter(Boolean));
  return `hex(${v.type}):${v.hex}`;
}
