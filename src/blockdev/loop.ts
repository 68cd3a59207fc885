// Loop devices, one per partition (this host's loop driver makes no partition nodes).
import { readFile } from 'node:fs/promises';
import { throwIfAborted } from '../util/abort.js';
import { run } from '../util/exec.js';
import type { Scope } from '../util/scope.js';

/**
 * directIo: the loop device writes straight to its backing file instead of
 * caching every page twice. For writing, only on plain files (over a FUSE
 * export mkfs produced a broken file system in a trial); reading a network
 * source's FUSE export this way gives the same bytes (checked by sha256).
 */
export async function attachLoop(scope: Scope, file: string, opts: { offset: number; size: number; readOnly: boolean; directIo?: boolean }): Promise<string> {
  const args = ['--find', '--show', '--offset', String(opts.offset), '--sizelimit', String(opts.size)];
  if (opts.directIo) args.push('--direct-io=on');
  if (opts.readOnly) args.push('--read-only');
  args.push(file);
  // runs to its end even when a signal stops the run: killed half-way, losetup may already
  // have attached a device whose name we would never learn; held first, then the stop is obeyed
  const { stdout } = await run('losetup', args, { ignoreAbort: true });
  const dev = stdout.trim();
  scope.hold(`loop ${dev}`, { kind: 'loop', id: dev, detail: file }, () => detachLoop(dev));
  throwIfAborted();
  return dev;
}

async function detachLoop(dev: string): Promise<void> {
  // A just-unmounted device can be busy for a moment; retry briefly.
  for (let i = 0; ; i++) {
    try {
      await run('losetup', ['-d', dev], { ignoreAbort: true });
      return;
    } catch (e) {
      if (i >= 20) throw e;
      await new Promise(r => setTimeout(r, 100));
    }
  }
}

/** A loop device's offset in its backing file (the partition's start). */
export async function loopOffset(dev: string): Promise<number | undefined> {
  const name = /\/dev\/(loop\d+)$/.exec(dev)?.[1];
  if (!name) return undefined;
  return Number((await readFile(`/sys/block/${name}/loop/offset`, 'utf8')).trim());
}

/** How a user finds the volume: its partition's byte offset in the disk (the device is a loop over it). */
export async function volumeWhere(dev: string): Promise<string> {
  const at = await loopOffset(dev).catch(() => undefined);
  return at === undefined ? dev : `the partition at byte ${at} of the disk`;
}
