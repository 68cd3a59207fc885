// The used-block path (--mode clone): copy only the byte ranges a file
// system's own allocation map marks used (ext block bitmaps, xfs free-space
// btrees, inverted by the module's usedRanges) from the source device onto a
// fresh, all-zero target device at the same offsets. Free blocks are never
// read, so a deleted file's old data stays behind, and an all-zero piece is
// not written, so the target stays sparse. Ranges are not merged across gaps:
// a gap is free space, and free space may hold stale data.
//
// The copy can prove itself while it reads: each piece's SHA-256 is taken from
// the bytes read for the copy, and the target's same pieces are read back once
// and hashed (checkCopyProof). The source is not read a second time, which a
// file-level verify of the copied file system would do.
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
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

/** The used ranges as the pieces they are copied (and proved) in */
export interface CopyProof { pieces: ByteRange[]; /** SHA-256 of each piece as read from the source */ digests: string[] }

const piecesOf = (ranges: ByteRange[]) => {
  const pieces: ByteRange[] = [];
  for (const [off, len] of ranges) for (let at = 0; at < len; at += PIECE) pieces.push([off + at, Math.min(PIECE, len - at)]);
  return pieces;
};

/** Fill view with the bytes of `file` at `off`; a short read (the device ended) is an error. */
async function readFull(fh: FileHandle, file: string, view: Buffer, off: number): Promise<void> {
  for (let got = 0; got < view.length;) {
    const { bytesRead } = await fh.read(view, got, view.length - got, off + got);
    if (!bytesRead) throw new Error(`${file}: short read at byte ${off + got}`);
    got += bytesRead;
  }
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Read each piece of `file` (at byte base + its offset), IN_FLIGHT at a time so reads of one overlap
 * the work on another, and hand it to `onPiece` with its index; onPiece returning false stops the rest.
 */
async function eachPiece(file: string, base: number, pieces: ByteRange[], progress: ProgressSink,
  onPiece: (view: Buffer, i: number) => Promise<boolean | void>): Promise<void> {
  const fh = await open(file, 'r');
  let next = 0, done = 0, stop = false;
  const worker = async () => {
    const buf = Buffer.alloc(PIECE);
    while (next < pieces.length && !stop) {
      throwIfAborted();
      const i = next++;
      const [off, len] = pieces[i];
      const view = buf.subarray(0, len);
      await readFull(fh, file, view, base + off);
      if (await onPiece(view, i) === false) stop = true;
      progress.update(done += len);
    }
  };
  try {
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  } finally {
    await fh.close();
  }
}

/**
 * Copy each range of src to the same offset of dst; returns the bytes written
 * (zero pieces skipped) and, with prove, each piece's hash as read.
 */
export async function copyUsedRanges(src: string, dst: string, ranges: ByteRange[], progress: ProgressSink, opts: { prove?: boolean } = {}): Promise<{ written: number; proof?: CopyProof }> {
  const pieces = piecesOf(ranges);
  const digests: string[] = [];
  const d = await open(dst, 'r+');
  let written = 0;
  try {
    await eachPiece(src, 0, pieces, progress, async (view, i) => {
      const off = pieces[i][0], len = view.length;
      if (opts.prove) digests[i] = sha256(view);
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
    });
    await d.sync();
  } finally {
    await d.close();
  }
  return { written, ...(opts.prove ? { proof: { pieces, digests } } : {}) };
}

/**
 * Read the proof's pieces back once from the target disk's file (the volume at
 * byte `base` of it), not from the loop device the copy wrote through: that
 * device's page cache holds what was written, the file's is dropped when a FUSE
 * export is opened, so what is read is what the target stores. Returns the
 * volume's byte offset of the first piece that differs, or undefined.
 */
export async function checkCopyProof(file: string, base: number, proof: CopyProof, progress: ProgressSink): Promise<number | undefined> {
  let differs: number | undefined;
  await eachPiece(file, base, proof.pieces, progress, async (view, i) => {
    if (sha256(view) === proof.digests[i]) return true;
    const off = proof.pieces[i][0];
    differs = Math.min(differs ?? off, off);
    return false;
  });
  return differs;
}
