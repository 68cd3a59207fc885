// `ferry verify`: is the target equivalent to the source? Same partition
// table (ids, types, names, flags), same boot code, and per partition the
// same file system identity and the same tree — or the same bytes where
// Ferry copied blocks.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { open } from 'node:fs/promises';
import { mountFs } from '../blockdev/mount.js';
import type { OpenDisk } from '../blockdev/disk.js';
import { readBytes } from '../blockdev/disk.js';
import { gapRange } from '../convert/boot-code.js';
import { extractVfat } from '../fs/vfat.js';
import { attachLoop } from '../blockdev/loop.js';
import { readSourceLayout, type SourcePart, type Volume } from '../layout/source-parts.js';
import { withScope } from '../util/scope.js';
import { silentProgress, type ProgressSink } from '../util/progress.js';
import { compareTrees, contentDifferences, walkTree, type WalkOptions } from './tree.js';

export interface FsVerdict {
  number: number; /** vg/lv when the file system is in a logical volume */ lv?: string; fs?: string; uuid?: string; label?: string; entries?: number; differences: number;
  /** how its contents were judged: its files walked on both sides, or the copy's own proof (its used blocks hashed as read and read back) */
  by?: 'files' | 'copy proof';
}
/** How verify names a volume (work dirs, differences, the proven set): p<N>, or p<N>-<LV> for a logical volume */
export const volumeTag = (partition: number, lv?: string) => lv === undefined ? `p${partition}` : `p${partition}-${lv}`;

export interface VerifyResult { equivalent: boolean; differences: string[]; filesystems: FsVerdict[] }

async function hashRange(file: string, length: number): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  try {
    for (let pos = 0; pos < length;) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
      if (!bytesRead) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally { await fh.close(); }
  return h.digest('hex');
}

/** Two volumes (partitions or logical volumes) given as [offset, length] on their disks: same identity, same tree, or the same bytes where Ferry copied blocks. */
async function compareVolumes(work: string, source: OpenDisk, target: OpenDisk, a: Volume, ra: [number, number][], b: Volume, rb: [number, number], where: string, tag: string,
  onBytes: (n: number) => void, proven: Set<string>): Promise<{ diffs: string[]; entries?: number; by?: FsVerdict['by'] }> {
  return withScope(async scope => {
  const attach = (file: string, [offset, size]: [number, number]) => attachLoop(scope, file, { offset, size, readOnly: true });
  if (a.method === 'blocks') {
    const len = ra.reduce((n, r) => n + r[1], 0);
    if (rb[1] < len) return { diffs: [`${where}: target is smaller than the block-copied source`] };
    // piece by piece: a multi-range source LV was copied into one range on the target
    let at = 0;
    for (const r of ra) {
      const same = (await hashRange(await attach(source.file, r), r[1])) === (await hashRange(await attach(target.file, [rb[0] + at, r[1]]), r[1]));
      if (!same) return { diffs: [`${where}: block contents differ`] };
      at += r[1];
    }
    return { diffs: [] };
  }
  const devA = await attach(source.file, ra[0]);
  const devB = await attach(target.file, rb);
  const fa = a.facts!, fb = b.facts;
  if (!fb) return { diffs: [`${where}: target has no ${fa.type} file system`] };
  const ids: string[] = [];
  for (const k of ['type', 'uuid', 'label'] as const) if (fa[k] !== fb[k]) ids.push(`${where}: ${k} ${fa[k]} → ${fb[k]}`);
  const feats = (f: typeof fa) => a.module!.features?.(f).join(' ') ?? '';
  if (feats(fa) !== feats(fb)) ids.push(`${where}: ${fa.type} features ${feats(fa)} → ${feats(fb)}`);
  if (ids.length) return { diffs: ids };
  const how = a.module!.verifyAs;
  if (how.kind === 'signature') return { diffs: [] };
  // its used blocks were proved equal as they were copied; the grow after it is the file system's own tool
  if (proven.has(tag)) return { diffs: [], by: 'copy proof' };
    const sd = join(work, `verify-src-${tag}`), dd = join(work, `verify-dst-${tag}`);
    const opts: WalkOptions = { fatOnly: how.kind === 'fat' };
    if (how.kind === 'fat') {
      await extractVfat(devA, sd);
      await extractVfat(devB, dd);
    } else {
      await mountFs(scope, devA, sd, how.fsType ?? fa.type, ['ro', ...how.options(fa.type)]);
      await mountFs(scope, devB, dd, how.fsType ?? fa.type, ['ro', ...how.options(fa.type)]);
    }
    // module extras (inode flags, subvolumes) read the same mounts alongside the walk
    const extra = how.kind === 'mount' && a.module!.compareExtra ? a.module!.compareExtra(sd, dd) : Promise.resolve([]);
    extra.catch(() => undefined);
    const [ta, tb] = await Promise.all([walkTree(sd, opts), walkTree(dd, opts)]);
    const diffs = [...compareTrees(ta, tb, opts, `${tag}:`), ...await contentDifferences(sd, ta, dd, tb, `${tag}:`, onBytes)];
    diffs.push(...(await extra).map(d => `${tag}: ${d}`));
    return { diffs, entries: ta.size, by: 'files' };
  });
}

