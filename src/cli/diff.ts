// `ferry diff IMAGE_A IMAGE_B [--json] [--delta OUT.ferrydelta] [--paths GLOB...]`
import type { CommandModule } from 'yargs';
import { diffImages, formatDiff } from '../delta/diff.js';

export const diffCommand: CommandModule = {
  command: 'diff IMAGE_A IMAGE_B',
  describe: 'compare two images file by file, /etc files by lines, packages and registry hives by their parts; --delta writes the difference as a delta file',
  builder: y => y
    .positional('IMAGE_A', { type: 'string', demandOption: true, describe: 'the base image' })
    .positional('IMAGE_B', { type: 'string', demandOption: true, describe: 'the changed image' })
    .option('json', { type: 'boolean', default: false })
    .option('delta', { type: 'string', describe: 'write the difference, with the added data, into this .ferrydelta file' })
    .option('paths', { type: 'string', array: true, describe: "only these guest paths: globs such as '/etc/**' (repeat for more)" }),
  handler: async a => {
    const r = await diffImages({ a: String(a.IMAGE_A), b: String(a.IMAGE_B), delta: a.delta as string | undefined, paths: (a.paths as unknown[] | undefined)?.map(String) });
    process.stdout.write(a.json ? JSON.stringify(r, null, 2) + '\n' : formatDiff(r));
  },
};
