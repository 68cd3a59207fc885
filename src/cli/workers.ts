// `ferry workers list [--json]`: the fleet's workers as the shared store knows
// them: name, tags, last heartbeat (and whether it is stale), running jobs, version.
import type { Argv, CommandModule } from 'yargs';
import { openFleetStore } from '../store/kysely-store.js';
import { locationOf, storeOptions, type StoreArgs } from './store-options.js';
import { table } from './table.js';

interface ListArgs extends StoreArgs { json: boolean; 'heartbeat-timeout': number }

async function list(a: ListArgs): Promise<void> {
  const store = await openFleetStore(locationOf(a), { poolSize: 1 });
  try {
    const ws = await store.workers(a['heartbeat-timeout'] * 1000);
    if (a.json) { process.stdout.write(JSON.stringify({ workers: ws }, null, 2) + '\n'); return; }
    if (!ws.length) { process.stdout.write('no workers\n'); return; }
    process.stdout.write(table([['NAME', 'HOST', 'TAGS', 'HEARTBEAT', 'RUNNING', 'VERSION'],
      ...ws.map(w => [w.name, w.host, w.tags.join(',') || '-', `${w.heartbeatAt}${w.stale ? ' (stale)' : ''}`, w.running.join(',') || '-', w.version])]));
  } finally {
    await store.close();
  }
}

export const workersCommand: CommandModule = {
  command: 'workers',
  describe: 'the fleet\'s workers (shared store)',
  builder: (y: Argv) => y.command({
    command: 'list',
    describe: 'name, tags, heartbeat, running jobs, version',
    builder: (yy: Argv) => storeOptions(yy)
      .option('json', { type: 'boolean', default: false })
      .option('heartbeat-timeout', { type: 'number', default: 15, describe: 'seconds after which a heartbeat counts as stale' }),
    handler: a => list(a as unknown as ListArgs),
  }).demandCommand(1, 'name a workers command: list'),
  handler: () => undefined,
};
