// Copy a mounted tree to another with every attribute GNU cp can keep:
// types, hard links, numeric owners, modes, ns times, xattrs (so ACLs and
// capabilities), sparseness. Progress comes from the target's used blocks.
import { statfs } from 'node:fs/promises';
import { run } from '../util/exec.js';
import type { ProgressSink } from '../util/progress.js';

export async function usedBytes(mountpoint: string): Promise<number> {
  const s = await statfs(mountpoint);
  return (s.blocks - s.bfree) * s.bsize;
}

export async function copyTree(src: string, dst: string, progress: ProgressSink, total: number): Promise<void> {
  const base = await usedBytes(dst);
  const timer = setInterval(() => {
    usedBytes(dst).then(u => progress.update(Math.min(total, Math.max(0, u - base))), () => undefined);
  }, 250);
  try {
    // src/. into dst/. also applies the root directory's owner, mode, times and xattrs.
    await run('cp', ['-a', '--sparse=auto', '--no-target-directory', `${src}/.`, `${dst}/.`]);
  } finally {
    clearInterval(timer);
  }
  progress.update(total);
}
