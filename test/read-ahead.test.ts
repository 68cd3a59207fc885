// Reading a network source ahead of its copy (src/sources/read-ahead.ts): the
// used ranges that ext4 and xfs report from their free-space maps must hold
// every block of every file (else the copy would still ask the server piece
// by piece), and the pieces read are merged and cut as intended.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { extModule } from '../src/fs/ext.js';
import type { ByteRange, FsModule } from '../src/fs/types.js';
import { xfsModule } from '../src/fs/xfs.js';
import { readPieces } from '../src/sources/read-ahead.js';
import { guardMachine, tempDir } from './support/harness.js';

guardMachine();
const dir = await tempDir('ferryra-');

/** Physical extents (byte ranges) of every file under mnt, from filefrag. */
async function fileExtents(mnt: string, blockSize: number): Promise<ByteRange[]> {
  const files = (await execa('find', [mnt, '-type', 'f'])).stdout.split('\n').filter(Boolean);
  const out: ByteRange[] = [];
  const r = await execa('filefrag', ['-e', '-b' + blockSize, ...files]);
  // "   0:        0..       3:      34816..     34819:      4:             last,eof"
  for (const m of r.stdout.matchAll(/^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):/gm)) {
    out.push([Number(m[1]) * blockSize, (Number(m[2]) - Number(m[1]) + 1) * blockSize]);
  }
  return out;
}

const covered = (ranges: ByteRange[], [at, len]: ByteRange) => ranges.some(([s, l]) => s <= at && at + len <= s + l);

for (const [type, mod, mkfs] of [
  ['ext4', extModule, ['mkfs.ext4', '-q', '-F', '-b', '4096']],
  ['xfs', xfsModule, ['mkfs.xfs', '-q', '-f']],
] as [string, FsModule, string[]][]) {
  describe(`used ranges of ${type}`, () => {
    it('hold every block of every file, and leave most of a sparsely used file system out', async () => {
      const img = join(dir, `${type}.img`);
      const mnt = join(dir, `${type}.mnt`);
      await execa('truncate', ['-s', '400M', img]);
      await execa(mkfs[0], [...mkfs.slice(1), img]);
      await mkdir(mnt);
      await execa('mount', ['-o', 'loop', img, mnt]);
      try {
        for (let i = 0; i < 40; i++) await writeFile(join(mnt, `f${i}`), randomBytes(i * 37_000 + 1));
        await writeFile(join(mnt, 'big'), randomBytes(30 << 20));
        // read as a source is: unmounted (xfs keeps new allocations in its log until then)
        await execa('umount', [mnt]);
        const used = await mod.usedRanges!(img);
        await execa('mount', ['-o', 'loop,ro', img, mnt]);
        const extents = await fileExtents(mnt, 4096);
        assert.ok(extents.length >= 41, `filefrag listed ${extents.length} extents`);
        for (const e of extents) assert.ok(covered(used, e), `extent ${e} is outside the used ranges`);
        const usedBytes = used.reduce((n, [, l]) => n + l, 0);
        assert.ok(usedBytes >= 30 << 20 && usedBytes < 200 << 20, `used ${usedBytes} bytes of 400 MiB`);
        for (let i = 1; i < used.length; i++) assert.ok(used[i][0] > used[i - 1][0] + used[i - 1][1] - 1, 'sorted, not overlapping');
      } finally {
        await execa('umount', [mnt]);
        await rm(img);
      }
    });
  });
}

describe('read pieces', () => {
  it('merges ranges across small gaps only, and cuts them into bounded pieces', () => {
    const K = 1024, M = 1 << 20;
    assert.deepEqual(readPieces([[0, 4 * K], [8 * K, 4 * K], [10 * M, 4 * K]], 64 * K, 4 * M), [[0, 12 * K], [10 * M, 4 * K]]);
    assert.deepEqual(readPieces([[0, 9 * M]], 64 * K, 4 * M), [[0, 4 * M], [4 * M, 4 * M], [8 * M, M]]);
    assert.deepEqual(readPieces([[0, M], [2 * M, M]], 0, 4 * M), [[0, M], [2 * M, M]]);
    assert.deepEqual(readPieces([]), []);
  });
});