/** Two LVM physical volumes: the same VG (name, UUIDs, tags), then each LV like a partition. */
async function compareLvm(work: string, source: OpenDisk, target: OpenDisk, a: SourcePart, b: SourcePart, onBytes: (n: number) => void, proven: Set<string>): Promise<{ diffs: string[]; verdicts: FsVerdict[] }> {
  const where = `partition ${a.part.number}`;
  const va = a.lvm!.vg, vb = b.lvm?.vg;
  if (!vb || b.method !== 'lvm') return { diffs: [`${where}: target has no LVM volume group ${va.name}`], verdicts: [] };
  const diffs: string[] = [];
  const ident = (vg: typeof va) => ({ name: vg.name, uuid: vg.id, pv: vg.pvs[0].id, tags: vg.tags.join(','), extentSize: vg.extentSize });
  for (const [k, x] of Object.entries(ident(va))) { const y = ident(vb)[k as keyof ReturnType<typeof ident>]; if (x !== y) diffs.push(`${where}: volume group ${k} ${x} → ${y}`); }
  const verdicts: FsVerdict[] = [];
  for (const la of a.lvm!.lvs) {
    const lw = `${where}: logical volume ${va.name}/${la.lv.name}`;
    const lb = b.lvm!.lvs.find(l => l.lv.name === la.lv.name);
    if (!lb) { diffs.push(`${lw}: missing in target`); continue; }
    if (la.lv.id !== lb.lv.id) diffs.push(`${lw}: uuid ${la.lv.id} → ${lb.lv.id}`);
    if (la.lv.tags.join(',') !== lb.lv.tags.join(',')) diffs.push(`${lw}: tags ${la.lv.tags.join(',')} → ${lb.lv.tags.join(',')}`);
    if (lb.ranges.length !== 1) { diffs.push(`${lw}: target is not one range`); continue; }
    const r = await compareVolumes(work, source, target, la, la.ranges, lb, lb.ranges[0], lw, volumeTag(a.part.number, la.lv.name), onBytes, proven);
    diffs.push(...r.diffs);
    verdicts.push({ number: a.part.number, lv: `${va.name}/${la.lv.name}`, fs: la.facts?.type ?? la.fsType, uuid: la.facts?.uuid, label: la.facts?.label, entries: r.entries, differences: r.diffs.length, ...(r.by ? { by: r.by } : {}) });
  }
  for (const lb of b.lvm!.lvs) if (!a.lvm!.lvs.some(l => l.lv.name === lb.lv.name)) diffs.push(`${where}: logical volume ${vb.name}/${lb.lv.name} only in target`);
  return { diffs, verdicts };
}

