// Mounts and the temporary directories they live in.
import { mkdtemp, mkdir, rm, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { throwIfAborted } from '../util/abort.js';
import { run } from '../util/exec.js';
import type { Scope } from '../util/scope.js';

/** A private work directory, removed (after everything in it is released) with the scope. */
export async function workDir(scope: Scope): Promise<string> {
  const dir = await mkdtemp(join(process.env.FERRY_TMP ?? tmpdir(), 'ferry-'));
  scope.hold(`work dir ${dir}`, { kind: 'file', id: dir }, () => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function mountFs(scope: Scope, dev: string, dir: string, type: string, options: string[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  const args = ['-t', type];
  if (options.length) args.push('-o', options.join(','));
  args.push(dev, dir);
  // like a loop device (loop.ts): the mount completes and is held before a stop is obeyed
  await run('mount', args, { ignoreAbort: true });
  scope.hold(`mount ${dir}`, { kind: 'mount', id: dir }, () => unmount(dir));
  throwIfAborted();
}

/**
 * Unmount and remove the mount point, retrying while the kernel still calls
 * it busy (a just-ended process may hold it a moment longer). A reclaim after
 * a crash waits longer: it has just killed what used it.
 */
export async function unmount(dir: string, retry = { times: 20, everyMs: 100 }): Promise<void> {
  for (let i = 0; ; i++) {
    try {
      await run('umount', [dir], { ignoreAbort: true });
      break;
    } catch (e) {
      if (i >= retry.times) throw e;
      await new Promise(r => setTimeout(r, retry.everyMs));
    }
  }
  await rmdir(dir).catch(() => undefined);
}
