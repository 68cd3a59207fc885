// A small real disk made on the spot (MBR: ext4 + swap, a few awkward files),
// for tests that need any valid source quickly. The big fixtures come from scripts/.
import { execa } from 'execa';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export async function makeSmallDisk(path: string, opts: { sizeMiB?: number; randomMiB?: number } = {}): Promise<void> {
  const sizeMiB = opts.sizeMiB ?? 200;
  const rootSectors = (sizeMiB - 40) * 2048;
  await execa('truncate', ['-s', `${sizeMiB}M`, path]);
  await execa('sfdisk', ['-q', path], {
    input: `label: dos\nlabel-id: 0x1a2b3c4d\nstart=2048, size=${rootSectors}, type=83, bootable\nstart=${2048 + rootSectors}, type=82\n`,
  });
  const loop = (await execa('losetup', ['-f', '--show', '-o', String(2048 * 512), '--sizelimit', String(rootSectors * 512), path])).stdout.trim();
  const mnt = await mkdtemp('/var/tmp/smalldisk-');
  try {
    await execa('mkfs.ext4', ['-q', '-L', 'small', '-U', '0a1b2c3d-0000-4000-8000-000000000001', loop]);
    await execa('mount', [loop, mnt]);
    try {
      await mkdir(join(mnt, 'etc/deep/er'), { recursive: true });
      await writeFile(join(mnt, 'etc/hostname'), 'small\n');
      await writeFile(join(mnt, 'etc/deep/er/file'), 'x'.repeat(5000));
      await execa('ln', [join(mnt, 'etc/hostname'), join(mnt, 'hostname.link')]);
      await execa('setfattr', ['-n', 'user.note', '-v', 'kept', join(mnt, 'etc/hostname')]);
      await execa('truncate', ['-s', '20M', join(mnt, 'sparse')]);
      for (let i = 0; i < (opts.randomMiB ?? 0); i += 8) {
        await writeFile(join(mnt, `random-${i}`), randomBytes(8 << 20));
      }
    } finally {
      await execa('umount', [mnt]);
    }
  } finally {
    await execa('losetup', ['-d', loop]);
    await rm(mnt, { recursive: true, force: true });
  }
  const swap = (await execa('losetup', ['-f', '--show', '-o', String((2048 + rootSectors) * 512), path])).stdout.trim();
  try { await execa('mkswap', ['-q', '-L', 'smallswap', swap]); } finally { await execa('losetup', ['-d', swap]); }
  // recognisable boot code
  await execa('dd', ['of=' + path, 'conv=notrunc', 'status=none'], { input: Buffer.from('FERRY-TEST-BOOT-CODE') });
}
