// Opening whole disks: a source read-only, a target writable, each as a
// plain file (raw directly, any other format through a qemu-storage-daemon
// FUSE export) that loop devices and sfdisk can work on.
import { access, constants, open, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { corruptImage, notADiskImage, sourceMissing } from '../errors.js';
import { describeEndpoint, type Endpoint } from '../sources/endpoint.js';
import { openNetworkSource } from '../sources/network.js';
import type { Scope } from '../util/scope.js';
import { checkImage, createImage, imageInfoChain, type ImageInfo } from './qemu-img.js';
import { cutExport, exportAsFile, exportReadBytes, fileBlockdevs } from './qsd.js';
import { attachLoop } from './loop.js';
import { watchConnection } from '../sources/watchdog.js';
import type { ProgressSink } from '../util/progress.js';
import { readTable } from '../layout/table.js';
import { probeDevice } from '../fs/detect.js';
import { looksLikeTar, openOva } from '../sources/ova.js';
import type { OpenDisk } from './open-disk.js';

export type { OpenDisk } from './open-disk.js';


export const SOURCE_FORMATS = ['raw', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'vdi'];

/** Open a source read-only; a network source is watched while open, its reconnects shown on `progress`. */
export async function openSource(scope: Scope, ep: Endpoint, work: string, name = 'source', progress?: ProgressSink, opts: { allowBlank?: boolean } = {}): Promise<OpenDisk> {
  if (ep.kind !== 'file') {
    const disk = await openNetworkSource(scope, ep, work, name, { requireDisk: true });
    watchConnection(scope, ep, progress, { readBytes: () => exportReadBytes(disk.file), cutOff: () => cutExport(disk.file) });
    // One loop device over the export for the whole run: a FUSE file drops its
    // page cache at every open, a block device keeps it, so what the copy read
    // is still in memory when verify reads it again (the server is not asked twice).
    // Direct I/O to the export: the FUSE file keeps no second copy of each page, and the loop
    // device asks for larger pieces (a sequential read: 351 against 269 MB/s buffered).
    const dev = await attachLoop(scope, disk.file, { offset: 0, size: disk.size, readOnly: true, directIo: true });
    // held open: the kernel drops a block device's cache when its last opener closes it
    const held = await open(dev, 'r');
    scope.defer(`open ${dev}`, () => held.close());
    return { ...disk, file: dev, remote: true };
  }
  const describe = describeEndpoint(ep);
  const st = await stat(ep.path).catch(() => undefined);
  if (!st) throw sourceMissing(ep.path);
  if (!st.isFile() && !st.isBlockDevice()) throw notADiskImage(ep.path, 'not a regular file or block device');
  if (st.isFile() && st.size === 0) throw notADiskImage(ep.path, 'the file is empty');
  // an OVA (a tar): the disk its envelope names is read in place, the archive is neither extracted nor changed
  if (st.isFile() && await looksLikeTar(ep.path)) return openOva(scope, ep.path, work, name, describe);
  let chain: ImageInfo[];
  try {
    chain = await imageInfoChain(ep.path);
  } catch (e) {
    throw corruptImage(ep.path, (e as Error).message);
  }
  const info = chain[0];
  if (!SOURCE_FORMATS.includes(info.format)) throw notADiskImage(ep.path, `format ${info.format} is not supported`);
  if (info.corrupt) throw corruptImage(ep.path, 'the image marks itself corrupt');
  for (const link of chain.slice(1)) {
    if (!(await stat(link.filename).catch(() => undefined))) throw corruptImage(ep.path, `its backing file ${link.filename} is missing`);
  }
  if (info.format === 'qcow2') {
    const problems = await checkImage(ep.path, 'qcow2');
    if (problems.length) throw corruptImage(ep.path, problems.join(', '));
  }
  if (info.format === 'raw') {
    // qemu calls any file raw; a disk has a partition table or a file system at its start
    if (!opts.allowBlank && !(await readTable(ep.path)) && !(await probeDevice(ep.path)).type) {
      throw notADiskImage(ep.path, 'no partition table or file system found');
    }
    return { file: ep.path, size: info.virtualSize, format: 'raw', describe, info };
  }
  const file = await exportAsFile(scope, work, name, fileBlockdevs(ep.path, info.format, false), { writable: false, describe });
  const size = (await stat(file)).size;
  return { file, size, format: info.format, describe, info };
}

export interface NewTarget extends OpenDisk {
  /** where the image is written until it is complete */
  partialPath: string;
  finalPath: string;
}

export const partialPathFor = (finalPath: string) => join(dirname(finalPath), `.${basename(finalPath)}.ferry-partial`);

/**
 * The partial name a target is written under; `owner` removes it unless
 * commitTarget() renamed it — held, so a killed CLI run's partial is removed
 * by the next command (jobs/run-journal.ts). No owner: the caller keeps it.
 */
export async function ownPartial(owner: Scope | undefined, finalPath: string): Promise<string> {
  const partialPath = partialPathFor(finalPath);
  await rm(partialPath, { force: true });
  owner?.hold(`partial target ${partialPath}`, { kind: 'file', id: partialPath }, () => rm(partialPath, { force: true }));
  return partialPath;
}

/**
 * Create the target under a partial name (so a crash never leaves something
 * that looks complete) and open it writable. `owner` removes the partial
 * file unless commitTarget() renamed it; `session` holds the writer, to be
 * released (flushed) before verifying.
 */
export async function createTarget(owner: Scope, session: Scope, finalPath: string, format: string, size: number, work: string): Promise<NewTarget> {
  return createTargetAt(session, await ownPartial(owner, finalPath), finalPath, format, size, work);
}

/** createTarget() for a caller that decides itself when the partial file goes (a job keeps it to resume). */
export async function createTargetAt(session: Scope, partialPath: string, finalPath: string, format: string, size: number, work: string): Promise<NewTarget> {
  await createImage(partialPath, format, size);
  const describe = finalPath;
  if (format === 'raw') return { file: partialPath, size, format, describe, partialPath, finalPath };
  const file = await exportAsFile(session, work, 'target', fileBlockdevs(partialPath, format, true), { writable: true, describe });
  return { file, size, format, describe, partialPath, finalPath };
}

/** Open an existing image for writing (a re-fit of a finished target or of an overlay); released with scope. */
export async function openWritable(scope: Scope, path: string, work: string): Promise<OpenDisk> {
  const info = (await imageInfoChain(path))[0];
  if (info.format === 'raw') return { file: path, size: info.virtualSize, format: 'raw', describe: path, info };
  const file = await exportAsFile(scope, work, 'refit', fileBlockdevs(path, info.format, true), { writable: true, describe: path });
  return { file, size: info.virtualSize, format: info.format, describe: path, info };
}

export async function commitTarget(t: Pick<NewTarget, "partialPath" | "finalPath">): Promise<void> {
  await rename(t.partialPath, t.finalPath);
}

export async function canWriteDir(dir: string): Promise<boolean> {
  try { await access(dir, constants.W_OK); return true; } catch { return false; }
}

/** Read bytes of a disk file. */
export async function readBytes(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

export async function writeBytes(file: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(file, 'r+');
  try { await fh.write(data, 0, data.length, offset); } finally { await fh.close(); }
}
