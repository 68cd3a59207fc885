// `ferry images …`: the image catalog. Text for people, --json for scripts
// (stdout is then one JSON document; notices about images inspected again
// or missing go to stderr either way).
import type { Argv, CommandModule } from 'yargs';
import { openDb } from '../catalog/db.js';
import {
  addImage, listImages, removeImage, searchImages, showImage, type Catalog, type ImageSummary, type OsSummary,
} from '../catalog/images.js';
import { inspect } from '../inspect/inspect.js';
import { credentialOptions, SOURCE_FORMS } from './source-options.js';
import { table } from './table.js';



const notice = (line: string) => process.stderr.write(`ferry: ${line}\n`);

/** Run fn against the catalog, closing the database however it ends. */
async function withCatalog<T>(fn: (c: Catalog) => Promise<T>): Promise<T> {
  const db = openDb();
  try {
    return await fn({ db, inspect, notice });
  } finally {
    db.close();
  }
}

const out = (json: boolean, value: unknown, text: () => string) =>
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text());

export function osLine(o: OsSummary): string {
  const what = o.type === 'linux' ? `${o.distro ?? 'linux'} ${o.patchLevel ?? o.version ?? '?'}` : `${o.name ?? 'Windows'} ${o.version ?? ''}${o.patchLevel ? ` ${o.patchLevel}` : ''}`;
  const extra = [o.type, o.arch, o.firmware, o.kernels.length ? `kernel ${o.kernels.join(', ')}` : undefined].filter(Boolean);
  return `${what.trim()} (${extra.join(', ')})`;
}

const osText = (i: ImageSummary) => i.os.length ? i.os.map(osLine).join('; ') : 'no operating system found';

const imagesTable = (images: (ImageSummary & { state?: string })[], withState: boolean) => images.length === 0 ? '' : table([
  ['NAME', ...(withState ? ['STATE'] : []), 'OS', 'TAGS', 'SOURCE'],
  ...images.map(i => [i.name, ...(withState ? [i.state ?? ''] : []), osText(i), i.tags.join(',') || '-', i.source]),
]);

