// vfat (EFI system partitions): no kernel driver here, so mtools reads and
// writes it. Same FAT type, volume id, label and cluster size.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { probeDevice } from './detect.js';
import { MiB, type FsFacts, type FsModule } from './types.js';

const MTOOLS_ENV = { MTOOLS_SKIP_CHECK: '1', MTOOLS_NO_VFAT: '0' };

export const mtools = (cmd: string, args: string[]) => run(cmd, args, { env: MTOOLS_ENV });

/** Copy every file of the FAT volume on dev into dir (mtimes kept). */
export async function extractVfat(dev: string, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const listing = (await mtools('mdir', ['-i', dev, '-b', '::/'])).stdout.trim();
  if (listing) await mtools('mcopy', ['-s', '-p', '-m', '-n', '-Q', '-i', dev, '::*', `${dir}/`]);
}

async function probe(_scope: unknown, dev: string): Promise<FsFacts> {
  const p = await probeDevice(dev);
  const info = (await mtools('minfo', ['-i', dev, '::'])).stdout;
  const num = (re: RegExp) => Number(re.exec(info)?.[1] ?? 0);
  const free = Number(/([\d ]+) bytes free/.exec((await mtools('mdir', ['-i', dev, '-a', '::/'])).stdout)?.[1]?.replace(/ /g, '') ?? 0);
  const total = (num(/big size: (\d+) sectors/) || num(/small size: (\d+) sectors/)) * num(/sector size: (\d+) bytes/);
  return {
    type: 'vfat',
    uuid: p.uuid,
    label: p.label,
    usedBytes: Math.max(0, total - free),
    detail: {
      fatBits: Number((p.version ?? 'FAT32').replace('FAT', '')),
      clusterSectors: num(/cluster size: (\d+) sectors/),
      sectorSize: num(/sector size: (\d+) bytes/),
      reserved: num(/reserved \(boot\) sectors: (\d+)/),
      fats: num(/fats: (\d+)/),
    },
  };
}

// FAT32 needs about 33 MiB of clusters; keep at least the smaller of that and what the data needs.
const minBytes = (f: FsFacts) => Math.max((f.detail as { fatBits: number }).fatBits === 32 ? 34 * MiB : 4 * MiB,
  Math.ceil(f.usedBytes * 1.2) + 2 * MiB);

async function format(dev: string, f: FsFacts): Promise<void> {
  const d = f.detail as { fatBits: number; clusterSectors: number; sectorSize: number; reserved: number; fats: number };
  const args = ['-F', String(d.fatBits)];
  if (f.uuid) args.push('-i', f.uuid.replace('-', ''));
  if (f.label) args.push('-n', f.label);
  if (d.clusterSectors) args.push('-s', String(d.clusterSectors));
  if (d.sectorSize) args.push('-S', String(d.sectorSize));
  if (d.reserved) args.push('-R', String(d.reserved));
  if (d.fats) args.push('-f', String(d.fats));
  args.push(dev);
  await run('mkfs.vfat', args);
}

export const vfatModule: FsModule = {
  types: ['vfat'],
  probe,
  minBytes,
  format,
  async copy(ctx) {
    const stage = join(ctx.work, `vfat-${ctx.sourceDev.replace(/\W/g, '')}`);
    ctx.progress.update(0);
    await extractVfat(ctx.sourceDev, stage);
    const { readdir } = await import('node:fs/promises');
    const entries = await readdir(stage);
    if (entries.length) await mtools('mcopy', ['-s', '-p', '-m', '-n', '-Q', '-i', ctx.targetDev, ...entries.map(e => join(stage, e)), '::/']);
    ctx.progress.update(ctx.facts.usedBytes);
  },
  verifyAs: { kind: 'fat' },
  features: f => {
    const d = f.detail as { fatBits: number; clusterSectors: number; sectorSize: number };
    return [`fat${d.fatBits}`, `cluster_sectors=${d.clusterSectors}`, `sector_size=${d.sectorSize}`];
  },
};
