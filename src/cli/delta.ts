// `ferry delta show FILE` and `ferry delta apply FILE IMAGE --overlay NEW.qcow2 [--dry-run] [--force]`
import type { Argv, CommandModule } from 'yargs';
import { applyDelta, formatApply } from '../delta/apply.js';
import { readDelta, type DeltaManifest } from '../delta/format.js';
import { displayPath } from '../delta/volumes.js';

function formatShow(file: string, m: DeltaManifest): string {
  const count = (op: string) => m.ops.filter(o => o.op === op).length;
  const out = [`${file}: Ferry delta version ${m.version}, for a ${m.osFamily} system, made ${m.createdAt}`,
    `  from ${m.base.image} to ${m.target.image}`,
    `  ${m.ops.length} operations: ${count('add')} added, ${count('change')} changed, ${count('remove')} removed, ${count('registry')} registry hives; ${Object.keys(m.blobs).length} blobs, ${m.dataSize} bytes of data`];
  for (const o of m.ops) out.push(`  ${o.op.padEnd(8)} ${displayPath(o.volume, o.path)}${o.op === 'registry' ? ` (${o.changes.length} key/value changes)` : ''}`);
  for (const p of m.packages ?? []) out.push(`  package ${p.change} ${p.name} ${p.from ?? ''}${p.from && p.to ? ' → ' : ''}${p.to ?? ''}`);
  return out.join('\n') + '\n';
}

function builder(y: Argv): Argv {
  return y
    .command('show FILE', "a delta's manifest: where it comes from and what it changes (the file is checked whole first)", b => b
      .positional('FILE', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const d = await readDelta(a.FILE!);
      process.stdout.write(a.json ? JSON.stringify(d.manifest, null, 2) + '\n' : formatShow(a.FILE!, d.manifest));
    })
    .command('apply FILE IMAGE', 'apply a delta to an image through a new qcow2 overlay (IMAGE is not changed)', b => b
      .positional('FILE', { type: 'string', demandOption: true })
      .positional('IMAGE', { type: 'string', demandOption: true })
      .option('overlay', { type: 'string', describe: 'the new qcow2 overlay (backed by IMAGE) that receives every write' })
      .option('dry-run', { type: 'boolean', default: false, describe: 'check and list the operations, write nothing' })
      .option('force', { type: 'boolean', default: false, describe: 'apply even where the image differs from the delta\'s base' })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const r = await applyDelta({ delta: a.FILE!, image: a.IMAGE!, overlay: a.overlay, dryRun: a['dry-run'], force: a.force });
      process.stdout.write(a.json ? JSON.stringify(r, null, 2) + '\n' : formatApply(r));
    })
    .demandCommand(1, 'name a delta command: show or apply');
}

export const deltaCommand: CommandModule = {
  command: 'delta',
  describe: 'image deltas made by `ferry diff --delta`: show one, apply one to an image',
  builder,
  handler: () => undefined,
};
