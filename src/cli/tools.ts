// `ferry tools …`: the registered-tool store (on-demand customization tools).
// Text for people, --json for scripts (stdout is then one JSON document).
import type { Argv, CommandModule } from 'yargs';
import { parseToolRef, ToolStore, type Tool } from '../customize/tools.js';
import { table } from './table.js';

const out = (json: boolean, value: unknown, text: () => string) =>
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : text());

const size = (t: Tool) => t.files.reduce((n, f) => n + f.size, 0);

function listText(tools: Tool[]): string {
  if (!tools.length) return "no registered tools; add one with 'ferry tools add CONTAINER --name NAME'\n";
  // the version customizations use is the highest of each name
  const latest = new Map(tools.map(t => [t.name, t.version]));
  return table([
    ['NAME', 'VERSION', 'USED', 'OS', 'ENTRY', 'FILES', 'BYTES', 'ADDED', 'CONTAINER'],
    ...tools.map(t => [t.name, t.version, latest.get(t.name) === t.version ? 'yes' : '-', t.os, t.entry, String(t.files.length), String(size(t)), t.addedAt, `${t.container} (${t.kind})`]),
  ]);
}

function showText(versions: Tool[], store: ToolStore): string {
  const lines: string[] = [];
  for (const t of versions) {
    lines.push(`${t.name} ${t.version}${t === versions.at(-1) ? '  (used by customizations)' : ''}`,
      `  entry:     ${t.entry} (${t.os})`, `  container: ${t.container} (${t.kind})`, `  added:     ${t.addedAt}`,
      `  digest:    ${t.digest}`, `  stored in: ${store.filesDir(t)}`, `  files:`);
    for (const f of t.files) lines.push(`    ${f.path}  ${f.size} bytes  ${f.sha256.slice(0, 16)}`);
  }
  return lines.join('\n') + '\n';
}

function builder(y: Argv): Argv {
  return y
    .command('add CONTAINER', 'register a tool: a .cab, .zip/.tar or a directory', b => b
      .positional('CONTAINER', { type: 'string', demandOption: true })
      // the tool's --version, not yargs' print-the-version flag
      .version(false)
      .option('name', { type: 'string', demandOption: true, describe: "the tool's name (Windows --new-identity uses the tool named 'sysprep')" })
      .option('version', { type: 'string', describe: "default: the package's version, else one more than the highest numbered version" })
      .option('entry', { type: 'string', describe: 'the file to run, inside the container (default: run.cmd, run.bat, run.ps1, run.exe, setup.cmd, sysprep.exe, run.sh, run, or the only file)' })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const t = await new ToolStore().add(a.CONTAINER as string, a.name, { version: a.version, entry: a.entry });
      out(a.json, t, () => `${t.status === 'new' ? 'registered' : 'already registered'} ${t.name} ${t.version}: ${t.files.length} file(s), entry ${t.entry} (${t.os})\n`);
    })
    .command('list', 'the registered tools and their versions', b => b
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const tools = await new ToolStore().list();
      out(a.json, tools, () => listText(tools));
    })
    .command('show NAME', 'every version of a tool, with its files', b => b
      .positional('NAME', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const store = new ToolStore();
      const ref = parseToolRef(a.NAME as string, 'show');
      const versions = (await store.list(ref.name)).filter(t => !ref.version || t.version === ref.version);
      if (!versions.length) await store.resolve(ref); // throws TOOL_NOT_FOUND naming what is registered
      out(a.json, versions.map(t => ({ ...t, stored: store.filesDir(t) })), () => showText(versions, store));
    })
    .command('rm NAME', 'remove a tool (NAME) or one version of it (NAME@VERSION)', b => b
      .positional('NAME', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const gone = await new ToolStore().remove(parseToolRef(a.NAME as string, 'rm'));
      out(a.json, gone, () => gone.map(t => `removed ${t.name} ${t.version}\n`).join(''));
    })
    .demandCommand(1, 'name a tools command: add, list, show or rm');
}

export const toolsCommand: CommandModule = {
  command: 'tools',
  describe: 'on-demand customization tools: add a container, list, show, rm',
  builder,
  handler: () => undefined,
};