function builder(y: Argv): Argv {
  return y
    .command('add SOURCE', 'inspect a disk image and keep it, with its report, in the catalog', b => credentialOptions(b)
      .positional('SOURCE', { type: 'string', demandOption: true, describe: SOURCE_FORMS })
      .option('name', { type: 'string', describe: "the image's name in the catalog (default: the file's base name without extension)" })
      .option('tag', { type: 'string', array: true, default: [] as string[], describe: 'a tag to search by (repeat for more)' })
      .option('json', { type: 'boolean', default: false }),
    async a => withCatalog(async c => {
      const r = await addImage(c, a.SOURCE!, { name: a.name, tags: a.tag.map(String) });
      out(a.json, r, () => `added ${r.name} (${r.source}): ${osText(r)}${r.tags.length ? `; tags: ${r.tags.join(', ')}` : ''}\n`);
    }))
    .command('list', 'every image in the catalog, with whether its report is still current', b => b
      .option('json', { type: 'boolean', default: false }),
    async a => withCatalog(async c => {
      const images = await listImages(c);
      out(a.json, { images }, () => imagesTable(images, true) || "the catalog is empty; add an image with 'ferry images add SOURCE'\n");
    }))
    .command('show NAME', "an image's full inspection report (inspected again first if the image changed)", b => b
      .positional('NAME', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    async a => withCatalog(async c => {
      const r = await showImage(c, a.NAME!);
      out(a.json, r, () => formatShow(r));
    }))
    .command('rm NAME', 'forget an image (its file is not touched)', b => b
      .positional('NAME', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    async a => withCatalog(async c => {
      const r = removeImage(c, a.NAME!);
      out(a.json, { removed: r.name, source: r.source }, () => `removed ${r.name} from the catalog (${r.source} is not touched)\n`);
    }))
    .command('search', 'images matching every filter given; changed images are inspected again first', b => b
      // the command's own --version filter, not yargs' print-the-version flag
      .version(false)
      .option('os', { type: 'string', describe: 'linux or windows' })
      .option('distro', { type: 'string', describe: 'os-release ID: debian, ubuntu, rhel, rocky, …' })
      .option('version', { type: 'string', array: true, describe: "OS version comparison: '>=12', '<13', '=12.7', '12' (the 12 series); repeat for a range" })
      .option('kernel', { type: 'string', array: true, describe: "a kernel's version: '>=6.1' compares the upstream part, '>=5.14.0-427' the whole release" })
      .option('has-driver', { type: 'string', array: true, describe: 'a storage or network kernel module, or a Windows driver or service (repeat: all of them)' })
      .option('firmware', { type: 'string', describe: 'bios or uefi' })
      .option('tag', { type: 'string', array: true, describe: 'a tag (repeat: all of them)' })
      .option('json', { type: 'boolean', default: false }),
    async a => withCatalog(async c => {
      const list = (v: unknown) => v === undefined ? undefined : (v as unknown[]).map(String);
      const r = await searchImages(c, {
        os: a.os, distro: a.distro, version: list(a.version), kernel: list(a.kernel),
        hasDriver: list(a['has-driver']), firmware: a.firmware, tag: list(a.tag),
      });
      out(a.json, r, () => imagesTable(r.images, false));
    }))
    .demandCommand(1, 'name an images command: add, list, show, rm or search');
}

function formatShow(r: Awaited<ReturnType<typeof showImage>>): string {
  const lines = [`${r.name}: ${r.source}`, `  tags: ${r.tags.join(', ') || '-'}`, `  inspected: ${r.inspectedAt}${r.refreshed ? ' (just now: the image had changed)' : ''}`,
    `  format: ${r.report.format}, partition table: ${r.report.partitionTable ? r.report.partitionTable.label : 'none'}`];
  for (const fs of r.report.fileSystems) {
    lines.push(`  p${fs.partition} ${fs.type ?? '?'}${fs.label ? ` LABEL=${fs.label}` : ''}${fs.uuid ? ` UUID=${fs.uuid}` : ''}${fs.error ? ` (${fs.error.code})` : ''}`);
  }
  if (r.recipe) {
    const rc = r.recipe as { base?: string; deltas?: string[]; customize?: unknown; profile?: string; builtAt?: string; file?: string };
    lines.push(`  made by: ferry factory build ${rc.file ?? ''} at ${rc.builtAt ?? '?'}`, `    base: ${rc.base}`, `    deltas: ${(rc.deltas ?? []).join(', ') || '-'}`,
      `    customize: ${rc.customize ? JSON.stringify(rc.customize) : '-'}`, `    profile: ${rc.profile ?? '-'}`);
  }
  if (!r.report.operatingSystems.length) lines.push(`  no operating system found${r.report.note ? `: ${r.report.note}` : ''}`);
  for (const os of r.report.operatingSystems) {
    if (os.type === 'linux') {
      lines.push(`  ${os.name} (${os.distro} ${os.patchLevel ?? os.version ?? '?'}${os.arch ? `, ${os.arch}` : ''}), firmware ${os.firmware}, boot ${os.bootloader.kind}`);
      for (const k of os.kernels) {
        lines.push(`    kernel ${k.version}${k.default ? ' (default)' : ''}: storage ${k.modules.storage.length}, network ${k.modules.network.length} modules`);
      }
    } else {
      lines.push(`  ${os.productName ?? 'Windows'} ${os.version ?? ''}${os.build ? ` build ${os.build}` : ''}${os.patchLevel ? ` ${os.patchLevel}` : ''}${os.arch ? `, ${os.arch}` : ''}`);
      lines.push(`    boot storage drivers: ${os.bootStorageDrivers.map(d => d.name).join(', ') || '-'}`);
    }
  }
  return lines.join('\n') + '\n';
}

export const imagesCommand: CommandModule = {
  command: 'images',
  describe: 'the image catalog: add disk images, then list, show, remove and search them by what they contain',
  builder,
  handler: () => undefined,
};
