// `ferry verify SOURCE TARGET`: both opened read-only, compared, every difference listed.
import { openSource } from '../sources/open.js';
import { workDir } from '../blockdev/mount.js';
import { notRoot } from '../errors.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { reportingLostSources } from '../sources/watchdog.js';
import { withScope } from '../util/scope.js';
import { verifyDisks } from '../verify/disks.js';
import { createProgress } from '../util/progress.js';

export async function verifyCommand(source: string, target: string, json: boolean): Promise<number> {
  if (process.getuid?.() !== 0) throw notRoot();
  const endpoints = [parseEndpoint(source), parseEndpoint(target)];
  // the bar goes to stderr on a terminal; --json keeps stdout one document
  const progress = createProgress(json ? 'none' : 'bar');
  const r = await reportingLostSources(endpoints, () => withScope(async scope => {
    const work = await workDir(scope);
    const a = await openSource(scope, endpoints[0], work, 'verify-source', progress);
    const b = await openSource(scope, endpoints[1], work, 'verify-target', progress);
    return verifyDisks(a, b, work, progress);
  }));
  if (json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
  else if (r.equivalent) process.stdout.write(`equivalent: ${r.filesystems.map(f => `p${f.number}${f.lv ? ` ${f.lv}` : ''} ${f.fs ?? 'blocks'}${f.entries !== undefined ? ` (${f.entries} entries)` : ''}`).join(', ')}\n`);
  else process.stdout.write(`${r.differences.length} difference(s):\n${r.differences.map(d => `  ${d}`).join('\n')}\n`);
  return r.equivalent ? 0 : 6;
}
