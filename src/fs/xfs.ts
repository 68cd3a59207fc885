// xfs: format with the source's geometry and feature bits (crc, finobt,
// reflink, bigtime, …) from xfs_info, so the guest's kernel reads it.
// Source and rebuilt twin share a UUID: mount both with nouuid.
import { join } from 'node:path';
import { mountFs } from '../blockdev/mount.js';
import { run } from '../util/exec.js';
import { withScope } from '../util/scope.js';
import { withMountedRo, mountedCopy } from './mounted.js';
import { usedBytes } from './copy-tree.js';
import { MiB, usedFromFree, type ByteRange, type FsFacts, type FsModule } from './types.js';

const SOURCE_OPTS = ['norecovery', 'nouuid'];

/** xfs_info prints "section =name key=val key=val, key=val"; collect key=val per section. */
function parseXfsInfo(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let section = '';
  for (const line of text.split('\n')) {
    const head = /^(\S+)\s*=/.exec(line);
    if (head && !line.startsWith(' ')) section = head[1];
    const body = head && !line.startsWith(' ') ? line.slice(line.indexOf('=') + 1) : line;
    for (const m of body.matchAll(/([a-z0-9-]+)=(\S+?)(?:,|\s|$)/g)) {
      (out[section] ??= {})[m[1]] = m[2];
    }
  }
  return out;
}

async function probe(_scope: unknown, dev: string, work: string, type: string): Promise<FsFacts> {
  const info = parseXfsInfo((await run('xfs_info', [dev])).stdout);
  const uuid = (await run('xfs_admin', ['-u', dev])).stdout.replace(/^UUID = /, '').trim();
  const labelOut = (await run('xfs_admin', ['-l', dev])).stdout.trim();
  const label = /label = "(.*)"/.exec(labelOut)?.[1];
  const used = await withMountedRo(dev, work, type, SOURCE_OPTS, usedBytes);
  return { type, uuid, label: label || undefined, usedBytes: used, detail: { info } };
}

/** xfs_db's free extents per allocation group (freesp -d: "agno agbno len"), inverted. */
async function usedRanges(dev: string): Promise<ByteRange[]> {
  const sb = (await run('xfs_db', ['-r', '-c', 'sb 0', '-c', 'p agcount agblocks blocksize dblocks', dev])).stdout;
  const v = (k: string) => Number(new RegExp(`^${k} = (\\d+)`, 'm').exec(sb)?.[1]);
  const agblocks = v('agblocks');
  const free: [number, number][] = [];
  for (const m of (await run('xfs_db', ['-r', '-c', 'freesp -d', dev])).stdout.matchAll(/^\s*(\d+)\s+(\d+)\s+(\d+)\s*$/gm)) {
    free.push([Number(m[1]) * agblocks + Number(m[2]), Number(m[3])]);
  }
  return usedFromFree(free.sort((x, y) => x[0] - y[0]), v('dblocks'), v('blocksize'));
}

// mkfs.xfs refuses file systems under 300 MiB.
const minBytes = (f: FsFacts) => Math.max(300 * MiB, Math.ceil(f.usedBytes * 1.15) + 64 * MiB);

async function format(dev: string, f: FsFacts): Promise<void> {
  const info = (f.detail as { info: Record<string, Record<string, string>> }).info;
  const md = info['meta-data'] ?? {};
  const pick = (sec: Record<string, string> | undefined, keys: string[]) =>
    keys.filter(k => sec?.[k] !== undefined).map(k => `${k}=${sec![k]}`);
  const m = [`uuid=${f.uuid}`, ...pick(md, ['crc', 'finobt', 'rmapbt', 'reflink', 'bigtime', 'inobtcount'])];
  const i = [...(md.isize ? [`size=${md.isize}`] : []), ...pick(md, ['sparse', 'nrext64'])];
  const args = ['-f', '-q', '-K', '-m', m.join(','), '-i', i.join(',')];
  if (info.data?.bsize) args.push('-b', `size=${info.data.bsize}`);
  if (md.sectsz) args.push('-s', `size=${md.sectsz}`);
  if (info.naming?.ftype) args.push('-n', `ftype=${info.naming.ftype}`);
  if (f.label) args.push('-L', f.label);
  args.push(dev);
  await run('mkfs.xfs', args);
}

export const xfsModule: FsModule = {
  types: ['xfs'],
  probe,
  minBytes,
  format,
  copy: ctx => mountedCopy(ctx, { sourceOptions: SOURCE_OPTS, targetOptions: ['nouuid'] }),
  usedRanges,
  clone: {
    // the log is copied with the rest; the guest (or the grow's mount) replays it as it would the source's
    refuse: () => undefined,
    sizeBytes(f) {
      const d = (f.detail as { info: Record<string, Record<string, string>> }).info.data ?? {};
      return Number(d.blocks) * Number(d.bsize);
    },
    // xfs grows only mounted; nouuid: the source, same UUID, is attached too
    grow: ctx => withScope(async scope => {
      const dir = join(ctx.work, `grow-${ctx.targetDev.replace(/\W/g, '')}`);
      await mountFs(scope, ctx.targetDev, dir, 'xfs', ['nouuid']);
      await run('xfs_growfs', [dir]);
    }),
  },
  verifyAs: { kind: 'mount', options: () => SOURCE_OPTS },
  features(f) {
    const info = (f.detail as { info: Record<string, Record<string, string>> }).info;
    const keys = ['crc', 'finobt', 'sparse', 'rmapbt', 'reflink', 'bigtime', 'inobtcount', 'nrext64', 'isize', 'sectsz'];
    return [...keys.filter(k => info['meta-data']?.[k] !== undefined).map(k => `${k}=${info['meta-data'][k]}`),
      `bsize=${info.data?.bsize}`, `ftype=${info.naming?.ftype}`].sort();
  },
};
