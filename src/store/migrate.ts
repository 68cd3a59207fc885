// `ferry store migrate --from sqlite:PATH --to postgres://…`: an embedded
// installation moved into a shared store: its jobs (their steps and logs), its
// image catalog (ferry.db) and its driver records (drivers-db/drivers.db; the
// object files themselves stay where they are), in one transaction on the
// target, then compared table by table: row counts and a SHA-256 over every
// row in key order, computed the same way on both sides. The sources are
// opened read-only and never written; a target that already holds jobs,
// images or drivers is refused (nothing is merged or overwritten).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect, sql } from 'kysely';
import { FerryError, usageError } from '../errors.js';
import type { StoreLocation } from './connection.js';
import { openFleetStore } from './kysely-store.js';

export interface TableReport { table: string; source: number; target: number; sourceSha256: string; targetSha256: string; same: boolean }

/**
 * What moves: from which embedded database, the source table (when its name differs), the columns,
 * which of them are integers (pg gives a bigint back as text), the key order of the checksum, and
 * whether the target's id sequence must be moved past the copied ids.
 */
interface Moved { table: string; db: 'ferry' | 'drivers'; source?: string; columns: string[]; ints: string[]; order: string[]; serial?: string }
const TABLES: Moved[] = [
  { table: 'jobs', db: 'ferry', columns: ['id', 'state', 'spec', 'source_host', 'error', 'result', 'created_at', 'updated_at', 'attempts', 'runner', 'cancel_requested'], ints: ['attempts', 'cancel_requested'], order: ['id'] },
  { table: 'job_steps', db: 'ferry', columns: ['job_id', 'idx', 'name', 'state', 'started_at', 'ended_at', 'checkpoint', 'progress'], ints: ['idx'], order: ['job_id', 'idx'] },
  { table: 'job_logs', db: 'ferry', columns: ['job_id', 'n', 'at', 'line'], ints: ['n'], order: ['job_id', 'n'] },
  { table: 'images', db: 'ferry', columns: ['id', 'name', 'source', 'kind', 'credentials', 'added_at', 'identity', 'inspected_at', 'report', 'recipe'], ints: ['id'], order: ['id'], serial: 'id' },
  { table: 'image_tags', db: 'ferry', columns: ['image_id', 'tag'], ints: ['image_id'], order: ['image_id', 'tag'] },
  { table: 'image_os', db: 'ferry', columns: ['image_id', 'idx', 'type', 'distro', 'name', 'version', 'patch_level', 'match_version', 'arch', 'firmware'], ints: ['image_id', 'idx'], order: ['image_id', 'idx'] },
  { table: 'image_kernels', db: 'ferry', columns: ['image_id', 'os_idx', 'version'], ints: ['image_id', 'os_idx'], order: ['image_id', 'os_idx', 'version'] },
  { table: 'image_drivers', db: 'ferry', columns: ['image_id', 'os_idx', 'name', 'kind'], ints: ['image_id', 'os_idx'], order: ['image_id', 'os_idx', 'name', 'kind'] },
  { table: 'driver_objects', db: 'drivers', source: 'objects', columns: ['sha256', 'size', 'stored_at'], ints: ['size'], order: ['sha256'] },
  {
    table: 'driver_files', db: 'drivers', source: 'files',
    columns: ['id', 'sha256', 'component', 'os_family', 'os_release', 'version', 'variant', 'arch', 'patch_levels', 'container', 'container_version', 'path_in_container', 'pinned', 'last_used', 'imported_at'],
    ints: ['id', 'pinned'], order: ['id'], serial: 'id',
  },
];
const BATCH = 500;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDb = Kysely<any>;

/** Values as both drivers give them back: integers as numbers, text as text, absent as null. */
const canonical = (row: Record<string, unknown>, t: Moved) => JSON.stringify(t.columns.map(c => {
  const v = row[c];
  return v === undefined || v === null ? null : t.ints.includes(c) ? Number(v) : v;
}));

/** Rows in key order, a page at a time; text keys in byte order on both (SQLite's BINARY, PostgreSQL's "C"). */
async function eachPage(db: AnyDb, postgres: boolean, name: string, cols: string[], t: Moved, f: (rows: Record<string, unknown>[]) => Promise<void>): Promise<void> {
  for (let offset = 0; ; offset += BATCH) {
    let q = db.selectFrom(name).select(cols);
    for (const o of t.order) q = postgres && !t.ints.includes(o) ? q.orderBy(sql`${sql.ref(o)} COLLATE "C"`) : q.orderBy(o);
    const rows = await q.limit(BATCH).offset(offset).execute() as Record<string, unknown>[];
    if (rows.length) await f(rows);
    if (rows.length < BATCH) break;
  }
}

