// Thin typed wrapper over `qemu-img --output=json` (no usable npm package exists).
import { run } from '../util/exec.js';

export interface ImageInfo {
  filename: string;
  format: string;
  virtualSize: number;
  actualSize: number;
  backingFilename?: string;
  dirty: boolean;
  /** qcow2 only: the image marked itself corrupt */
  corrupt: boolean;
}

interface RawInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'dirty-flag'?: boolean;
  'format-specific'?: { data?: { corrupt?: boolean } };
}

function toInfo(r: RawInfo): ImageInfo {
  return {
    filename: r.filename,
    format: r.format,
    virtualSize: r['virtual-size'],
    actualSize: r['actual-size'] ?? 0,
    backingFilename: r['full-backing-filename'] ?? r['backing-filename'],
    dirty: r['dirty-flag'] ?? false,
    corrupt: r['format-specific']?.data?.corrupt ?? false,
  };
}

/** Info for the image and its whole backing chain (first = the image itself). */
export async function imageInfoChain(path: string, format?: string): Promise<ImageInfo[]> {
  const args = ['info', '--output=json', '--backing-chain', '-U'];
  if (format) args.push('-f', format);
  args.push(path);
  const { stdout } = await run('qemu-img', args);
  const parsed = JSON.parse(stdout) as RawInfo[];
  return parsed.map(toInfo);
}

export async function imageInfo(path: string, format?: string): Promise<ImageInfo> {
  return (await imageInfoChain(path, format))[0];
}

/** Create an empty (sparse) image. */
export async function createImage(path: string, format: string, size: number): Promise<void> {
  const args = ['create', '-q', '-f', format];
  // qcow2 without preallocation is sparse; lazy refcounts make metadata writes cheaper during the copy.
  if (format === 'qcow2') args.push('-o', 'lazy_refcounts=on');
  args.push(path, String(size));
  await run('qemu-img', args);
}

/** qemu-img check; returns the problems it reports (empty when clean or unsupported). */
export async function checkImage(path: string, format: string): Promise<string[]> {
  const r = await run('qemu-img', ['check', '--output=json', '-f', format, '-U', path], { okCodes: [1, 2, 3, 63] });
  if (r.exitCode === 63) return []; // format has no check
  if (r.exitCode === 0) return [];
  try {
    const j = JSON.parse(r.stdout) as { corruptions?: number; leaks?: number; 'check-errors'?: number };
    const out: string[] = [];
    if (j.corruptions) out.push(`${j.corruptions} corruptions`);
    if (j['check-errors']) out.push(`${j['check-errors']} check errors`);
    return out;
  } catch {
    return [r.stderr.trim() || `qemu-img check exit ${r.exitCode}`];
  }
}

/** Block copy with zero skipping (the --mode block path and the benchmark peer). */
export async function convertImage(src: string, srcFormat: string, dst: string, dstFormat: string,
  opts: { intoEmptyImage?: boolean } = {}): Promise<void> {
  // intoEmptyImage: dst was just created (e.g. larger than src); -n keeps it, and it reads as zeros
  const into = opts.intoEmptyImage ? ['-n', '--target-is-zero'] : [];
  await run('qemu-img', ['convert', ...into, '-f', srcFormat, '-O', dstFormat, '-S', '4k', '-W', src, dst]);
}

/** Differences qemu-img compare reports between two images (empty = identical). */
export async function compareImages(a: string, aFormat: string, b: string, bFormat: string): Promise<string[]> {
  const r = await run('qemu-img', ['compare', '-f', aFormat, '-F', bFormat, a, b], { okCodes: [1] });
  return r.exitCode === 0 ? [] : [r.stdout.trim() || 'contents differ'];
}

/** Grow a raw or qcow2 image in place (block mode with a larger --size). */
export async function resizeImage(path: string, format: string, size: number): Promise<void> {
  await run('qemu-img', ['resize', '-q', '-f', format, path, String(size)]);
}
