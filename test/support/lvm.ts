// LVM as the tests see it, through LVM's own tools only (never Ferry's code):
// the report of a PV's VG/LVs and where each LV lies on the raw image.
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface LvmView {
  vg: { vg_name: string; vg_uuid: string; vg_tags: string; vg_extent_size: string };
  pv: { pv_uuid: string; pe_start: string };
  lvs: { lv_name: string; lv_uuid: string; lv_tags: string; lv_size: string; seg_count: string }[];
  /** lv name -> [byte offset on the raw image, length] of its first segment */
  offsets: Record<string, [number, number]>;
  /** lv name -> every segment's [byte offset on the raw image, length], in the LV's order */
  ranges: Record<string, [number, number][]>;
}

/** A private LVM configuration: no devices file, no udev, no archives; the host's /etc/lvm is neither read nor changed. */
export async function withLvm<T>(fn: (env: Record<string, string>) => Promise<T>): Promise<T> {
  const dir = await mkdtemp('/var/tmp/lvmtest-');
  try {
    await writeFile(join(dir, 'lvm.conf'), `devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 hints = "none" }\nglobal { locking_dir = "${dir}" }\nbackup { backup = 0 archive = 0 }\nactivation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\n`);
    return await fn({ LVM_SYSTEM_DIR: dir, LVM_SUPPRESS_FD_WARNINGS: '1' });
  } finally { await rm(dir, { recursive: true, force: true }); }
}

const report = (stdout: string, kind: string) => (JSON.parse(stdout).report[0][kind] as Record<string, string>[]);

/** LVM's own tools run against one loop device over partition `number` of a raw image. */
export async function lvmView(raw: string, number: number): Promise<LvmView> {
  // number 0: the whole disk is the PV
  const part = number === 0 ? { start: 0, size: (await stat(raw)).size / 512 }
    : (JSON.parse((await execa('sfdisk', ['--json', raw])).stdout).partitiontable.partitions as { node: string; start: number; size: number }[]).find(p => p.node.endsWith(String(number)))!;
  const dev = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(part.start * 512), '--sizelimit', String(part.size * 512), raw])).stdout).trim();
  try {
    return await withLvm(async env => {
      const tool = async (cmd: string, fields: string, kind: string) =>
        report((await execa(cmd, ['--devices', dev, '--readonly', '--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', fields], { env })).stdout, kind);
      const [vg] = await tool('vgs', 'vg_name,vg_uuid,vg_tags,vg_extent_size', 'vg');
      const [pv] = await tool('pvs', 'pv_uuid,pe_start', 'pv');
      const lvs = await tool('lvs', 'lv_name,lv_uuid,lv_tags,lv_size,seg_count', 'lv');
      // seg_pe_ranges: where on the PV each segment lies, "DEV:FIRST-LAST" in physical extents
      const segs = await tool('lvs', 'lv_name,seg_start_pe,seg_pe_ranges', 'lv');
      const ranges: Record<string, [number, number][]> = {};
      for (const s of segs.sort((a, b) => Number(a.seg_start_pe) - Number(b.seg_start_pe))) {
        const m = /:(\d+)-(\d+)$/.exec(s.seg_pe_ranges);
        if (!m) continue; // a segment on no PV (zero, error)
        const [first, last] = [Number(m[1]), Number(m[2])];
        (ranges[s.lv_name] ??= []).push([part.start * 512 + Number(pv.pe_start) + first * Number(vg.vg_extent_size), (last - first + 1) * Number(vg.vg_extent_size)]);
      }
      const offsets = Object.fromEntries(Object.entries(ranges).map(([k, v]) => [k, v[0]]));
      return { vg: vg as LvmView['vg'], pv: pv as LvmView['pv'], lvs: lvs as LvmView['lvs'], offsets, ranges };
    });
  } finally { await execa('losetup', ['-d', dev], { reject: false }); }
}

