// LVM2 physical volumes as layout. A volume group's metadata is read and
// written with LVM's own tools, never activated (this host has no
// device-mapper): a linear logical volume is a list of extent ranges on its
// PV, so a single-range LV is just a loop device at an offset. The target's
// VG keeps every name, UUID and tag, and is planned so each LV is one range.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { doesNotFit, lvmInvalid } from '../errors.js';
import { run } from '../util/exec.js';

// --- LVM's text metadata format (what vgcfgbackup writes and vgcfgrestore reads)

export type LvmValue = string | number | LvmValue[] | LvmNode;
export interface LvmNode { [key: string]: LvmValue }

const TOKEN = /\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|([{}[\]=,])|([^\s{}[\]=,#"]+)/y;

export function parseLvmText(text: string): LvmNode {
  const toks: { s?: string; p?: string; w?: string }[] = [];
  TOKEN.lastIndex = 0;
  for (let m; TOKEN.lastIndex < text.length && (m = TOKEN.exec(text));) {
    if (m[1] !== undefined) toks.push({ s: m[1].replace(/\\(.)/g, '$1') });
    else if (m[2]) toks.push({ p: m[2] });
    else if (m[3]) toks.push({ w: m[3] });
  }
  let i = 0;
  const value = (): LvmValue => {
    const t = toks[i++];
    if (t?.s !== undefined) return t.s;
    if (t?.w !== undefined) return /^-?\d+$/.test(t.w) ? Number(t.w) : t.w;
    if (t?.p === '[') {
      const arr: LvmValue[] = [];
      while (toks[i]?.p !== ']') { if (toks[i]?.p === ',') i++; else arr.push(value()); }
      i++;
      return arr;
    }
    throw new Error(`LVM metadata: unexpected ${JSON.stringify(t)}`);
  };
  const section = (): LvmNode => {
    const node: LvmNode = {};
    while (i < toks.length && toks[i].p !== '}') {
      const key = toks[i++].w;
      if (key === undefined) throw new Error('LVM metadata: expected a name');
      if (toks[i]?.p === '{') { i++; node[key] = section(); i++; } else if (toks[i++]?.p === '=') node[key] = value();
      else throw new Error(`LVM metadata: expected = after ${key}`);
    }
    return node;
  };
  return section();
}

export function printLvmText(node: LvmNode, indent = ''): string {
  const val = (v: LvmValue): string => typeof v === 'number' ? String(v) : typeof v === 'string' ? JSON.stringify(v) : `[${(v as LvmValue[]).map(val).join(', ')}]`;
  return Object.entries(node).map(([k, v]) => typeof v === 'object' && !Array.isArray(v)
    ? `${indent}${k} {\n${printLvmText(v, indent + '\t')}${indent}}\n`
    : `${indent}${k} = ${val(v)}\n`).join('');
}

// --- the volume group of one PV

export interface LvSegment { startExtent: number; extentCount: number; type: string; stripes: [string, number][] }
export interface LogicalVolume { name: string; id: string; tags: string[]; extents: number; segments: LvSegment[] }
export interface PhysicalVolume { key: string; id: string; devSize: number; peStart: number; peCount: number }
export interface VolumeGroup {
  name: string; id: string; tags: string[];
  /** sectors of 512 bytes, as LVM's metadata counts */
  extentSize: number;
  pvs: PhysicalVolume[];
  lvs: LogicalVolume[];
  /** the whole metadata, for writing the target's VG alike */
  text: LvmNode;
}

const strs = (v: LvmValue | undefined) => (Array.isArray(v) ? v : []).map(String);

export function volumeGroupOf(text: LvmNode): VolumeGroup {
  const [name, vg] = Object.entries(text).find(([, v]) => typeof v === 'object' && !Array.isArray(v)) as [string, LvmNode];
  const pvs = Object.entries((vg.physical_volumes ?? {}) as LvmNode).map(([key, v]) => {
    const pv = v as LvmNode;
    return { key, id: String(pv.id), devSize: Number(pv.dev_size ?? 0), peStart: Number(pv.pe_start), peCount: Number(pv.pe_count) };
  });
  const lvs = Object.entries((vg.logical_volumes ?? {}) as LvmNode).map(([lvName, v]) => {
    const lv = v as LvmNode;
    const segments = Object.keys(lv).filter(k => /^segment\d+$/.test(k)).map(k => {
      const s = lv[k] as LvmNode;
      const flat = Array.isArray(s.stripes) ? s.stripes : [];
      const stripes: [string, number][] = [];
      for (let j = 0; j + 1 < flat.length; j += 2) stripes.push([String(flat[j]), Number(flat[j + 1])]);
      return { startExtent: Number(s.start_extent), extentCount: Number(s.extent_count), type: String(s.type), stripes };
    }).sort((a, b) => a.startExtent - b.startExtent);
    return { name: lvName, id: String(lv.id), tags: strs(lv.tags), extents: segments.reduce((n, s) => n + s.extentCount, 0), segments };
  });
  return { name, id: String(vg.id), tags: strs(vg.tags), extentSize: Number(vg.extent_size), pvs, lvs, text };
}

/** A private LVM configuration: no devices file, no udev, no archives or backups, locks in work; the host's /etc/lvm is neither read nor changed. */
async function lvmEnv(work: string): Promise<Record<string, string>> {
  const dir = join(work, 'lvm');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'lvm.conf'), [
    'devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 scan_lvs = 0 hints = "none" }',
    `global { locking_dir = "${dir}" }`,
    'backup { backup = 0 archive = 0 }',
    'activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }',
    '',
  ].join('\n'));
  return { LVM_SYSTEM_DIR: dir, LVM_SUPPRESS_FD_WARNINGS: '1' };
}

