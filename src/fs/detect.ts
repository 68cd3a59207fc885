// File-system detection with blkid's low-level probe (reads the device, not the cache).
import { run } from '../util/exec.js';

export interface Probe { type?: string; uuid?: string; label?: string; version?: string; usage?: string }

export async function probeDevice(dev: string): Promise<Probe> {
  const r = await run('blkid', ['-p', '-o', 'export', dev], { okCodes: [2] });
  const kv: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv[line.slice(0, i)] = line.slice(i + 1).replace(/\\(.)/g, '$1'); // export form escapes like a shell
  }
  return { type: kv.TYPE, uuid: kv.UUID, label: kv.LABEL, version: kv.VERSION, usage: kv.USAGE };
}
