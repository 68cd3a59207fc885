// `ferry factory build RECIPE.yaml`
import type { Argv, CommandModule } from 'yargs';
import { factoryBuild } from '../delta/factory.js';

function builder(y: Argv): Argv {
  return y
    .command('build RECIPE', 'base catalog image + deltas + customization + profile → a new catalog image (a qcow2 overlay of the base)', b => b
      .positional('RECIPE', { type: 'string', demandOption: true, describe: 'a YAML recipe: name, base, output, deltas, customize, profile, tags' })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const r = await factoryBuild(a.RECIPE!, { notice: line => process.stderr.write(`ferry: ${line}\n`) });
      process.stdout.write(a.json ? JSON.stringify(r, null, 2) + '\n'
        : `built ${r.name} (${r.output}) from ${r.base}: ${r.deltas.length} delta(s), ${r.changes.length} change(s); recorded in the catalog\n`);
    })
    .demandCommand(1, 'name a factory command: build');
}

export const factoryCommand: CommandModule = {
  command: 'factory',
  describe: 'build catalog images from recipes',
  builder,
  handler: () => undefined,
};
