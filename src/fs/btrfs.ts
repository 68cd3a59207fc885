// btrfs: same fsid, label, node/sector size and feature set; the subvolume
// tree recreated (parents first), the default subvolume and read-only flags kept.
import { join } from 'node:path';
import { run } from '../util/exec.js';
import { withMountedRo, mountedCopy } from './mounted.js';
import { usedBytes } from './copy-tree.js';
import { MiB, type FsFacts, type FsModule } from './types.js';

// Mount the top level (id 5) so every subvolume is visible whatever the default is.
const TOP = ['subvolid=5'];
const SOURCE_OPTS = [...TOP, 'rescue=nologreplay'];

// dump-super flag names → mkfs.btrfs -O names
const FEATURES: Record<string, string> = {
  MIXED_GROUPS: 'mixed-bg', EXTENDED_IREF: 'extref', RAID56: 'raid56', SKINNY_METADATA: 'skinny-metadata',
  NO_HOLES: 'no-holes', FREE_SPACE_TREE: 'free-space-tree', BLOCK_GROUP_TREE: 'block-group-tree',
};

async function probe(_scope: unknown, dev: string, work: string, type: string): Promise<FsFacts> {
  const text = (await run('btrfs', ['inspect-internal', 'dump-super', dev])).stdout;
  const field = (k: string) => new RegExp(`^${k}\\s+(.*)$`, 'm').exec(text)?.[1]?.trim();
  // flag lines look like "incompat_flags 0x361 ( MIXED_BACKREF |\n\t\t\t  BIG_METADATA | … )"
  const flags = new Set([...text.matchAll(/^(?:compat|compat_ro|incompat)_flags\s+0x[0-9a-f]+\s*\(([^)]*)\)/gm)]
    .flatMap(m => m[1].split('|').map(x => x.trim())));
  const used = await withMountedRo(dev, work, type, SOURCE_OPTS, usedBytes);
  return {
    type,
    uuid: field('fsid'),
    label: field('label') || undefined,
    usedBytes: used,
    detail: {
      nodeSize: field('nodesize'),
      sectorSize: field('sectorsize'),
      features: Object.entries(FEATURES).map(([flag, name]) => (flags.has(flag) ? name : `^${name}`)),
    },
  };
}

const minBytes = (f: FsFacts) => Math.max(256 * MiB, Math.ceil(f.usedBytes * 1.3) + 128 * MiB);

/** Which names this mkfs.btrfs takes with -O and which with -R (free-space-tree moved between them over versions). */
async function mkfsFeatureSets(): Promise<{ O: Set<string>; R: Set<string> }> {
  const names = async (flag: string) => new Set([...(await run('mkfs.btrfs', [flag, 'list-all'], { okCodes: [1] })).stderr
    .matchAll(/^(\S+)\s+-/gm)].map(m => m[1]));
  return { O: await names('-O'), R: await names('-R') };
}

async function format(dev: string, f: FsFacts): Promise<void> {
  const d = f.detail as { nodeSize?: string; sectorSize?: string; features: string[] };
  const sets = await mkfsFeatureSets();
  const bare = (x: string) => x.replace(/^\^/, '');
  const args = ['-f', '-q', '--nodiscard'];
  const o = d.features.filter(x => sets.O.has(bare(x))), r = d.features.filter(x => sets.R.has(bare(x)) && !sets.O.has(bare(x)));
  if (o.length) args.push('-O', o.join(','));
  if (r.length) args.push('-R', r.join(','));
  if (d.nodeSize) args.push('-n', d.nodeSize);
  if (d.sectorSize) args.push('-s', d.sectorSize);
  if (f.uuid) args.push('-U', f.uuid);
  if (f.label) args.push('-L', f.label);
  args.push(dev);
  await run('mkfs.btrfs', args);
}

interface Subvolume { id: string; path: string }

export async function listSubvolumes(mnt: string): Promise<Subvolume[]> {
  const out = (await run('btrfs', ['subvolume', 'list', mnt])).stdout;
  return [...out.matchAll(/^ID (\d+) .* path (.*)$/gm)].map(m => ({ id: m[1], path: m[2] }));
}

/** The default subvolume's path, or '' for the top level. */
export async function defaultSubvolume(mnt: string): Promise<string> {
  const out = (await run('btrfs', ['subvolume', 'get-default', mnt])).stdout;
  return /path (.*)$/m.exec(out)?.[1]?.trim() ?? '';
}

async function createSubvolumes(src: string, dst: string): Promise<void> {
  const subs = (await listSubvolumes(src)).sort((a, b) => a.path.split('/').length - b.path.split('/').length);
  for (const s of subs) await run('btrfs', ['subvolume', 'create', join(dst, s.path)]);
}

async function finishSubvolumes(src: string, dst: string): Promise<void> {
  const def = await defaultSubvolume(src);
  const subs = await listSubvolumes(dst);
  if (def) {
    const id = subs.find(s => s.path === def)?.id;
    if (id) await run('btrfs', ['subvolume', 'set-default', id, dst]);
  }
  for (const s of subs) {
    const ro = (await run('btrfs', ['property', 'get', '-ts', join(src, s.path), 'ro'])).stdout.trim();
    if (ro === 'ro=true') await run('btrfs', ['property', 'set', '-ts', join(dst, s.path), 'ro', 'true']);
  }
}

export const btrfsModule: FsModule = {
  types: ['btrfs'],
  probe,
  minBytes,
  format,
  copy: ctx => mountedCopy(ctx, {
    sourceOptions: SOURCE_OPTS, targetOptions: TOP, before: createSubvolumes, after: finishSubvolumes,
  }),
  verifyAs: { kind: 'mount', options: () => SOURCE_OPTS },
  features: f => {
    const d = f.detail as { nodeSize?: string; sectorSize?: string; features: string[] };
    return [...d.features.filter(x => !x.startsWith('^')), `nodesize=${d.nodeSize}`, `sectorsize=${d.sectorSize}`].sort();
  },
  async compareExtra(src, dst) {
    const describe = async (mnt: string) => {
      const subs = await listSubvolumes(mnt);
      const ro = await Promise.all(subs.map(async s => (await run('btrfs', ['property', 'get', '-ts', join(mnt, s.path), 'ro'])).stdout.trim()));
      return { def: await defaultSubvolume(mnt), subs: subs.map((s, i) => `${s.path}(${ro[i]})`).sort().join(' ') };
    };
    const [a, b] = await Promise.all([describe(src), describe(dst)]);
    const diffs: string[] = [];
    if (a.subs !== b.subs) diffs.push(`subvolumes ${a.subs} → ${b.subs}`);
    if (a.def !== b.def) diffs.push(`default subvolume ${a.def || '(top)'} → ${b.def || '(top)'}`);
    return diffs;
  },
};
