// `ferry cleanup [--dry-run] [--json]`: undo what killed `ferry` runs left
// (loop devices, mounts, qemu-storage-daemons, work dirs, partial targets).
// Every command that starts does the same quietly first; this is the
// operator's way to see it and to do it on demand. A live run is never touched.
import type { Argv, CommandModule } from 'yargs';
import { notRoot } from '../errors.js';
import { deadRuns, describeResource, reclaimDeadRuns } from '../jobs/run-journal.js';

interface CleanupArgs { 'dry-run': boolean; json: boolean }

export const cleanupCommand: CommandModule<object, CleanupArgs> = {
  command: 'cleanup',
  describe: 'remove what killed ferry runs left behind (loops, mounts, daemons, work dirs, partial targets)',
  builder: (y: Argv<object>) => y
    .option('dry-run', { type: 'boolean', default: false, describe: 'only list what would be removed' })
    .option('json', { type: 'boolean', default: false }),
  handler: async a => {
    if (process.getuid?.() !== 0) throw notRoot();
    if (a['dry-run']) {
      const runs = await deadRuns();
      if (a.json) process.stdout.write(JSON.stringify({ runs: runs.map(r => ({ runner: r.runner, held: r.held })) }, null, 2) + '\n');
      else process.stdout.write(runs.length
        ? runs.map(r => `killed run ${r.runner}:\n${r.held.map(h => `  would remove ${describeResource(h)}`).join('\n') || '  nothing held'}`).join('\n') + '\n'
        : 'nothing to clean up\n');
      return;
    }
    const done = await reclaimDeadRuns(() => undefined);
    if (a.json) process.stdout.write(JSON.stringify({ removed: done }, null, 2) + '\n');
    else process.stdout.write(done.length ? done.join('\n') + '\n' : 'nothing to clean up\n');
  },
};
