// What an initramfs holds, read the way the kernel unpacks it: zero or more
// uncompressed cpio archives (early microcode) followed by one compressed
// archive. Listing is left to cpio and the decompressors; this module only
// finds where each archive starts.
import { open, stat } from 'node:fs/promises';
import { execa } from 'execa';
import type { Initramfs } from '../report.js';

const COMPRESSORS: { name: string; magic: number[]; cmd: [string, string[]] }[] = [
  { name: 'gzip', magic: [0x1f, 0x8b], cmd: ['gzip', ['-dc']] },
  { name: 'xz', magic: [0xfd, 0x37, 0x7a, 0x58, 0x5a], cmd: ['xz', ['-dc']] },
  { name: 'zstd', magic: [0x28, 0xb5, 0x2f, 0xfd], cmd: ['zstd', ['-dcq']] },
  { name: 'lz4', magic: [0x02, 0x21, 0x4c, 0x18], cmd: ['lz4', ['-dc']] },
  { name: 'bzip2', magic: [0x42, 0x5a, 0x68], cmd: ['bzip2', ['-dc']] },
  { name: 'lzma', magic: [0x5d, 0x00, 0x00], cmd: ['xz', ['--format=lzma', '-dc']] },
];
const CPIO_MAGIC = /^07070[127]/;
/** larger than any real initramfs; a bigger file is not read into memory */
const MAX_BYTES = 1 << 30;

export async function readInitramfs(hostPath: string, guestPath: string): Promise<Initramfs> {
  const result: Initramfs = { path: guestPath, earlyCpio: 0, modules: [] };
  try {
    const { layout, names } = await scanInitramfs(await readWhole(hostPath));
    Object.assign(result, { compression: layout.compression, earlyCpio: layout.earlyCount });
    result.modules = [...new Set(names.map(moduleName).filter((m): m is string => !!m))].sort();
  } catch (e) {
    result.error = { code: 'INITRAMFS_UNREADABLE', message: `${guestPath} cannot be listed: ${String((e as Error).message).trim().split('\n').at(-1)}` };
  }
  return result;
}

export async function readWhole(hostPath: string): Promise<Buffer> {
  const size = (await stat(hostPath)).size;
  if (size > MAX_BYTES) throw new Error(`${size} bytes is more than an initramfs can be`);
  const fh = await open(hostPath, 'r');
  const data = Buffer.alloc(size);
  try { await fh.read(data, 0, size, 0); } finally { await fh.close(); }
  return data;
}

/** where the main archive starts (after the early cpio archives) and how it is compressed */
export interface InitramfsLayout { earlyCount: number; mainStart: number; compression: string }

export async function scanInitramfs(data: Buffer): Promise<{ layout: InitramfsLayout; names: string[] }> {
  const names: string[] = [];
  const layout: InitramfsLayout = { earlyCount: 0, mainStart: 0, compression: 'none' };
  let off = 0;
  while (off < data.length) {
    while (off < data.length && data[off] === 0) off++; // archives are padded with zeros
    if (off >= data.length) break;
    layout.mainStart = off;
    const rest = data.subarray(off);
    if (CPIO_MAGIC.test(rest.subarray(0, 6).toString('latin1'))) {
      const listed = await listCpio(rest);
      names.push(...listed.names);
      off += listed.bytes;
      // an uncompressed archive followed by more is early microcode; a last one is the main archive
      if (data.subarray(off).some(b => b !== 0)) layout.earlyCount++;
      else layout.compression = 'none';
      continue;
    }
    const c = compressorOf(rest);
    if (!c) throw new Error(`unknown data at byte ${off} (neither cpio nor a known compression)`);
    layout.compression = c.name;
    names.push(...await listCompressed(rest, c.cmd));
    break; // the decompressor consumed the rest
  }
  return { layout, names };
}

const compressorOf = (buf: Buffer) => COMPRESSORS.find(c => c.magic.every((b, i) => buf[i] === b));

/** the decompress command of a compression name */
export const decompressCommand = (name: string) => COMPRESSORS.find(c => c.name === name)?.cmd;

/** names in the first cpio archive of buf, and how many bytes it takes (cpio counts 512-byte blocks) */
async function listCpio(buf: Buffer): Promise<{ names: string[]; bytes: number }> {
  const r = await execa('cpio', ['-t'], { input: buf, reject: false, encoding: 'utf8' });
  const blocks = /(\d+) blocks?/.exec(String(r.stderr));
  if (r.exitCode !== 0 || !blocks) throw new Error(`cpio: ${String(r.stderr).trim()}`);
  return { names: String(r.stdout).split('\n').filter(Boolean), bytes: Number(blocks[1]) * 512 };
}

async function listCompressed(buf: Buffer, [cmd, args]: [string, string[]]): Promise<string[]> {
  // decompressor | cpio -t: the decompressed archive is never held in memory
  const r = await execa(cmd, args, { input: buf, reject: false }).pipe('cpio', ['-t', '--quiet'], { reject: false });
  // trailing garbage after the archive makes some decompressors complain; the names listed are still good
  const names = String(r.stdout).split('\n').filter(Boolean);
  if (!names.length) throw new Error(`${cmd}: ${String(r.stderr || '').trim() || 'no files'}`);
  return names;
}

/** usr/lib/modules/6.1.0-27-amd64/kernel/drivers/ata/ahci.ko.xz → ahci */
export function moduleName(path: string): string | undefined {
  const m = /([^/]+)\.ko(?:\.(?:xz|zst|gz))?$/.exec(path);
  return m ? m[1].replace(/-/g, '_') : undefined;
}
