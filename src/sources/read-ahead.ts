// Reading a network source ahead of a file-system copy. The copy asks for
// thousands of small pieces in directory order, and each is a round trip
// through the loop device, qemu's FUSE export (one request at a time), the
// NBD or iSCSI client and the server. The file system's used ranges, read
// alongside in large pieces and in disk order, land in the page cache of the
// whole-disk loop device the copy reads through (held open for the run, see
// blockdev/disk.ts), so the copy finds most of them in memory.
import { open, readFile } from 'node:fs/promises';
import type { ByteRange } from '../fs/types.js';

/** Pieces closer than this are read as one: reading a small gap costs less than another round trip. */
const MERGE_GAP = 256 << 10;
/** The size of one read. */
const PIECE = 4 << 20;
/** Two reads in flight keep the server busy while the kernel hands the last one over (measured best of 1, 2, 4). */
const READERS = 2;

/** Sorted ranges merged across small gaps and cut into pieces of at most `piece` bytes. */
export function readPieces(ranges: ByteRange[], gap = MERGE_GAP, piece = PIECE): ByteRange[] {
  const merged: ByteRange[] = [];
  for (const [at, len] of ranges) {
    const last = merged.at(-1);
    if (last && at - (last[0] + last[1]) <= gap) last[1] = Math.max(last[1], at + len - last[0]);
    else merged.push([at, len]);
  }
  const out: ByteRange[] = [];
  for (const [at, len] of merged) for (let o = 0; o < len; o += piece) out.push([at + o, Math.min(piece, len - o)]);
  return out;
}

/** Memory the kernel could give the page cache now (MemAvailable). */
async function availableMemory(): Promise<number> {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(await readFile('/proc/meminfo', 'utf8').catch(() => ''));
  return m ? Number(m[1]) * 1024 : 0;
}

/**
 * Start reading `ranges` (relative to `base`) of `file` in the background,
 * throwing the bytes away, while the copy runs (measured: reading them all
 * first and copying after took 1 s longer on the Debian guest over NBD).
 * Nothing is read when they would not fit in half the available memory: the
 * copy would find them evicted again. A read error ends it quietly: the copy
 * reads the same bytes and reports what is wrong. `stop()` ends it early
 * (the copy is done, failed or cancelled) and resolves to the bytes read.
 */
export async function startReadAhead(file: string, base: number, ranges: ByteRange[]): Promise<{ stop(): Promise<number> }> {
  const pieces = readPieces(ranges);
  const total = pieces.reduce((n, [, len]) => n + len, 0);
  if (!total || total > (await availableMemory()) / 2) return { stop: async () => 0 };
  const fh = await open(file, 'r');
  let next = 0, bytes = 0, stopped = false;
  const reader = async () => {
    const buf = Buffer.allocUnsafe(PIECE);
    while (next < pieces.length && !stopped) {
      const [at, len] = pieces[next++];
      const { bytesRead } = await fh.read(buf, 0, len, base + at);
      bytes += bytesRead;
    }
  };
  const reading = Promise.all(Array.from({ length: READERS }, () => reader().catch(() => { stopped = true; })))
    .finally(() => fh.close());
  return { async stop() { stopped = true; await reading; return bytes; } };
}