/** LVM's tools, each restricted to the one device meant. */
export async function lvm(work: string, cmd: string, dev: string, args: string[], okCodes?: number[]) {
  return run(cmd, ['--devices', dev, ...args], { env: await lvmEnv(work), okCodes });
}

/**
 * The VG of the PV on dev (a read-only loop over its partition), or undefined
 * for a PV in no VG. Only metadata is read: vgcfgbackup writes a file in work.
 */
export async function readVolumeGroup(dev: string, work: string): Promise<VolumeGroup | undefined> {
  const r = await lvm(work, 'pvs', dev, ['--reportformat', 'json', '--readonly', '-o', 'vg_name', dev], [5]);
  const vgName = r.exitCode === 0 ? (JSON.parse(r.stdout) as { report: { pv: { vg_name: string }[] }[] }).report[0]?.pv[0]?.vg_name : undefined;
  if (r.exitCode !== 0) throw lvmInvalid(dev, lastLines(r.stderr));
  if (!vgName) return undefined;
  const file = join(work, `vg-${vgName}-${dev.replace(/\W/g, '')}.txt`);
  const b = await lvm(work, 'vgcfgbackup', dev, ['-f', file, vgName], [5]);
  if (b.exitCode !== 0) throw lvmInvalid(dev, lastLines(b.stderr));
  return volumeGroupOf(parseLvmText(await readFile(file, 'utf8')));
}

const lastLines = (s: string) => s.trim().split('\n').filter(l => !/device-mapper|mapper\/control|libdevmapper/.test(l)).slice(-3).join('; ');

/** Where an LV lies on its PV, as [first extent, count] ranges in LV order; undefined unless every segment is linear. */
export function linearRanges(lv: LogicalVolume, pvKey: string): [number, number][] | undefined {
  const out: [number, number][] = [];
  for (const s of lv.segments) {
    if (s.type !== 'striped' || s.stripes.length !== 1 || s.stripes[0][0] !== pvKey) return undefined;
    const last = out.at(-1);
    if (last && last[0] + last[1] === s.stripes[0][1]) last[1] += s.extentCount;
    else out.push([s.stripes[0][1], s.extentCount]);
  }
  return out;
}

/** Why Ferry copies this VG's PV as blocks instead of rebuilding its LVs, or undefined when it rebuilds them. */
export function whyBlocks(vg: VolumeGroup): string | undefined {
  if (vg.pvs.length !== 1) return `volume group ${vg.name} spans ${vg.pvs.length} physical volumes`;
  const other = vg.lvs.find(lv => !linearRanges(lv, vg.pvs[0].key));
  return other ? `logical volume ${vg.name}/${other.name} has ${[...new Set(other.segments.map(s => s.type))].join('+')} segments, not linear ones` : undefined;
}

