// The common shape of a kernel file system copy: mount the source read-only
// and the target read-write inside the work dir, copy, then apply what the
// module adds (flags, subvolume settings) while both are still mounted.
import { join } from 'node:path';
import { mountFs } from '../blockdev/mount.js';
import { withScope } from '../util/scope.js';
import { copyTree } from './copy-tree.js';
import type { CopyContext } from './types.js';

export interface MountedCopyOptions {
  sourceOptions: string[];
  targetOptions: string[];
  /** before the files: e.g. create btrfs subvolumes */
  before?: (src: string, dst: string) => Promise<void>;
  /** after the files: e.g. immutable flags, read-only subvolumes */
  after?: (src: string, dst: string) => Promise<void>;
}

export async function mountedCopy(ctx: CopyContext, o: MountedCopyOptions): Promise<void> {
  await withScope(async scope => {
    const tag = ctx.sourceDev.replace(/\W/g, '');
    const src = join(ctx.work, `src-${tag}`);
    const dst = join(ctx.work, `dst-${tag}`);
    await mountFs(scope, ctx.sourceDev, src, ctx.facts.type, ['ro', ...o.sourceOptions]);
    await mountFs(scope, ctx.targetDev, dst, ctx.facts.type, o.targetOptions);
    await o.before?.(src, dst);
    await copyTree(src, dst, ctx.progress, ctx.facts.usedBytes);
    await o.after?.(src, dst);
  });
}

/** Mount a device read-only just long enough to measure or read it. */
export async function withMountedRo<T>(dev: string, work: string, type: string, options: string[], fn: (dir: string) => Promise<T>): Promise<T> {
  return withScope(async scope => {
    const dir = join(work, `probe-${dev.replace(/\W/g, '')}`);
    await mountFs(scope, dev, dir, type, ['ro', ...options]);
    return fn(dir);
  });
}
