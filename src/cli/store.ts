// `ferry store migrate --from sqlite:PATH --to postgres://…`: move an embedded
// installation's jobs, image catalog and driver records into a shared store
// and show that nothing was lost.
import type { Argv, CommandModule } from 'yargs';
import { storeLocation } from '../store/connection.js';
import { migrateStore } from '../store/migrate.js';
import { table } from './table.js';

interface MigrateArgs { from: string; to: string; 'store-password-file'?: string; 'drivers-db'?: string; json: boolean }

async function migrate(a: MigrateArgs): Promise<void> {
  const report = await migrateStore(storeLocation({ store: a.from }), storeLocation({ store: a.to, passwordFile: a['store-password-file'] }),
    line => { if (!a.json) process.stderr.write(`ferry store migrate: ${line}\n`); }, { driversDir: a['drivers-db'] });
  if (a.json) { process.stdout.write(JSON.stringify({ tables: report }, null, 2) + '\n'); return; }
  process.stdout.write(table([['TABLE', 'SOURCE', 'TARGET', 'SHA256'], ...report.map(r => [r.table, String(r.source), String(r.target), `${r.targetSha256.slice(0, 16)}… ${r.same ? 'same' : 'DIFFERENT'}`])]));
}

export const storeCommand: CommandModule = {
  command: 'store',
  describe: 'the job store: move an installation into a shared PostgreSQL',
  builder: (y: Argv) => y.command({
    command: 'migrate',
    describe: 'copy the jobs (steps, logs), images and driver records of an embedded store into an empty shared one, then compare counts and checksums',
    builder: (yy: Argv) => yy
      .option('from', { type: 'string', demandOption: true, describe: 'sqlite:PATH (a FERRY_HOME or its ferry.db)' })
      .option('to', { type: 'string', demandOption: true, describe: 'postgres://USER@HOST/DB (password: --store-password-file or ~/.pgpass)' })
      .option('store-password-file', { type: 'string', describe: "a 0600 file holding the target database user's password" })
      .option('drivers-db', { type: 'string', describe: 'the substitute-file cache whose records move (default: PATH/drivers-db); its object files stay where they are' })
      .option('json', { type: 'boolean', default: false }),
    handler: a => migrate(a as unknown as MigrateArgs),
  }).demandCommand(1, 'name a store command: migrate'),
  handler: () => undefined,
};
