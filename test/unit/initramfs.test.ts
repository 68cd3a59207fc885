// Initramfs listing across the forms distributions ship: each compression the
// kernel accepts, uncompressed, and early-microcode cpio archives in front.
// The archives are made here with the real cpio and compressors.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { execa } from 'execa';
import { readInitramfs } from '../../src/inspect/linux/initramfs.js';

const dir = await mkdtemp(join(tmpdir(), 'ferry-initramfs-test-'));
after(() => rm(dir, { recursive: true, force: true }));

/** a newc cpio archive of the given files (contents are their names) */
async function cpio(name: string, files: string[]): Promise<Buffer> {
  const root = join(dir, `${name}.d`);
  for (const f of files) { await mkdir(join(root, f, '..'), { recursive: true }); await writeFile(join(root, f), f); }
  const r = await execa('cpio', ['-o', '-H', 'newc', '--quiet'], { cwd: root, input: files.join('\n') + '\n', encoding: 'buffer' });
  return Buffer.from(r.stdout);
}

const MODULES = ['usr/lib/modules/6.1.0-1-amd64/kernel/drivers/ata/ahci.ko', 'usr/lib/modules/6.1.0-1-amd64/kernel/drivers/block/virtio_blk.ko.xz',
  'usr/lib/modules/6.1.0-1-amd64/kernel/drivers/md/dm-mod.ko.zst', 'usr/bin/busybox'];
const EXPECTED = ['ahci', 'dm_mod', 'virtio_blk'];

const COMPRESSIONS: [string, string[]][] = [
  ['gzip', ['gzip', '-c']], ['xz', ['xz', '--check=crc32', '-c']], ['zstd', ['zstd', '-q', '-c']], ['lz4', ['lz4', '-l', '-c']], ['bzip2', ['bzip2', '-c']],
];

describe('initramfs listing', () => {
  for (const [name, [cmd, ...args]] of COMPRESSIONS) {
    it(`reads a ${name} initramfs behind an early microcode cpio`, async () => {
      const early = await cpio(`early-${name}`, ['kernel/x86/microcode/GenuineIntel.bin']);
      const main = Buffer.from((await execa(cmd, args, { input: await cpio(`main-${name}`, MODULES), encoding: 'buffer' })).stdout);
      const file = join(dir, `initrd-${name}.img`);
      await writeFile(file, Buffer.concat([early, main]));
      const r = await readInitramfs(file, '/boot/initrd.img');
      assert.equal(r.error, undefined, r.error?.message);
      assert.deepEqual([r.compression, r.earlyCpio, r.modules], [name, 1, EXPECTED]);
    });
  }

  it('reads an uncompressed initramfs', async () => {
    const file = join(dir, 'plain.img');
    await writeFile(file, await cpio('plain', MODULES));
    const r = await readInitramfs(file, '/boot/initrd.img');
    assert.deepEqual([r.compression, r.earlyCpio, r.modules], ['none', 0, EXPECTED]);
  });

  it('reports a damaged initramfs as an error entry, not a crash', async () => {
    const good = join(dir, 'initrd-gzip.img');
    const cut = join(dir, 'cut.img');
    await writeFile(cut, Buffer.concat([Buffer.from('garbage!'), await readFile(good)]));
    const r = await readInitramfs(cut, '/boot/initrd.img');
    assert.equal(r.error?.code, 'INITRAMFS_UNREADABLE');
    assert.match(r.error!.message, /\/boot\/initrd\.img/);
  });
});
