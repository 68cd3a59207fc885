// The delta file (.ferrydelta): one self-describing, checksummed file.
//
//   offset 0   8 bytes  magic "FRYDELTA"
//          8   4 bytes  format version, big-endian (1)
//         12   8 bytes  manifest length M, big-endian
//         20   M bytes  manifest: UTF-8 JSON (DeltaManifest below)
//       20+M   D bytes  data: the blobs the manifest names by offset (relative to 20+M), size and sha256
//     20+M+D  32 bytes  sha256 of every byte before it
//
// A reader checks the magic, the version, that the file is exactly as long as
// the manifest says and the trailing sha256, before it acts on anything: a
// truncated or corrupted file is refused whole (DELTA_CORRUPT).
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { open, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { FerryError } from '../errors.js';
import type { Entry } from './tree.js';
import type { LineEdit, PackageChange, RegChange } from './parts.js';
import type { OsFamily } from './volumes.js';

export const MAGIC = 'FRYDELTA';
export const VERSION = 1;
const HEAD = 20;

export interface Blob { sha256: string; size: number; offset: number }

/** an entry's new state: its metadata, and for a file the blob with its bytes */
export interface NewState {
  kind: Entry['kind']; mode: number; uid: number; gid: number; mtime: string; atime: string; link?: string; xattrs?: Record<string, string>; blob?: string;
  /** a file with hard links: the first of its names (in path order), which the others are linked to */
  linkGroup?: string;
}
/** what the target must hold for an operation to apply cleanly */
export interface BaseState { kind: Entry['kind']; sha256?: string; link?: string }

export type Op =
  | { op: 'add'; volume: string; path: string; new: NewState }
  | { op: 'change'; volume: string; path: string; base: BaseState; new: NewState; aspects: string[]; lines?: LineEdit[]; baseBlob?: string }
  | { op: 'remove'; volume: string; path: string; base: BaseState }
  | { op: 'registry'; volume: string; path: string; changes: RegChange[] };

export interface DeltaManifest {
  format: 'ferry-delta';
  version: number;
  createdAt: string;
  osFamily: OsFamily;
  /** the images it was made from (informational) */
  base: { image: string; os?: string };
  target: { image: string; os?: string };
  packages?: PackageChange[];
  ops: Op[];
  blobs: Record<string, Blob>;
  dataSize: number;
}

export const deltaCorrupt = (file: string, why: string) =>
  new FerryError('DELTA_CORRUPT', 3, `${file} is not a usable Ferry delta: ${why}; make the delta again with 'ferry diff A B --delta FILE'`, { file });

/** Write the delta: blobs are (sha256 → host file to read the bytes from). */
export async function writeDelta(file: string, m: Omit<DeltaManifest, 'blobs' | 'dataSize' | 'format' | 'version'>, blobs: Map<string, { size: number; from: string }>): Promise<DeltaManifest> {
  const index: Record<string, Blob> = {};
  let offset = 0;
  for (const [sha, b] of blobs) { index[sha] = { sha256: sha, size: b.size, offset }; offset += b.size; }
  const manifest: DeltaManifest = { format: 'ferry-delta', version: VERSION, ...m, blobs: index, dataSize: offset };
  const json = Buffer.from(JSON.stringify(manifest));
  const head = Buffer.alloc(HEAD);
  head.write(MAGIC, 0, 'latin1');
  head.writeUInt32BE(VERSION, 8);
  head.writeBigUInt64BE(BigInt(json.length), 12);
  const sum = createHash('sha256');
  const out = createWriteStream(file, { flags: 'wx' });
  const put = async (buf: Buffer) => { sum.update(buf); if (!out.write(buf)) await once(out, 'drain'); };
  try {
    await put(head);
    await put(json);
    for (const [sha, b] of blobs) {
      const h = createHash('sha256');
      let n = 0;
      for await (const chunk of createReadStream(b.from)) { h.update(chunk as Buffer); n += (chunk as Buffer).length; await put(chunk as Buffer); }
      if (n !== b.size || h.digest('hex') !== sha) throw new Error(`${b.from} changed while the delta was written`);
    }
    out.end(sum.digest());
    await once(out, 'finish');
  } catch (e) {
    out.destroy();
    await rm(file, { force: true });
    throw e;
  }
  return manifest;
}

export interface DeltaFile { file: string; manifest: DeltaManifest; dataStart: number }

/** Open and check a delta whole (magic, version, length, checksum) before anything acts on it. */
export async function readDelta(file: string): Promise<DeltaFile> {
  const st = await stat(file).catch(() => undefined);
  if (!st?.isFile()) throw new FerryError('DELTA_MISSING', 2, `delta file ${file} does not exist`, { file });
  if (st.size < HEAD + 32) throw deltaCorrupt(file, `it is ${st.size} bytes, shorter than a delta's header and checksum`);
  const fh = await open(file, 'r');
  let manifest: DeltaManifest;
  let mlen: number;
  try {
    const head = Buffer.alloc(HEAD);
    await fh.read(head, 0, HEAD, 0);
    if (head.toString('latin1', 0, 8) !== MAGIC) throw deltaCorrupt(file, 'no FRYDELTA magic at its start');
    const version = head.readUInt32BE(8);
    if (version !== VERSION) throw new FerryError('DELTA_VERSION', 3, `${file} is a version ${version} delta; this Ferry reads version ${VERSION}`, { file, version });
    mlen = Number(head.readBigUInt64BE(12));
    if (HEAD + mlen + 32 > st.size) throw deltaCorrupt(file, `it is truncated (its manifest alone needs ${HEAD + mlen + 32} bytes, the file has ${st.size})`);
    const json = Buffer.alloc(mlen);
    await fh.read(json, 0, mlen, HEAD);
    try { manifest = JSON.parse(json.toString('utf8')) as DeltaManifest; } catch { throw deltaCorrupt(file, 'its manifest is not JSON'); }
    if (manifest.format !== 'ferry-delta' || !Array.isArray(manifest.ops) || typeof manifest.dataSize !== 'number') throw deltaCorrupt(file, 'its manifest lacks the format, ops or dataSize fields');
    const want = HEAD + mlen + manifest.dataSize + 32;
    if (st.size !== want) throw deltaCorrupt(file, `it is ${st.size < want ? 'truncated' : 'too long'}: the manifest gives ${want} bytes, the file has ${st.size}`);
    const trailer = Buffer.alloc(32);
    await fh.read(trailer, 0, 32, st.size - 32);
    const h = createHash('sha256');
    for await (const chunk of createReadStream(file, { start: 0, end: st.size - 33 })) h.update(chunk as Buffer);
    if (!h.digest().equals(trailer)) throw deltaCorrupt(file, 'its sha256 checksum does not match its contents');
  } finally {
    await fh.close();
  }
  return { file, manifest, dataStart: HEAD + mlen };
}

/** the unit in which runs of zeros are left unwritten: a file system block */
const HOLE_BLOCK = 4096;
const ZEROS = Buffer.alloc(HOLE_BLOCK);

/**
 * Write one blob into dest (created or rewritten in place, same inode),
 * streamed: a blob may be larger than memory. Blocks of zeros are not written
 * but skipped over, so they become holes: a sparse file stays sparse (as
 * `cp --sparse=always` makes it), whatever the delta holds.
 */
export async function copyBlob(d: DeltaFile, sha: string, dest: string): Promise<void> {
  const b = d.manifest.blobs[sha];
  if (!b) throw deltaCorrupt(d.file, `it names blob ${sha} but holds no such blob`);
  const h = createHash('sha256');
  const out = await open(dest, 'w');
  try {
    let at = 0;
    if (b.size > 0) {
      // chunks of whole blocks (but the last), so that blocks line up with the file's own
      for await (const chunk of createReadStream(d.file, { start: d.dataStart + b.offset, end: d.dataStart + b.offset + b.size - 1, highWaterMark: 256 * HOLE_BLOCK })) {
        const buf = chunk as Buffer;
        h.update(buf);
        // each run of blocks that are not all zeros in one write
        let run = -1;
        for (let i = 0; i <= buf.length; i += HOLE_BLOCK) {
          const block = buf.subarray(i, i + HOLE_BLOCK);
          const data = block.length > 0 && !block.equals(ZEROS.subarray(0, block.length));
          if (data && run < 0) run = i;
          if (!data && run >= 0) { await out.write(buf, run, i - run, at + run); run = -1; }
        }
        if (run >= 0) await out.write(buf, run, buf.length - run, at + run);
        at += buf.length;
      }
    }
    // a file that ends in a hole gets its length here
    await out.truncate(b.size);
  } finally {
    await out.close();
  }
  // the file's checksum was checked whole when it was opened; this catches a delta changed since
  if (h.digest('hex') !== sha) throw deltaCorrupt(d.file, `blob ${sha} does not match its checksum`);
}

/** the bytes of one blob */
export async function readBlob(d: DeltaFile, sha: string): Promise<Buffer> {
  const b = d.manifest.blobs[sha];
  if (!b) throw deltaCorrupt(d.file, `it names blob ${sha} but holds no such blob`);
  const fh = await open(d.file, 'r');
  try {
    const buf = Buffer.alloc(b.size);
    await fh.read(buf, 0, b.size, d.dataStart + b.offset);
    if (createHash('sha256').update(buf).digest('hex') !== sha) throw deltaCorrupt(d.file, `blob ${sha} does not match its checksum`);
    return buf;
  } finally {
    await fh.close();
  }
}
