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
import { attachPart, readSourceLayout, type SourcePart } from '../layout/source-parts.js';
import { withScope } from '../util/scope.js';
import { silentProgress, type ProgressSink } from '../util/progress.js';
import { compareTrees, contentDifferences, walkTree, type WalkOptions } from './tree.js';

export interface FsVerdict { number: number; fs?: string; uuid?: string; label?: string; entries?: number; differences: number }
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

async function compareParts(work: string, source: OpenDisk, target: OpenDisk, a: SourcePart, b: SourcePart, ss: number,
  onBytes: (n: number) => void): Promise<{ diffs: string[]; entries?: number }> {
  const n = a.part.number;
  const where = `partition ${n}`;
  return withScope(async scope => {
  const devA = await attachPart(scope, source.file, a.part, ss);
  const devB = await attachPart(scope, target.file, b.part, ss);
  if (a.method === 'blocks') {
    const len = a.part.size * ss;
    if (b.part.size < a.part.size) return { diffs: [`${where}: target is smaller than the block-copied source`] };
    return (await hashRange(devA, len)) === (await hashRange(devB, len)) ? { diffs: [] } : { diffs: [`${where}: block contents differ`] };
  }
  const fa = a.facts!, fb = b.facts;
  if (!fb) return { diffs: [`${where}: target has no ${fa.type} file system`] };
  const ids: string[] = [];
  for (const k of ['type', 'uuid', 'label'] as const) if (fa[k] !== fb[k]) ids.push(`${where}: ${k} ${fa[k]} → ${fb[k]}`);
  const feats = (f: typeof fa) => a.module!.features?.(f).join(' ') ?? '';
  if (feats(fa) !== feats(fb)) ids.push(`${where}: ${fa.type} features ${feats(fa)} → ${feats(fb)}`);
  if (ids.length) return { diffs: ids };
  const how = a.module!.verifyAs;
  if (how.kind === 'signature') return { diffs: [] };
    const sd = join(work, `verify-src-${n}`), dd = join(work, `verify-dst-${n}`);
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
    const diffs = [...compareTrees(ta, tb, opts, `p${n}:`), ...await contentDifferences(sd, ta, dd, tb, `p${n}:`, onBytes)];
    diffs.push(...(await extra).map(d => `p${n}: ${d}`));
    return { diffs, entries: ta.size };
  });
}

/** layoutChanged: --firmware uefi rebuilt an MBR disk as GPT with a new ESP; only the file systems (paired by number) must be equal */
export async function verifyDisks(source: OpenDisk, target: OpenDisk, work: string, progress: ProgressSink = silentProgress, opts: { layoutChanged?: boolean } = {}): Promise<VerifyResult> {
  const [la, lb] = [await readSourceLayout(source.file, source.size, work), await readSourceLayout(target.file, target.size, work)];
  let compared = 0;
  progress.phase('verify', la.parts.reduce((n, p) => n + (p.facts?.usedBytes ?? 0), 0));
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
    const r = await compareParts(work, source, target, a, b, ss, onBytes);
    diffs.push(...r.diffs);
    filesystems.push({ number: a.part.number, fs: a.facts?.type ?? a.fsType, uuid: a.facts?.uuid, label: a.facts?.label, entries: r.entries, differences: r.diffs.length });
  }
  for (const b of lb.parts) if (!opts.layoutChanged && !la.parts.some(a => a.part.number === b.part.number)) diffs.push(`partition ${b.part.number}: only in target`);
  progress.end();
  return { equivalent: diffs.length === 0, differences: diffs, filesystems };
}
