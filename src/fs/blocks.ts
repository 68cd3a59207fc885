// Partitions Ferry does not rebuild (unknown or no file system, BIOS boot
// partitions) are copied block by block, skipping zero runs so the target stays sparse.
import { open } from 'node:fs/promises';
import { throwIfAborted } from '../util/abort.js';
import type { ProgressSink } from '../util/progress.js';

const CHUNK = 1 << 20;

function isZero(buf: Buffer, n: number): boolean {
  // compare 8 bytes at a time; the tail byte by byte
  let i = 0;
  for (; i + 8 <= n; i += 8) if (buf.readBigUInt64LE(i) !== 0n) return false;
  for (; i < n; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Copy `length` bytes from src (at srcOffset) to dst (at dstOffset); returns bytes actually written. */
export async function copyBlocks(src: string, srcOffset: number, dst: string, dstOffset: number, length: number,
  progress: ProgressSink): Promise<number> {
  const s = await open(src, 'r');
  const d = await open(dst, 'r+');
  const buf = Buffer.alloc(CHUNK);
  let written = 0;
  try {
    for (let pos = 0; pos < length; pos += CHUNK) {
      throwIfAborted();
      const want = Math.min(CHUNK, length - pos);
      const { bytesRead } = await s.read(buf, 0, want, srcOffset + pos);
      if (bytesRead === 0) break;
      if (!isZero(buf, bytesRead)) {
        await d.write(buf, 0, bytesRead, dstOffset + pos);
        written += bytesRead;
      }
      progress.update(pos + bytesRead);
    }
    await d.sync();
  } finally {
    await s.close();
    await d.close();
  }
  return written;
}
