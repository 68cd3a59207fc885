// `ferry worker --store postgres://… --name HOST-A [--concurrency 2] [--per-host 1] [--tag T]…`:
// one host of a fleet taking jobs from the shared store (src/store/worker.ts)
// until SIGTERM/SIGINT; its running jobs are then queued again for any worker.
import type { Argv, CommandModule } from 'yargs';
import { hostname } from 'node:os';
import { notRoot, usageError } from '../errors.js';
import { describeStore } from '../store/connection.js';
import { openFleetStore } from '../store/kysely-store.js';
import { FleetWorker } from '../store/worker.js';
import { TAG_RE } from '../jobs/spec.js';
import { locationOf, storeOptions, type StoreArgs } from './store-options.js';

interface WorkerArgs extends StoreArgs { name?: string; concurrency: number; 'per-host': number; tag?: string[]; 'heartbeat-timeout': number }

export function checkWorkerArgs(a: { name?: string; concurrency: number; 'per-host': number; tag?: string[] }): { name: string; tags: string[] } {
  for (const k of ['concurrency', 'per-host'] as const) {
    if (!Number.isInteger(a[k]) || a[k] < 1) throw usageError(`--${k} ${a[k]}: give a whole number of jobs, 1 or more`);
  }
  const name = a.name ?? hostname();
  if (!TAG_RE.test(name)) throw usageError(`--name ${name}: letters, digits, . _ - (up to 63)`);
  const tags = (a.tag ?? []).flatMap(t => String(t).split(',')).map(t => t.trim()).filter(Boolean);
  for (const t of tags) if (!TAG_RE.test(t)) throw usageError(`--tag ${t}: letters, digits, . _ - (up to 63)`);
  return { name, tags };
}

/** Run until a stop signal; resolves once the worker's jobs are stopped and queued again. */
export async function runUntilSignal(stop: () => Promise<void>, what: string): Promise<void> {
  await new Promise<void>(resolve => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      process.stderr.write(`${what}: ${signal}: stopping\n`);
      void stop().finally(resolve);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

async function worker(a: WorkerArgs): Promise<void> {
  const { name, tags } = checkWorkerArgs(a);
  const loc = locationOf(a);
  if (loc.dialect !== 'postgres') throw usageError('ferry worker needs a shared store: --store postgres://USER@HOST/DB (or FERRY_STORE); the embedded SQLite runs jobs in ferry serve');
  if (!(a['heartbeat-timeout'] >= 3)) throw usageError(`--heartbeat-timeout ${a['heartbeat-timeout']}: at least 3 seconds`);
  if (process.getuid?.() !== 0) throw notRoot();
  const store = await openFleetStore(loc, { poolSize: 2 });
  const w = new FleetWorker(store, { name, tags, concurrency: a.concurrency, perHost: a['per-host'], staleAfterMs: a['heartbeat-timeout'] * 1000 });
  try {
    await w.start();
  } catch (e) {
    await store.close();
    throw e;
  }
  process.stdout.write(`ferry worker ${name}: taking jobs from ${describeStore(loc)}${tags.length ? ` (tags ${tags.join(', ')})` : ''}\n`);
  await runUntilSignal(async () => { try { await w.stop(); } finally { await store.close(); } }, `ferry worker ${name}`);
  process.stderr.write(`ferry worker ${name}: stopped\n`);
}

export const workerCommand: CommandModule<object, WorkerArgs> = {
  command: 'worker',
  describe: 'one host of a fleet: run jobs from a shared PostgreSQL store',
  builder: (y: Argv<object>) => storeOptions(y)
    .option('name', { type: 'string', describe: 'this worker\'s name in `ferry workers list` (default: the host name)' })
    .option('concurrency', { type: 'number', default: 2, describe: 'jobs running at once on this worker' })
    .option('per-host', { type: 'number', default: 1, describe: 'jobs reading from one source host at once, over all workers' })
    .option('tag', { type: 'string', array: true, describe: 'a tag jobs may require (spec requires: [TAG]), e.g. nbd-rack-3; repeat for more' })
    .option('heartbeat-timeout', { type: 'number', default: 15, describe: 'seconds of silence after which another worker takes this one\'s jobs over' }) as unknown as Argv<WorkerArgs>,
  handler: worker,
};
