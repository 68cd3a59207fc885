// `ferry verify SOURCE TARGET`: both opened read-only, compared, every difference listed.
import { openSource } from '../blockdev/disk.js';
import { workDir } from '../blockdev/mount.js';
import { notRoot } from '../errors.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { withScope } from '../util/scope.js';
import { verifyDisks } from '../verify/disks.js';
import { createProgress } from '../util/progress.js';

export async function verifyCommand(source: string, target: string, json: boolean): Promise<number> {
  if (process.getuid?.() !== 0) throw notRoot();
  const r = await withScope(async scope => {
    const work = await workDir(scope);
    const a = await openSource(scope, parseEndpoint(source), work, 'verify-source');
    const b = await openSource(scope, parseEndpoint(target), work, 'verify-target');
    // the bar goes to stderr on a terminal; --json keeps stdout one document
    return verifyDisks(a, b, work, createProgress(json ? 'none' : 'bar'));
  });
  if (json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else if (r.equivalent) process.stdout.write(`equivalent: ${r.filesystems.map(f => `p${f.number} ${f.fs ?? 'blocks'}${f.entries !== undefined ? ` (${f.entries} entries)` : ''}`).join(', ')}\n`);
  else process.stdout.write(`${r.differences.length} difference(s):\n${r.differences.map(d => `  ${d}`).join('\n')}\n`);
  return r.equivalent ? 0 : 6;
}
