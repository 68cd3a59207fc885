// `ferry store migrate --from sqlite:PATH --to postgres://…`: an embedded
// installation's jobs (their steps and logs) moved into a shared store, in one
// transaction on the target, then compared table by table: row counts and a
// SHA-256 over every row in key order, computed the same way on both sides.
// The source is opened read-only and never written; a target that already
// holds jobs is refused (nothing is merged or overwritten).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { FerryError, usageError } from '../errors.js';
import type { StoreLocation } from './connection.js';
import { openFleetStore } from './kysely-store.js';
import type { StoreDb } from './schema.js';

export interface TableReport { table: string; source: number; target: number; sourceSha256: string; targetSha256: string; same: boolean }

/** What moves, with each table's key order (the checksum's row order). */
const TABLES = [
  { table: 'jobs', order: ['id'] },
  { table: 'job_steps', order: ['job_id', 'idx'] },
  { table: 'job_logs', order: ['job_id', 'n'] },
] as const;
const BATCH = 500;

/** Values as both drivers give them back: numbers as numbers (pg gives integers as numbers, bigints as text), text as text. */
const canonical = (row: Record<string, unknown>, cols: string[]) => JSON.stringify(cols.map(c => {
  const v = row[c];
  return typeof v === 'bigint' ? Number(v) : typeof v === 'string' && /^(seq|idx|n|attempts|cancel_requested)$/.test(c) ? Number(v) : v ?? null;
}));

async function tableDigest(db: Kysely<StoreDb>, t: typeof TABLES[number], cols: string[]): Promise<{ n: number; sha256: string }> {
  const h = createHash('sha256');
  let n = 0;
  for (let offset = 0; ; offset += BATCH) {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    let q = (db as Kysely<any>).selectFrom(t.table).select(cols);
    for (const o of t.order) q = q.orderBy(o);
    const rows = await q.limit(BATCH).offset(offset).execute() as Record<string, unknown>[];
    for (const r of rows) h.update(canonical(r, cols) + '\n');
    n += rows.length;
    if (rows.length < BATCH) break;
  }
  return { n, sha256: h.digest('hex') };
}

const COLUMNS: Record<string, string[]> = {
  jobs: ['id', 'state', 'spec', 'source_host', 'error', 'result', 'created_at', 'updated_at', 'attempts', 'runner', 'cancel_requested'],
  job_steps: ['job_id', 'idx', 'name', 'state', 'started_at', 'ended_at', 'checkpoint', 'progress'],
  job_logs: ['job_id', 'n', 'at', 'line'],
};

export async function migrateStore(from: StoreLocation, to: StoreLocation, log: (line: string) => void = () => undefined): Promise<TableReport[]> {
  if (from.dialect !== 'sqlite') throw usageError('--from: give the embedded store as sqlite:PATH (a FERRY_HOME or its ferry.db)');
  if (to.dialect !== 'postgres') throw usageError('--to: give the shared store as postgres://USER@HOST/DB');
  const path = join(from.home, 'ferry.db');
  if (!existsSync(path)) throw usageError(`--from: ${path} does not exist`);
  const raw = new Database(path, { readonly: true, fileMustExist: true });
  const src = new Kysely<StoreDb>({ dialect: new SqliteDialect({ database: raw }) });
  const dst = await openFleetStore(to, { poolSize: 2 });
  try {
    const running = await src.selectFrom('jobs').select('id').where('state', '=', 'running').execute();
    if (running.length) throw new FerryError('STORE_BUSY', 4, `--from: ${running.length} job(s) are running (${running.map(r => r.id).join(', ')}); stop ferry serve first, its jobs then queue to resume`);
    const { n } = await dst.db.selectFrom('jobs').select(eb => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    if (Number(n)) throw new FerryError('STORE_NOT_EMPTY', 4, `--to: the store already holds ${n} job(s); migrate into an empty database`);
    await dst.db.transaction().execute(async trx => {
      for (const t of TABLES) {
        let moved = 0;
        for (let offset = 0; ; offset += BATCH) {
          let q = src.selectFrom(t.table).selectAll();
          for (const o of t.order) q = q.orderBy(o as never);
          const rows = await q.limit(BATCH).offset(offset).execute();
          // eslint-disable-next-line @typescript-eslint/no-explicit-any
          if (rows.length) await (trx as Kysely<any>).insertInto(t.table).values(rows).execute();
          moved += rows.length;
          if (rows.length < BATCH) break;
        }
        log(`${t.table}: ${moved} row(s) copied`);
      }
    });
    const report: TableReport[] = [];
    for (const t of TABLES) {
      const a = await tableDigest(src, t, COLUMNS[t.table]);
      const b = await tableDigest(dst.db, t, COLUMNS[t.table]);
      report.push({ table: t.table, source: a.n, target: b.n, sourceSha256: a.sha256, targetSha256: b.sha256, same: a.n === b.n && a.sha256 === b.sha256 });
    }
    const bad = report.filter(r => !r.same);
    if (bad.length) throw new FerryError('MIGRATE_MISMATCH', 6, `the copy differs from the source in ${bad.map(r => `${r.table} (${r.source} vs ${r.target} rows)`).join(', ')}`);
    return report;
  } finally {
    await src.destroy();
    await dst.close();
  }
}
