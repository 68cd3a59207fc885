// LVM as the tests see it, through LVM's own tools only (never Ferry's code):
// the report of a PV's VG/LVs and where each LV lies on the raw image.
import { execa } from 'execa';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface LvmView {
  vg: { vg_name: string; vg_uuid: string; vg_tags: string; vg_extent_size: string };
  pv: { pv_uuid: string; pe_start: string };
  lvs: { lv_name: string; lv_uuid: string; lv_tags: string; lv_size: string; seg_count: string }[];
  /** lv name -> [byte offset on the raw image, length] of its first segment */
  offsets: Record<string, [number, number]>;
}

/** A private LVM configuration: no devices file, no udev, no archives; the host's /etc/lvm is neither read nor changed. */
async function withLvm<T>(fn: (env: Record<string, string>) => Promise<T>): Promise<T> {
  const dir = await mkdtemp('/var/tmp/lvmtest-');
  try {
    await writeFile(join(dir, 'lvm.conf'), `devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 }\nglobal { locking_dir = "${dir}" }\nbackup { backup = 0 archive = 0 }\nactivation { udev_sync = 0 udev_rules = 0 monitoring = 0 }\n`);
    return await fn({ LVM_SYSTEM_DIR: dir, LVM_SUPPRESS_FD_WARNINGS: '1' });
  } finally { await rm(dir, { recursive: true, force: true }); }
}

const report = (stdout: string, kind: string) => (JSON.parse(stdout).report[0][kind] as Record<string, string>[]);

/** LVM's own tools run against one loop device over partition `number` of a raw image. */
export async function lvmView(raw: string, number: number): Promise<LvmView> {
  const part = (JSON.parse((await execa('sfdisk', ['--json', raw])).stdout).partitiontable.partitions as { node: string; start: number; size: number }[])
    .find(p => p.node.endsWith(String(number)))!;
  const dev = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(part.start * 512), '--sizelimit', String(part.size * 512), raw])).stdout).trim();
  try {
    return await withLvm(async env => {
      const tool = async (cmd: string, fields: string, kind: string) =>
        report((await execa(cmd, ['--devices', dev, '--readonly', '--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', fields], { env })).stdout, kind);
      const [vg] = await tool('vgs', 'vg_name,vg_uuid,vg_tags,vg_extent_size', 'vg');
      const [pv] = await tool('pvs', 'pv_uuid,pe_start', 'pv');
      const lvs = await tool('lvs', 'lv_name,lv_uuid,lv_tags,lv_size,seg_count', 'lv');
      // seg_pe_ranges: where on the PV each segment lies, "DEV:FIRST-LAST" in physical extents
      const segs = await tool('lvs', 'lv_name,seg_pe_ranges', 'lv');
      const offsets: Record<string, [number, number]> = {};
      for (const s of segs) {
        const [first, last] = /:(\d+)-(\d+)$/.exec(s.seg_pe_ranges)!.slice(1).map(Number);
        offsets[s.lv_name] ??= [part.start * 512 + Number(pv.pe_start) + first * Number(vg.vg_extent_size), (last - first + 1) * Number(vg.vg_extent_size)];
      }
      return { vg: vg as LvmView['vg'], pv: pv as LvmView['pv'], lvs: lvs as LvmView['lvs'], offsets };
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
