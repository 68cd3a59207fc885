// Reading a test's images with the test's own tools, never Ferry's: a
// partition of a raw image on a loop device, a qcow2 through the test's own
// qemu-storage-daemon FUSE export. Everything is undone whatever happens.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';

/** The mount helpers, with their mount points and exports made in dir (the test's temp dir). */
export function imageMounts(dir: string) {
  /** Mount a partition of a raw image (read-write unless ro), run fn, unmount and detach whatever happens. */
  async function withMounted<T>(raw: string, offset: number, size: number | undefined, type: 'ext4' | 'ntfs', fn: (mnt: string) => Promise<T>, ro = false): Promise<T> {
    const args = ['-f', '--show', ...(ro ? ['-r'] : []), '-o', String(offset), ...(size ? ['--sizelimit', String(size)] : []), raw];
    const loop = String((await execa('losetup', args)).stdout).trim();
    const mnt = join(dir, `mnt-${Math.random().toString(36).slice(2)}`);
    await execa('mkdir', [mnt]);
    try {
      if (type === 'ntfs') await execa('ntfs-3g', ['-o', ro ? 'ro' : 'rw', loop, mnt]);
      // noatime: what the test itself reads must not change the copy's access times
      else await execa('mount', ['-t', 'ext4', '-o', ro ? 'ro,noload' : 'noatime', loop, mnt]);
      try { return await fn(mnt); } finally { await execa('umount', [mnt]); }
    } finally {
      await execa('losetup', ['-d', loop]);
      await execa('rmdir', [mnt]);
    }
  }

  /**
   * Mount a partition of a qcow2 read-only without converting it: the test's own
   * qemu-storage-daemon exports it as a file (FUSE), a read-only loop device
   * reads the partition from it. Everything is undone whatever happens.
   */
  async function withQcow2Mounted<T>(qcow2: string, offset: number, fn: (mnt: string) => Promise<T>): Promise<T> {
    const tag = Math.random().toString(36).slice(2);
    const exp = join(dir, `export-${tag}.img`);
    const pid = join(dir, `qsd-${tag}.pid`);
    await writeFile(exp, '');
    await execa('qemu-storage-daemon', [
      '--blockdev', JSON.stringify({ driver: 'file', 'node-name': 'f', filename: qcow2, 'read-only': true }),
      '--blockdev', JSON.stringify({ driver: 'qcow2', 'node-name': 'd', file: 'f', 'read-only': true }),
      '--export', JSON.stringify({ type: 'fuse', id: 'e', 'node-name': 'd', mountpoint: exp, writable: false }),
      '--pidfile', pid, '--daemonize']);
    try {
      return await withMounted(exp, offset, undefined, 'ext4', fn, true);
    } finally {
      const p = Number((await readFile(pid, 'utf8')).trim());
      process.kill(p, 'SIGTERM');
      // the daemon removes its FUSE mount as it exits
      for (let i = 0; i < 100 && await execa('kill', ['-0', String(p)], { reject: false }).then(r => r.exitCode === 0); i++) await new Promise(r => setTimeout(r, 50));
      await execa('rm', ['-f', exp, pid]);
    }
  }
  return { withMounted, withQcow2Mounted };
}
