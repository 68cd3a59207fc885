// A file's sha256, streamed: the tests' proof that a source is byte for byte
// unchanged. Its own module so that code outside node:test (the bench) can use it.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 22 })) h.update(c as Buffer);
  return h.digest('hex');
}
