// Target disks: created as a hidden partial file, opened writable as a plain
// file (raw directly, any other format through a qemu-storage-daemon FUSE
// export), committed by rename; and raw byte reads and writes.
// (Sources are opened in src/sources/open.ts.)
import { access, constants, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Scope } from '../util/scope.js';
import { createImage, imageInfoChain } from './qemu-img.js';
import { exportAsFile, fileBlockdevs } from './qsd.js';
import type { OpenDisk } from './open-disk.js';

export type { OpenDisk } from './open-disk.js';

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
