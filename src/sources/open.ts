// Opening a source read-only, whatever it is: a network disk (watched while
// open, read through one loop device), an OVA read in place, or an image
// file (raw directly, any other format through a qemu-storage-daemon FUSE
// export) that loop devices and sfdisk can work on.
import { open, stat } from 'node:fs/promises';
import { exportAsFile, exportReadBytes, cutExport, fileBlockdevs } from '../blockdev/qsd.js';
import { attachLoop } from '../blockdev/loop.js';
import { checkImage, imageInfoChain, type ImageInfo } from '../blockdev/qemu-img.js';
import type { OpenDisk } from '../blockdev/open-disk.js';
import { corruptImage, notADiskImage, sourceMissing } from '../errors.js';
import { currentAbortSignal, throwIfAborted } from '../util/abort.js';
import { probeDevice } from '../fs/detect.js';
import { readTable } from '../layout/table.js';
import type { ProgressSink } from '../util/progress.js';
import type { Scope } from '../util/scope.js';
import { describeEndpoint, type Endpoint } from './endpoint.js';
import { openNetworkSource } from './network.js';
import { looksLikeTar, openOva } from './ova.js';
import { watchConnection } from './watchdog.js';

export const SOURCE_FORMATS = ['raw', 'qcow2', 'vmdk', 'vpc', 'vhdx', 'vdi'];

/** Open a source read-only; a network source is watched while open, its reconnects shown on `progress`. */
export async function openSource(scope: Scope, ep: Endpoint, work: string, name = 'source', progress?: ProgressSink, opts: { allowBlank?: boolean } = {}): Promise<OpenDisk> {
  if (ep.kind !== 'file') {
    const disk = await openNetworkSource(scope, ep, work, name, { requireDisk: true });
    watchConnection(scope, ep, progress, { readBytes: () => exportReadBytes(disk.file), cutOff: () => cutExport(disk.file) });
    // A stopped run does not wait on the network: reads of a server that went away (a fleet
    // worker cut off from its store and its source alike) would hold the copy, and so the
    // tear-down, until TCP gives up, 15 minutes on. The source is read-only: cutting it loses nothing.
    const signal = currentAbortSignal();
    if (signal) {
      const cut = () => void cutExport(disk.file);
      if (signal.aborted) cut();
      signal.addEventListener('abort', cut, { once: true });
      scope.defer('cut the source off when the run stops', async () => signal.removeEventListener('abort', cut));
    }
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
    // a stop signal ends qemu-img too: that is an interrupted run, not a corrupt image
    throwIfAborted();
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