/** The PV must lie inside its partition: a header that points past it is refused before anything is read from the LVs. */
export function checkInside(vg: VolumeGroup, pv: PhysicalVolume, partSectors: number, where: string): void {
  const end = pv.peStart + pv.peCount * vg.extentSize;
  if (end > partSectors || pv.devSize > partSectors) {
    throw lvmInvalid(where, `physical volume ${pv.id} of ${vg.name} claims ${Math.max(end, pv.devSize)} sectors but its partition has ${partSectors}`);
  }
  for (const lv of vg.lvs) for (const s of lv.segments) for (const [key, pe] of s.stripes) {
    if (key === pv.key && pe + s.extentCount > pv.peCount) throw lvmInvalid(where, `logical volume ${vg.name}/${lv.name} reaches past the end of its physical volume`);
  }
}

// --- the target's VG

export interface LvSpace {
  lv: LogicalVolume;
  /** data: grows and shrinks; fixed: keeps its extent count */
  role: 'data' | 'fixed';
  /** extents the LV's file system needs at least (data only) */
  minExtents?: number;
}

export interface PlannedLv { lv: LogicalVolume; start: number; extents: number }

/** The smallest PV (sectors) that holds these LVs. */
export const minPvSectors = (vg: VolumeGroup, spaces: LvSpace[]) =>
  vg.pvs[0].peStart + spaces.reduce((n, s) => n + (s.role === 'data' ? Math.min(s.minExtents ?? s.lv.extents, s.lv.extents) : s.lv.extents), 0) * vg.extentSize;

/**
 * Each LV one range, in the source's order, packed from extent 0. A larger PV
 * gives its extra extents to the last data LV; a smaller one takes first the
 * VG's free extents, then what data LVs do not need, from the last one back.
 */
export function planVolumeGroup(vg: VolumeGroup, spaces: LvSpace[], pvSectors: number): { peCount: number; lvs: PlannedLv[] } {
  const pv = vg.pvs[0];
  const peCount = Math.floor((pvSectors - pv.peStart) / vg.extentSize);
  const sizes = spaces.map(s => s.lv.extents);
  if (peCount > pv.peCount) {
    const last = spaces.map(s => s.role).lastIndexOf('data');
    if (last >= 0) sizes[last] += peCount - pv.peCount;
  }
  let need = sizes.reduce((a, b) => a + b, 0) - peCount;
  for (let i = spaces.length - 1; i >= 0 && need > 0; i--) {
    if (spaces[i].role !== 'data') continue;
    const take = Math.min(need, Math.max(0, sizes[i] - (spaces[i].minExtents ?? sizes[i])));
    sizes[i] -= take;
    need -= take;
  }
  if (need > 0) throw doesNotFit((pvSectors + need * vg.extentSize) * 512, pvSectors * 512);
  let at = 0;
  return { peCount, lvs: spaces.map((s, i) => { const p = { lv: s.lv, start: at, extents: sizes[i] }; at += sizes[i]; return p; }) };
}

/** The source's metadata with the target's PV size and each LV as one linear range. */
export function targetMetadata(vg: VolumeGroup, plan: { peCount: number; lvs: PlannedLv[] }, pvSectors: number, dev: string): string {
  const text = structuredClone(vg.text);
  const node = text[vg.name] as LvmNode;
  const pv = (node.physical_volumes as LvmNode)[vg.pvs[0].key] as LvmNode;
  Object.assign(pv, { device: dev, dev_size: pvSectors, pe_count: plan.peCount });
  const lvs = node.logical_volumes as LvmNode;
  for (const p of plan.lvs) {
    const lv = lvs[p.lv.name] as LvmNode;
    for (const k of Object.keys(lv)) if (/^segment\d+$/.test(k)) delete lv[k];
    lv.segment_count = 1;
    lv.segment1 = { start_extent: 0, extent_count: p.extents, type: 'striped', stripe_count: 1, stripes: [vg.pvs[0].key, p.start] };
  }
  return printLvmText(text);
}

/** Write the PV label and the VG metadata onto dev (the target's partition), same UUIDs; nothing is activated. */
export async function writeVolumeGroup(dev: string, work: string, vg: VolumeGroup, metadata: string): Promise<void> {
  const file = join(work, `vg-${vg.name}-target.txt`);
  await writeFile(file, metadata);
  await lvm(work, 'pvcreate', dev, ['-q', '--uuid', vg.pvs[0].id, '--restorefile', file, dev]);
  // vgcfgrestore warns that it cannot check for active LVs without device-mapper; the write itself works
  await lvm(work, 'vgcfgrestore', dev, ['-q', '-f', file, vg.name]);
}