/** blkid's TYPE/UUID/LABEL of the bytes at [offset, length] of a raw image. */
export async function blkidAt(raw: string, [offset, size]: [number, number]): Promise<Record<string, string>> {
  const dev = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(offset), '--sizelimit', String(size), raw])).stdout).trim();
  try {
    const out = String((await execa('blkid', ['-p', '-o', 'export', dev])).stdout);
    return Object.fromEntries(out.split('\n').map(l => l.split('=', 2) as [string, string]).filter(([k]) => k));
  } finally { await execa('losetup', ['-d', dev], { reject: false }); }
}

/** sha256 of these byte ranges of a file, read one after the other */
export async function sha256Ranges(file: string, ranges: [number, number][]): Promise<string> {
  const h = createHash('sha256');
  const fh = await open(file, 'r');
  try {
    for (const [off, len] of ranges) {
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, off);
      h.update(buf);
    }
  } finally { await fh.close(); }
  return h.digest('hex');
}

export const PE_START = 2048;           // sectors
export const EXTENT = 4 * 2 ** 20;      // bytes

/**
 * A small PV (pe_start 1 MiB, 4 MiB extents) on [offset, offset+size) of disk
 * holding VG `vg` with these logical_volumes (LVM's text format), written with
 * pvcreate --restorefile + vgcfgrestore like the guest fixture.
 */
export async function writeSmallVg(disk: string, offset: number, size: number, vg: string, pvUuid: string, logicalVolumes: string): Promise<void> {
  const dev = String((await execa('losetup', ['-f', '--show', '-o', String(offset), '--sizelimit', String(size), disk])).stdout).trim();
  try {
    await withLvm(async env => {
      const sectors = size / 512;
      const text = `contents = "Text Format Volume Group"\nversion = 1\n${vg} {\nid = "${pvUuid.replace(/^..../, 'VGVG')}"\nseqno = 1\nformat = "lvm2"\nstatus = ["RESIZEABLE", "READ", "WRITE"]\nflags = []\nextent_size = ${EXTENT / 512}\nmax_lv = 0\nmax_pv = 0\nmetadata_copies = 0\n`
        + `physical_volumes {\npv0 {\nid = "${pvUuid}"\ndevice = "${dev}"\nstatus = ["ALLOCATABLE"]\nflags = []\ndev_size = ${sectors}\npe_start = ${PE_START}\npe_count = ${Math.floor((sectors - PE_START) / (EXTENT / 512))}\n}\n}\n`
        + `logical_volumes {\n${logicalVolumes}\n}\n}\n`;
      const file = join(env.LVM_SYSTEM_DIR, 'vg.txt');
      await writeFile(file, text);
      await execa('pvcreate', ['-q', '--devices', dev, '--uuid', pvUuid, '--restorefile', file, dev], { env });
      await execa('vgcfgrestore', ['-q', '--devices', dev, '-f', file, vg], { env });
    });
  } finally { await execa('losetup', ['-d', dev], { reject: false }); }
}

/** One LV in LVM's text format: linear pieces [first PV extent, count] on pv0, or one segment of another type. */
export function lvText(name: string, uuid: string, pieces: [number, number][] | { type: string; extents: number }): string {
  const segs = Array.isArray(pieces) ? pieces : [pieces];
  let at = 0;
  const body = segs.map((p, i) => {
    const [n, extra] = Array.isArray(p) ? [p[1], `type = "striped"\nstripe_count = 1\nstripes = ["pv0", ${p[0]}]`] : [p.extents, `type = "${p.type}"`];
    const s = `segment${i + 1} {\nstart_extent = ${at}\nextent_count = ${n}\n${extra}\n}`;
    at += n;
    return s;
  }).join('\n');
  return `${name} {\nid = "${uuid}"\nstatus = ["READ", "WRITE", "VISIBLE"]\nflags = []\nsegment_count = ${segs.length}\n${body}\n}`;
}
