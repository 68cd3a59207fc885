// `ferry customize IMAGE`: hostname, addresses, a new identity, an SSH key,
// the timezone — written statically, every change listed.
import type { Argv, CommandModule } from 'yargs';
import type { Change } from '../../converters/linux/change.js';
import { customizeImage } from '../customize/customize.js';
import { customizationFromArgs, customizeOptions } from './customize-options.js';

export const formatCustomizeChanges = (changes: Change[]) => changes.map(c => `  ${c.file}: ${c.before.split('\n')[0]} -> ${c.after.split('\n')[0]}  (${c.reason})`);

export const customizeCommand: CommandModule = {
  command: 'customize IMAGE',
  describe: 'give an image its own identity: hostname, addresses, new machine-id and SSH host keys, an SSH key, timezone (with --overlay the image stays untouched)',
  builder: (y: Argv) => customizeOptions(y
    .positional('IMAGE', { type: 'string', demandOption: true, describe: 'the disk image (or the template of --overlay)' })
    .option('overlay', { type: 'string', describe: 'write every change into this new qcow2 whose backing file is IMAGE' })
    .option('dry-run', { type: 'boolean', default: false, describe: 'list the changes; write nothing' })
    .option('json', { type: 'boolean', default: false })),
  handler: async a => {
    // nothing asked for (undefined) is refused by customizeImage with the list of options
    const c = (await customizationFromArgs(a)) ?? {};
    const r = await customizeImage({ image: a.IMAGE as string, overlay: a.overlay as string | undefined, customization: c, dryRun: a['dry-run'] as boolean });
    process.stdout.write(a.json ? JSON.stringify({ event: 'result', ...r }, null, 2) + '\n' : [
      r.dryRun ? `${r.image}: ${r.changes.length} change(s) customize would make (nothing was written, --dry-run)` : `${r.written}${r.overlay ? ` (overlay on ${r.image})` : ''}: ${r.changes.length} change(s)`,
      ...formatCustomizeChanges(r.changes),
    ].join('\n') + '\n');
  },
};