async function tableDigest(db: AnyDb | undefined, postgres: boolean, name: string, cols: string[], t: Moved): Promise<{ n: number; sha256: string }> {
  const h = createHash('sha256');
  let n = 0;
  if (db) await eachPage(db, postgres, name, cols, t, async rows => { for (const r of rows) h.update(canonical(r, t) + '\n'); n += rows.length; });
  return { n, sha256: h.digest('hex') };
}

/** An embedded database, read-only; absent (no drivers imported yet) is no rows. */
function openSource(path: string): { db: AnyDb; raw: Database.Database } | undefined {
  if (!existsSync(path)) return undefined;
  const raw = new Database(path, { readonly: true, fileMustExist: true });
  return { raw, db: new Kysely({ dialect: new SqliteDialect({ database: raw }) }) };
}

/** The source's columns of the table that exist there (an older ferry.db may lack a later column: null). */
function sourceColumns(raw: Database.Database | undefined, name: string, t: Moved): string[] | undefined {
  if (!raw) return undefined;
  const have = new Set((raw.prepare(`SELECT name FROM pragma_table_info(?)`).all(name) as { name: string }[]).map(r => r.name));
  return have.size ? t.columns.filter(c => have.has(c)) : undefined;
}

export async function migrateStore(from: StoreLocation, to: StoreLocation, log: (line: string) => void = () => undefined, opts: { driversDir?: string } = {}): Promise<TableReport[]> {
  if (from.dialect !== 'sqlite') throw usageError('--from: give the embedded store as sqlite:PATH (a FERRY_HOME or its ferry.db)');
  if (to.dialect !== 'postgres') throw usageError('--to: give the shared store as postgres://USER@HOST/DB');
  const path = join(from.home, 'ferry.db');
  if (!existsSync(path)) throw usageError(`--from: ${path} does not exist`);
  const sources = { ferry: openSource(path)!, drivers: openSource(join(opts.driversDir ?? join(from.home, 'drivers-db'), 'drivers.db')) };
  const dst = await openFleetStore(to, { poolSize: 2 }).catch(async e => { for (const s of Object.values(sources)) await s?.db.destroy(); throw e; });
  const dstDb = dst.db as unknown as AnyDb;
  const plan = TABLES.map(t => ({ t, src: sources[t.db], name: t.source ?? t.table, cols: sourceColumns(sources[t.db]?.raw, t.source ?? t.table, t) }));
  try {
    const running = await sources.ferry.db.selectFrom('jobs').select('id').where('state', '=', 'running').execute() as { id: string }[];
    if (running.length) throw new FerryError('STORE_BUSY', 4, `--from: ${running.length} job(s) are running (${running.map(r => r.id).join(', ')}); stop ferry serve first, its jobs then queue to resume`);
    for (const table of ['jobs', 'images', 'driver_files']) {
      const { n } = await dstDb.selectFrom(table).select(eb => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow() as { n: number };
      if (Number(n)) throw new FerryError('STORE_NOT_EMPTY', 4, `--to: the store already holds ${n} row(s) in ${table}; migrate into an empty database`);
    }
    await dstDb.transaction().execute(async trx => {
      for (const { t, src, name, cols } of plan) {
        let moved = 0;
        if (src && cols) {
          await eachPage(src.db, false, name, cols, t, async rows => { await trx.insertInto(t.table).values(rows).execute(); moved += rows.length; });
        }
        // ids given by the copy: the next one the target gives must come after them
        if (t.serial && moved) await sql`SELECT setval(pg_get_serial_sequence(${t.table}, ${t.serial}), (SELECT max(${sql.ref(t.serial)}) FROM ${sql.table(t.table)}))`.execute(trx);
        log(`${t.table}: ${moved} row(s) copied`);
      }
    });
    const report: TableReport[] = [];
    for (const { t, src, name, cols } of plan) {
      const a = await tableDigest(cols && src?.db, false, name, t.columns.filter(c => !cols || cols.includes(c)), t);
      // the target's every column, the ones the source lacked as null on both sides
      const b = await tableDigest(dstDb, true, t.table, t.columns, t);
      report.push({ table: t.table, source: a.n, target: b.n, sourceSha256: a.sha256, targetSha256: b.sha256, same: a.n === b.n && a.sha256 === b.sha256 });
    }
    const bad = report.filter(r => !r.same);
    if (bad.length) throw new FerryError('MIGRATE_MISMATCH', 6, `the copy differs from the source in ${bad.map(r => `${r.table} (${r.source} vs ${r.target} rows)`).join(', ')}`);
    return report;
  } finally {
    for (const s of Object.values(sources)) await s?.db.destroy();
    await dst.close();
  }
}
