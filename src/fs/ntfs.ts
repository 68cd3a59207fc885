// NTFS: copied by its used clusters with ntfsclone (so the volume serial, the
// label, every security descriptor, attribute, stream, compressed and sparse
// run come across as they are) and then fitted to the new partition with
// ntfsresize. Files are not copied one by one: through ntfs-3g each of
// object ids, reparse data, short names and shared security descriptors would
// have to be carried by hand, while a copy of the clusters in use carries them
// all and is as small as a file copy.
import { open, readFile, readdir, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { ntfsDamaged } from '../errors.js';
import { readBytes, writeBytes } from '../blockdev/disk.js';
import { exportAsFile, fileBlockdevs } from '../blockdev/qsd.js';
import { loopOffset, volumeWhere as where } from '../blockdev/loop.js';
import { withScope, type Scope } from '../util/scope.js';
import { run } from '../util/exec.js';
import { treeXattrs } from '../verify/tree.js';
import { probeDevice } from './detect.js';
import { withMountedRo } from './mounted.js';
import { MiB, type CopyContext, type FsFacts, type FsModule } from './types.js';

export interface NtfsDetail {
  sectorSize: number;
  clusterSize: number;
  /** sectors of the volume as its boot sector counts them (the backup boot sector follows) */
  totalSectors: number;
  hiddenSectors: number;
  version: string;
  flags: number;
  dirty: boolean;
  hibernated: boolean;
  /** the smallest volume ntfsresize can shrink it to */
  minVolumeBytes: number;
}

const VOLUME_IS_DIRTY = 0x0001;
const detail = (f: FsFacts) => f.detail as unknown as NtfsDetail;

interface BootSector { sectorSize: number; clusterSize: number; totalSectors: number; hiddenSectors: number; mftLcn: bigint }

/** The first bytes of an NTFS boot sector carry this OEM id; blkid may not say ntfs when the rest is damaged. */
export async function looksLikeNtfs(dev: string): Promise<boolean> {
  return (await readBytes(dev, 3, 8)).toString('latin1') === 'NTFS    ';
}

/** Read and check the boot sector: a damaged one must stop the copy with a typed error, not be guessed at. */
async function readBootSector(dev: string, devBytes: number): Promise<BootSector> {
  const b = await readBytes(dev, 0, 512);
  const bad = async (why: string) => ntfsDamaged(await where(dev), `boot sector: ${why}`);
  if (b.length < 512) throw await bad('shorter than one sector');
  if (b.toString('latin1', 3, 11) !== 'NTFS    ') throw await bad('no NTFS signature');
  if (b.readUInt16LE(0x1fe) !== 0xaa55) throw await bad('no 55AA end marker (the sector is cut short)');
  const sectorSize = b.readUInt16LE(0x0b);
  if (![512, 1024, 2048, 4096].includes(sectorSize)) throw await bad(`sector size ${sectorSize}`);
  const spc = b[0x0d];
  const clusterSize = (spc > 0x80 ? 2 ** (256 - spc) : spc) * sectorSize;
  if (!spc || clusterSize > 2 * MiB) throw await bad(`sectors per cluster ${spc}`);
  const totalSectors = Number(b.readBigUInt64LE(0x28));
  if (!totalSectors) throw await bad('volume size 0');
  if (totalSectors * sectorSize > devBytes) throw await bad(`volume of ${totalSectors * sectorSize} bytes is larger than its ${devBytes}-byte partition`);
  const mftLcn = b.readBigUInt64LE(0x30);
  if (mftLcn * BigInt(clusterSize) >= BigInt(totalSectors * sectorSize)) throw await bad('$MFT lies outside the volume');
  if (!b.readInt8(0x40)) throw await bad('MFT record size 0');
  return { sectorSize, clusterSize, totalSectors, hiddenSectors: b.readUInt32LE(0x1c), mftLcn };
}

async function deviceBytes(dev: string): Promise<number> {
  return Number((await run('blockdev', ['--getsize64', dev])).stdout.trim());
}

/** Windows fast start-up and hibernation leave hiberfil.sys starting with "hibr" (or "HIBR", "wake"…); a cleared one is zeros. */
async function isHibernated(root: string): Promise<boolean> {
  const name = (await readdir(root)).find(n => n.toLowerCase() === 'hiberfil.sys');
  if (!name) return false;
  const fh = await open(join(root, name), 'r');
  try {
    const head = Buffer.alloc(4);
    await fh.read(head, 0, 4, 0);
    return head.toString('latin1').toLowerCase() === 'hibr';
  } finally { await fh.close(); }
}

async function probe(_scope: unknown, dev: string, work: string): Promise<FsFacts> {
  const boot = await readBootSector(dev, await deviceBytes(dev));
  const p = await probeDevice(dev);
  // -f: ntfsinfo refuses a dirty volume without it, and the flags are what we want to see
  const info = (await run('ntfsinfo', ['-f', '-m', dev]).catch(async e => { throw ntfsDamaged(await where(dev), lastLine(e)); })).stdout;
  const flags = parseInt(/Volume Flags: 0x([0-9a-f]+)/i.exec(info)?.[1] ?? '0', 16);
  const { used, hibernated } = await withMountedRo(dev, work, 'ntfs-3g', [], async dir => {
    const s = await statfs(dir);
    return { used: (s.blocks - s.bfree) * s.bsize, hibernated: await isHibernated(dir) };
  });
  const resize = await run('ntfsresize', ['--info', '--no-action', '-f', '-f', '-P', dev]).catch(async e => { throw ntfsDamaged(await where(dev), lastLine(e)); });
  const min = Number(/You might resize at (\d+) bytes/.exec(resize.stdout)?.[1] ?? boot.totalSectors * boot.sectorSize);
  const d: NtfsDetail = {
    sectorSize: boot.sectorSize, clusterSize: boot.clusterSize, totalSectors: boot.totalSectors, hiddenSectors: boot.hiddenSectors,
    version: /Volume Version: (\S+)/.exec(info)?.[1] ?? '', flags, dirty: !!(flags & VOLUME_IS_DIRTY), hibernated, minVolumeBytes: min,
  };
  return { type: 'ntfs', uuid: p.uuid, label: p.label, usedBytes: used, detail: d as unknown as Record<string, unknown> };
}

const lastLine = (e: unknown) => String((e as Error).message ?? e).trim().split('\n').filter(Boolean).at(-1) ?? 'unknown error';

/** Why this volume is not safe to copy as it is: [] when Windows closed it cleanly. */
export function ntfsUncleanState(f: FsFacts | undefined): string[] {
  if (f?.type !== 'ntfs') return [];
  const d = detail(f);
  return [...(d.dirty ? ['marked dirty'] : []), ...(d.hibernated ? ['hibernated (hiberfil.sys)'] : [])];
}

// ntfsresize's own minimum is tight (no room for the MFT to grow); leave some.
const minBytes = (f: FsFacts) => Math.ceil(detail(f).minVolumeBytes * 1.05) + 16 * MiB;

const clone = (from: string, to: string, force: boolean) =>
  run('ntfsclone', ['-q', ...(force ? ['--force'] : []), '--overwrite', to, from]);

/** Fit the volume to its device (or to size bytes). ntfsresize marks the volume dirty so that Windows checks it. */
const resize = (dev: string, size?: number) =>
  run('ntfsresize', ['-f', '-f', '-P', ...(size ? ['-s', String(size)] : []), dev]);

/** ntfsresize's own check passed; a source Windows closed cleanly stays clean (no chkdsk at first boot). */
const clearDirty = (dev: string) => run('ntfsfix', ['-d', dev]);

/** A writable view of the read-only source device: a qcow2 overlay exported as a file; released with scope. */
async function sourceOverlay(scope: Scope, work: string, sourceDev: string): Promise<string> {
  const name = `ntfs-shrink-${sourceDev.replace(/\W/g, '')}`;
  const overlay = join(work, `${name}.qcow2`);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', sourceDev, '-F', 'raw', overlay]);
  scope.defer(`overlay ${overlay}`, () => rm(overlay, { force: true }));
  return exportAsFile(scope, work, name, fileBlockdevs(overlay, 'qcow2', true), { writable: true, describe: overlay });
}

async function copy(ctx: CopyContext): Promise<void> {
  const d = detail(ctx.facts);
  const keepAsIs = d.dirty || d.hibernated;
  const targetBytes = await deviceBytes(ctx.targetDev);
  const volumeEnd = (d.totalSectors + 1) * d.sectorSize;
  ctx.progress.update(0);
  if (targetBytes >= volumeEnd) {
    await clone(ctx.sourceDev, ctx.targetDev, keepAsIs);
    if (targetBytes - volumeEnd >= d.clusterSize) {
      await resize(ctx.targetDev);
      if (!keepAsIs) await clearDirty(ctx.targetDev);
    }
  } else {
    // ntfsclone writes every cluster where it lies, so the volume is shrunk
    // first, on a qcow2 overlay of the source in the work dir: it takes only
    // the clusters ntfsresize moves (the source is never written), then the
    // shrunk volume is cloned once
    await withScope(async scope => {
      const shrunk = await sourceOverlay(scope, ctx.work, ctx.sourceDev);
      await resize(shrunk, targetBytes);
      if (!keepAsIs) await clearDirty(shrunk);
      await clone(shrunk, ctx.targetDev, keepAsIs);
    });
  }
  await fixHiddenSectors(ctx.sourceDev, ctx.targetDev, d);
  ctx.progress.update(ctx.facts.usedBytes);
}

/**
 * The boot sector names the partition's first sector (Windows' boot code
 * reads it); when the partition moved, say where it is now, in the boot
 * sector and its backup after the volume's last sector.
 */
async function fixHiddenSectors(sourceDev: string, targetDev: string, d: NtfsDetail): Promise<void> {
  const [from, to] = [await loopOffset(sourceDev), await loopOffset(targetDev)];
  if (from === undefined || to === undefined || from === to || d.hiddenSectors !== from / d.sectorSize) return;
  const boot = await readBootSector(targetDev, await deviceBytes(targetDev));
  const field = Buffer.alloc(4);
  field.writeUInt32LE(to / d.sectorSize);
  await writeBytes(targetDev, 0x1c, field);
  await writeBytes(targetDev, boot.totalSectors * boot.sectorSize + 0x1c, field);
}

/** system.* attributes that ntfs-3g serves but does not list: security descriptors and DOS attributes. */
const NTFS_ATTRS = ['system.ntfs_acl', 'system.ntfs_attrib'];

async function compareExtra(src: string, dst: string): Promise<string[]> {
  const diffs: string[] = [];
  for (const name of NTFS_ATTRS) {
    const [a, b] = await Promise.all([treeXattrs(src, name), treeXattrs(dst, name)]);
    for (const p of new Set([...a.keys(), ...b.keys()])) {
      if (a.get(p) !== b.get(p)) diffs.push(`/${Buffer.from(p, 'latin1').toString('utf8')}: ${name} differs`);
    }
  }
  return diffs;
}

export const ntfsModule: FsModule = {
  types: ['ntfs'],
  probe,
  minBytes,
  // nothing to format: the clone lays the whole volume down, boot sector included
  async format() { /* see copy */ },
  copy,
  // ADS appear as user.* attributes, which the tree walk compares with the rest
  verifyAs: { kind: 'mount', fsType: 'ntfs-3g', options: () => ['streams_interface=xattr'] },
  features: f => [`cluster_size=${detail(f).clusterSize}`, `sector_size=${detail(f).sectorSize}`, `version=${detail(f).version}`],
  compareExtra,
};
