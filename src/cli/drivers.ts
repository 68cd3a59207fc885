// `ferry drivers …`: the substitute-file cache. Text for people, --json for
// scripts (stdout is then one JSON document).
import type { Argv, CommandModule } from 'yargs';
import { parseSize } from '../convert/options.js';
import { importContainer, type ImportResult } from '../drivers/import.js';
import { DriverStore, type DriverFile, type DriverQuery } from '../drivers/store.js';
import { usageError } from '../errors.js';
import { table } from './table.js';

function withStore<T>(fn: (s: DriverStore) => Promise<T> | T): Promise<T> {
  const s = DriverStore.open();
  return Promise.resolve().then(() => fn(s)).finally(() => s.close());
}

const out = (json: boolean, value: unknown, text: () => string) =>
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text());

const human = (n: number) => n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)}M` : n >= 1024 ? `${(n / 1024).toFixed(1)}K` : `${n}`;
const os = (f: DriverFile) => `${f.osFamily}${f.osRelease ? ` ${f.osRelease}` : ''}`;

const filesTable = (files: DriverFile[]) => files.length === 0 ? '' : table([
  ['ID', 'COMPONENT', 'OS', 'VERSION', 'VARIANT', 'ARCH', 'PATCH', 'SIZE', 'PIN', 'CONTAINER'],
  ...files.map(f => [String(f.id), f.component, os(f), f.version, f.variant ?? '-', f.arch, f.patchLevels.join(',') || '-',
    human(f.size), f.pinned ? 'yes' : '-', `${f.container}${f.containerVersion ? ` ${f.containerVersion}` : ''}`]),
]);

function importText(r: ImportResult): string {
  const n = (s: string) => r.stored.filter(f => f.status === s).length;
  const lines = [`${r.path} (${r.kind}${r.containerVersion ? `, ${r.container} ${r.containerVersion}` : ''}): ${n('new')} new, ${n('present')} already present${n('merged') ? `, ${n('merged')} gained a patch level` : ''}, ${r.ignored} other files ignored`];
  for (const f of r.stored) {
    lines.push(`  ${f.status === 'new' ? 'new    ' : f.status === 'merged' ? 'merged ' : 'present'} ${f.id}  ${f.component} ${f.version}${f.variant ? ` ${f.variant}` : ''} ${os(f)} ${f.arch}${f.patchLevels.length ? ` ${f.patchLevels.join(',')}` : ''}`);
  }
  for (const note of r.notes) lines.push(`  note: ${note}`);
  return lines.join('\n') + '\n';
}

function showText(f: DriverFile, path: string): string {
  const rows: [string, string | undefined][] = [
    ['id', String(f.id)], ['component', f.component], ['os', os(f)], ['version', f.version], ['variant', f.variant],
    ['arch', f.arch], ['patch levels', f.patchLevels.join(', ') || 'any'], ['size', `${f.size} bytes`], ['sha256', f.sha256],
    ['container', `${f.container}${f.containerVersion ? ` ${f.containerVersion}` : ''}`], ['path in container', f.pathInContainer],
    ['pinned', f.pinned ? 'yes' : 'no'], ['last used', f.lastUsed ?? 'never'], ['imported', f.importedAt], ['object', path],
  ];
  return rows.filter(([, v]) => v !== undefined).map(([k, v]) => `${`${k}:`.padEnd(19)}${v}`).join('\n') + '\n';
}

const id = (v: unknown, option: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw usageError(`${option} '${String(v)}' is not a file id; see 'ferry drivers list'`);
  return n;
};

function builder(y: Argv): Argv {
  return y
    .command('import <CONTAINER..>', 'store the kernel modules, Windows drivers, HALs and kernels of packages and media (.deb .rpm .iso .cab .zip .tar or a directory)', b => b
      .positional('CONTAINER', { type: 'string', array: true, demandOption: true })
      .option('patch-level', { type: 'string', describe: "the medium's patch level, e.g. SP2 (default: from its name, as in …-SP2-….iso)" })
      .option('os-release', { type: 'string', describe: 'OS release for files whose container does not name one, e.g. 2003' })
      .option('json', { type: 'boolean', default: false }),
    a => withStore(async s => {
      const results: ImportResult[] = [];
      for (const c of a.CONTAINER as string[]) results.push(await importContainer(s, c, { patchLevel: a['patch-level'], osRelease: a['os-release'] }));
      out(a.json, results, () => results.map(importText).join(''));
    }))
    .command('list', 'the stored files', b => b
      .option('os', { type: 'string', describe: "linux, windows, or a release: '2003', 'debian 12', 'rhel'" })
      .option('component', { type: 'string', describe: 'virtio_blk, viostor.sys, hal.dll …' })
      .option('arch', { type: 'string' })
      .option('kernel', { type: 'string', describe: 'modules built for this kernel release (uname -r)' })
      .option('json', { type: 'boolean', default: false }),
    a => withStore(s => {
      const q: DriverQuery = { component: a.component, arch: a.arch, version: a.kernel };
      if (a.os === 'linux' || a.os === 'windows') q.osFamily = a.os;
      else if (a.os) q.osRelease = a.os;
      const files = s.find(q);
      out(a.json, files, () => files.length ? filesTable(files) : 'no stored files match\n');
    }))
    .command('show ID', 'one stored file and where its bytes are', b => b
      .positional('ID', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    a => withStore(s => {
      const f = s.get(id(a.ID, 'ID'));
      out(a.json, { ...f, object: s.objectPath(f) }, () => showText(f, s.objectPath(f)));
    }))
    .command('verify', 'hash every stored file again and report damage (exit 6 if any)', b => b
      .option('json', { type: 'boolean', default: false }),
    a => withStore(s => {
      const damage = s.verify();
      const count = s.find().length;
      out(a.json, { files: count, damaged: damage }, () => damage.length
        ? damage.map(d => `damaged ${d.id}: ${d.problem}`).join('\n') + `\n${damage.length} of ${count} files damaged; import their containers again\n`
        : `${count} files verified, no damage\n`);
      if (damage.length) process.exitCode = 6;
    }))
    .command('gc', 'evict least-recently-used unpinned files while the store is above a size', b => b
      .option('max-size', { type: 'string', default: '2G', describe: 'keep the store at most this big, e.g. 2G, 500M' })
      .option('pin', { type: 'string', array: true, default: [] as string[], describe: 'pin this file id first (never evicted; repeat for more)' })
      .option('unpin', { type: 'string', array: true, default: [] as string[], describe: 'unpin this file id first' })
      .option('json', { type: 'boolean', default: false }),
    a => withStore(s => {
      const max = parseSize(a['max-size']);
      for (const p of a.pin) s.pin(id(p, '--pin'));
      for (const p of a.unpin) s.pin(id(p, '--unpin'), false);
      const evicted = s.gc(max);
      const size = s.totalSize();
      out(a.json, { evicted, size, maxSize: max }, () =>
        evicted.map(f => `evicted ${f.id}: ${f.component} ${f.version} (${f.container})`).join('\n') + (evicted.length ? '\n' : '')
        + `store holds ${human(size)} (limit ${human(max)})${size > max ? '; the rest is pinned' : ''}\n`);
    }))
    .demandCommand(1, 'name a drivers command: import, list, show, verify or gc');
}

export const driversCommand: CommandModule = {
  command: 'drivers',
  describe: 'the substitute-file cache: import packages and media, then list, show, verify and gc the stored files',
  builder,
  handler: () => undefined,
};
