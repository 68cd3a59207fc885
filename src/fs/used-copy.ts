// The used-block path (--mode clone): copy only the byte ranges a file
// system's own allocation map marks used (ext block bitmaps, xfs free-space
// btrees, inverted by the module's usedRanges) from the source device onto a
// fresh, all-zero target device at the same offsets. Free blocks are never
// read, so a deleted file's old data stays behind, and an all-zero piece is
// not written, so the target stays sparse. Ranges are not merged across gaps:
// a gap is free space, and free space may hold stale data.
import { open } from 'node:fs/promises';
import { throwIfAborted } from '../util/abort.js';
import type { ProgressSink } from '../util/progress.js';
import type { ByteRange } from './types.js';

const PIECE = 4 << 20;
/** zero runs are skipped at the granularity of a qcow2 cluster: a written cluster is allocated */
const GRAIN = 64 << 10;
/** pieces in flight: reads of one overlap writes of another (two cores) */
const IN_FLIGHT = 4;

const ZERO = Buffer.alloc(GRAIN);
/** native memcmp against zeros (a byte loop in JS costs seconds per GiB) */
const isZero = (b: Buffer) => b.equals(ZERO.subarray(0, b.length));

/** Copy each range of src to the same offset of dst; returns the bytes written (zero pieces skipped). */
export async function copyUsedRanges(src: string, dst: string, ranges: ByteRange[], progress: ProgressSink): Promise<number> {
  const pieces: ByteRange[] = [];
  for (const [off, len] of ranges) for (let at = 0; at < len; at += PIECE) pieces.push([off + at, Math.min(PIECE, len - at)]);
  const s = await open(src, 'r');
  const d = await open(dst, 'r+');
  let next = 0, done = 0, written = 0;
  const worker = async () => {
    const buf = Buffer.alloc(PIECE);
    while (next < pieces.length) {
      throwIfAborted();
      const [off, len] = pieces[next++];
      const view = buf.subarray(0, len);
      let got = 0;
      while (got < len) {
        const { bytesRead } = await s.read(view, got, len - got, off + got);
        if (!bytesRead) throw new Error(`${src}: short read at byte ${off + got}`);
        got += bytesRead;
      }
      // write each run of non-zero grains (the target reads as zeros already)
      for (let a = 0; a < len;) {
        while (a < len && isZero(view.subarray(a, Math.min(a + GRAIN, len)))) a += GRAIN;
        let b = a;
        while (b < len && !isZero(view.subarray(b, Math.min(b + GRAIN, len)))) b += GRAIN;
        b = Math.min(b, len);
        if (b > a) {
          await d.write(view, a, b - a, off + a);
          written += b - a;
        }
        a = b;
      }
      progress.update(done += len);
    }
  };
  try {
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    await d.sync();
  } finally {
    await s.close();
    await d.close();
  }
  return written;
}