/**
 * layoutChanged: --firmware uefi rebuilt an MBR disk as GPT with a new ESP; only the file systems (paired by number) must be equal.
 * proven: volumes (p<N>, p<N>-<LV>) whose used-block copy proved itself (convert/rebuild.ts provenVolumes): their identity is
 * checked, their files are not walked again.
 */
export async function verifyDisks(source: OpenDisk, target: OpenDisk, work: string, progress: ProgressSink = silentProgress, opts: { layoutChanged?: boolean; proven?: Set<string> } = {}): Promise<VerifyResult> {
  const proven = opts.proven ?? new Set<string>();
  const [la, lb] = [await readSourceLayout(source.file, source.size, work), await readSourceLayout(target.file, target.size, work)];
  let compared = 0;
  // the bytes verify will read (a proven volume's files are not read again)
  const toRead = (v: Volume, tag: string) => proven.has(tag) ? 0 : v.facts?.usedBytes ?? 0;
  progress.phase('verify', la.parts.reduce((n, p) => n + toRead(p, volumeTag(p.part.number)) + (p.lvm?.lvs.reduce((m, l) => m + toRead(l, volumeTag(p.part.number, l.lv.name)), 0) ?? 0), 0));
  const onBytes = (n: number) => progress.update(compared += n);
  const diffs: string[] = [];
  const ta = la.table, tb = lb.table;
  if (!!ta !== !!tb) diffs.push(`partition table ${ta?.label ?? 'none'} → ${tb?.label ?? 'none'}`);
  if (ta && tb && !opts.layoutChanged) {
    if (ta.label !== tb.label) diffs.push(`partition table ${ta.label} → ${tb.label}`);
    if (ta.id.toLowerCase() !== tb.id.toLowerCase()) diffs.push(`disk identifier ${ta.id} → ${tb.id}`);
    const code = [await readBytes(source.file, 0, 440), await readBytes(target.file, 0, 440)];
    if (!code[0].equals(code[1])) diffs.push('MBR boot code differs');
    const gap = gapRange(ta);
    if (gap && !(await readBytes(source.file, gap.offset, gap.length)).equals(await readBytes(target.file, gap.offset, gap.length))) {
      diffs.push('boot loader gap after the partition table differs');
    }
  }
  const ss = ta?.sectorSize ?? 512;
  const filesystems: FsVerdict[] = [];
  for (const a of la.parts) {
    const b = lb.parts.find(p => p.part.number === a.part.number);
    const where = `partition ${a.part.number}`;
    if (!b && opts.layoutChanged && a.method === 'container') continue;
    if (!b) { diffs.push(`${where}: missing in target`); continue; }
    for (const k of opts.layoutChanged ? [] : ['type', 'uuid', 'name', 'attrs', 'bootable'] as const) {
      const x = a.part[k], y = b.part[k];
      if (String(x ?? '').toLowerCase() !== String(y ?? '').toLowerCase()) diffs.push(`${where}: ${k} ${x ?? '-'} → ${y ?? '-'}`);
    }
    if (a.method === 'container') continue;
    if (a.method === 'lvm') {
      const r = await compareLvm(work, source, target, a, b, onBytes, proven);
      diffs.push(...r.diffs);
      filesystems.push(...r.verdicts);
      continue;
    }
    const range = (p: SourcePart): [number, number] => [p.part.start * ss, p.part.size * ss];
    const r = await compareVolumes(work, source, target, a, [range(a)], b, range(b), `partition ${a.part.number}`, volumeTag(a.part.number), onBytes, proven);
    diffs.push(...r.diffs);
    filesystems.push({ number: a.part.number, fs: a.facts?.type ?? a.fsType, uuid: a.facts?.uuid, label: a.facts?.label, entries: r.entries, differences: r.diffs.length, ...(r.by ? { by: r.by } : {}) });
  }
  for (const b of lb.parts) if (!opts.layoutChanged && !la.parts.some(a => a.part.number === b.part.number)) diffs.push(`partition ${b.part.number}: only in target`);
  progress.end();
  return { equivalent: diffs.length === 0, differences: diffs, filesystems };
}
