// A file's sha256, streamed: the tests' proof that a source is byte for byte
// unchanged. Its own module so that code outside node:test (the bench) can use it.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 22 })) h.update(c as Buffer);
  return h.digest('hex');
}

/**
 * Every file's sha256 keyed by path, a failed read recorded as its error: one
 * deepEqual against the sums taken before judges all sources at once, so a
 * first mismatch never hides whether the others changed.
 */
export async function sha256All(paths: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const p of paths) out[p] = await sha256(p).catch((e: Error) => `unreadable: ${e.message}`);
  return out;
}
