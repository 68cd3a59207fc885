// The job store on Kysely, one code for both dialects: SQLite (the embedded
// ferry.db, through better-sqlite3) and PostgreSQL (through node-postgres'
// pool). Claiming is one short transaction: the queued jobs are read with
// FOR UPDATE SKIP LOCKED (PostgreSQL), so two workers never wait on or take
// the same row, and the per-source-host bound is counted over every worker's
// running jobs under a transaction-scoped advisory lock on that host, so two
// workers claiming for one host at once cannot both see room.
import { randomBytes } from 'node:crypto';
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import { openDb } from '../catalog/db.js';
import { FerryError, jobNotFound } from '../errors.js';
import type { HeldResource, JobRecord, JobSpec, JobState, StepRecord } from '../jobs/types.js';
import type { StoreLocation } from './connection.js';
import { dbNow, migrationProvider, type Dialect, type JobsTable, type StoreDb } from './schema.js';
import type { ClaimRequest, FleetStore, WorkerInfo, WorkerRecord } from './types.js';

const now = () => new Date().toISOString();
const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v));
const parse = <T>(s: string | null): T | undefined => (s === null ? undefined : JSON.parse(s) as T);

/** A job's update from a worker that no longer holds it (taken over while it was cut off). */
export const leaseLost = (id: string, runner: string) =>
  new FerryError('JOB_LEASE_LOST', 75, `job ${id} is no longer run by ${runner}: another worker took it over; this run stops`);

/** How many queued jobs one claim looks at (the oldest first). */
const CLAIM_WINDOW = 50;

export class KyselyStore implements FleetStore {
  constructor(readonly db: Kysely<StoreDb>, readonly dialect: Dialect, private readonly closeRaw: () => Promise<void> | void) {}

  private async stepsOf(ids: string[], q: Kysely<StoreDb> | Transaction<StoreDb> = this.db): Promise<Map<string, StepRecord[]>> {
    const out = new Map<string, StepRecord[]>(ids.map(i => [i, []]));
    if (!ids.length) return out;
    const rows = await q.selectFrom('job_steps').selectAll().where('job_id', 'in', ids).orderBy('job_id').orderBy('idx').execute();
    for (const r of rows) {
      out.get(r.job_id)!.push({
        name: r.name, state: r.state as StepRecord['state'],
        ...(r.started_at ? { startedAt: r.started_at } : {}),
        ...(r.ended_at ? { endedAt: r.ended_at } : {}),
        ...(r.checkpoint !== null ? { checkpoint: JSON.parse(r.checkpoint) } : {}),
        ...(r.progress !== null ? { progress: JSON.parse(r.progress) } : {}),
      });
    }
    return out;
  }

  private record(r: JobsTable, steps: StepRecord[]): JobRecord {
    return {
      id: r.id, state: r.state as JobState, spec: JSON.parse(r.spec) as JobSpec, sourceHost: r.source_host, steps,
      ...(r.error ? { error: parse(r.error) } : {}),
      ...(r.result ? { result: parse(r.result) } : {}),
      createdAt: r.created_at, updatedAt: r.updated_at, attempts: Number(r.attempts),
      ...(r.runner ? { runner: r.runner } : {}),
      ...(Number(r.cancel_requested) ? { cancelRequested: true } : {}),
    };
  }

  private async records(rows: JobsTable[], q: Kysely<StoreDb> | Transaction<StoreDb> = this.db): Promise<JobRecord[]> {
    const steps = await this.stepsOf(rows.map(r => r.id), q);
    return rows.map(r => this.record(r, steps.get(r.id)!));
  }

  async create(spec: JobSpec, sourceHost: string): Promise<JobRecord> {
    const t = now();
    const id = randomBytes(4).toString('hex');
    await this.db.insertInto('jobs').values({
      id, state: 'queued', spec: JSON.stringify(spec), source_host: sourceHost, error: null, result: null,
      created_at: t, updated_at: t, attempts: 0, runner: null, cancel_requested: 0,
    }).execute();
    return (await this.get(id))!;
  }

  async get(id: string, q: Kysely<StoreDb> | Transaction<StoreDb> = this.db): Promise<JobRecord | undefined> {
    const r = await q.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    return r && (await this.records([r], q))[0];
  }

  async list(filter: { state?: JobState } = {}): Promise<JobRecord[]> {
    const rows = await this.db.selectFrom('jobs').selectAll()
      .$if(filter.state !== undefined, q => q.where('state', '=', filter.state!))
      .orderBy('created_at').orderBy('id').execute();
    return this.records(rows);
  }

  async update(id: string, patch: Partial<Pick<JobRecord, 'state' | 'steps' | 'error' | 'result' | 'attempts' | 'runner' | 'cancelRequested'>>, opts: { ifRunner?: string } = {}): Promise<JobRecord> {
    return this.db.transaction().execute(async trx => {
      const set: Partial<JobsTable> = { updated_at: now() };
      if ('state' in patch) set.state = patch.state;
      if ('error' in patch) set.error = json(patch.error);
      if ('result' in patch) set.result = json(patch.result);
      if ('attempts' in patch) set.attempts = patch.attempts;
      if ('runner' in patch) set.runner = patch.runner ?? null;
      if ('cancelRequested' in patch) set.cancel_requested = patch.cancelRequested ? 1 : 0;
      const r = await trx.updateTable('jobs').set(set).where('id', '=', id)
        .$if(opts.ifRunner !== undefined, q => q.where('runner', '=', opts.ifRunner!)).executeTakeFirst();
      if (!Number(r.numUpdatedRows)) {
        if (opts.ifRunner !== undefined && await trx.selectFrom('jobs').select('id').where('id', '=', id).executeTakeFirst()) throw leaseLost(id, opts.ifRunner);
        throw jobNotFound(id);
      }
      if (patch.steps) {
        await trx.deleteFrom('job_steps').where('job_id', '=', id).execute();
        if (patch.steps.length) {
          await trx.insertInto('job_steps').values(patch.steps.map((s, i) => ({
            job_id: id, idx: i, name: s.name, state: s.state, started_at: s.startedAt ?? null, ended_at: s.endedAt ?? null,
            checkpoint: json(s.checkpoint), progress: json(s.progress),
          }))).execute();
        }
      }
      return (await this.get(id, trx))!;
    });
  }

  async claimNext(req: ClaimRequest): Promise<JobRecord | undefined> {
    return this.db.transaction().execute(async trx => {
      const candidates = await trx.selectFrom('jobs').select(['id', 'source_host', 'spec']).where('state', '=', 'queued')
        .orderBy('created_at').orderBy('id').limit(CLAIM_WINDOW)
        .$if(this.dialect === 'postgres', q => q.forUpdate().skipLocked()).execute();
      const full = new Set<string>();
      for (const c of candidates) {
        const requires = (JSON.parse(c.spec) as JobSpec).requires ?? [];
        if (!requires.every(t => req.tags.includes(t))) continue;
        if (c.source_host !== 'local') {
          if (full.has(c.source_host)) continue;
          // another worker claiming for this host right now: leave the host to it this round
          if (this.dialect === 'postgres') {
            const { rows } = await sql<{ got: boolean }>`SELECT pg_try_advisory_xact_lock(hashtext(${`ferry:host:${c.source_host}`})) AS got`.execute(trx);
            if (!rows[0]?.got) { full.add(c.source_host); continue; }
          }
          const { n } = await trx.selectFrom('jobs').select(eb => eb.fn.countAll<number>().as('n'))
            .where('state', '=', 'running').where('source_host', '=', c.source_host).executeTakeFirstOrThrow();
          if (Number(n) >= req.perHost) { full.add(c.source_host); continue; }
        }
        const r = await trx.updateTable('jobs')
          .set(eb => ({ state: 'running', runner: req.worker, attempts: eb('attempts', '+', 1), updated_at: now() }))
          .where('id', '=', c.id).where('state', '=', 'queued').executeTakeFirst();
        if (Number(r.numUpdatedRows)) return this.get(c.id, trx);
      }
      return undefined;
    });
  }

  async appendLog(id: string, line: string): Promise<void> {
    // n is the next number for this job; two writers at once (an API's cancel, the worker) retry on the clash
    for (let i = 0; ; i++) {
      try {
        await this.db.insertInto('job_logs').columns(['job_id', 'n', 'at', 'line'])
          .expression(eb => eb.selectFrom('job_logs').select([
            eb.val(id).as('job_id'),
            sql<number>`COALESCE(MAX(n), 0) + 1`.as('n'),
            eb.val(now()).as('at'),
            eb.val(line).as('line'),
          ]).where('job_id', '=', id)).execute();
        return;
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (i >= 5 || (code !== '23505' && code !== 'SQLITE_CONSTRAINT_PRIMARYKEY')) throw e;
      }
    }
  }

  async logs(id: string, afterLine = 0): Promise<{ n: number; line: string }[]> {
    const rows = await this.db.selectFrom('job_logs').select(['n', 'line']).where('job_id', '=', id).where('n', '>', afterLine).orderBy('n').execute();
    return rows.map(r => ({ n: Number(r.n), line: r.line }));
  }

  async holdResource(id: string, r: HeldResource): Promise<void> {
    await this.db.insertInto('job_resources').values({ job_id: id, kind: r.kind, res_id: r.id, pid: r.pid ?? null, detail: r.detail ?? null, held_at: now() }).execute();
  }

  async releaseResource(id: string, r: HeldResource): Promise<void> {
    const last = await this.db.selectFrom('job_resources').select('seq').where('job_id', '=', id).where('kind', '=', r.kind).where('res_id', '=', r.id)
      .orderBy('seq', 'desc').limit(1).executeTakeFirst();
    if (last) await this.db.deleteFrom('job_resources').where('seq', '=', last.seq).execute();
  }

  async resources(id?: string): Promise<(HeldResource & { jobId: string })[]> {
    const rows = await this.db.selectFrom('job_resources').selectAll().$if(id !== undefined, q => q.where('job_id', '=', id!)).orderBy('seq').execute();
    return rows.map(r => ({
      jobId: r.job_id, kind: r.kind as HeldResource['kind'], id: r.res_id,
      ...(r.pid !== null ? { pid: Number(r.pid) } : {}),
      ...(r.detail !== null ? { detail: r.detail } : {}),
    }));
  }

  async registerRunner(id: string): Promise<void> {
    const t = now();
    await this.db.insertInto('job_runners').values({ id, started_at: t, seen_at: t }).onConflict(oc => oc.column('id').doUpdateSet({ seen_at: t })).execute();
  }

  async unregisterRunner(id: string): Promise<void> {
    await this.db.deleteFrom('job_runners').where('id', '=', id).execute();
  }

  async runners(): Promise<{ id: string; startedAt: string; seenAt: string }[]> {
    // a fleet's workers count as runners for `jobs submit --wait`
    const rows = await this.db.selectFrom('job_runners').selectAll().orderBy('started_at').execute();
    const workers = await this.db.selectFrom('workers').selectAll().orderBy('started_at').execute();
    return [...rows.map(r => ({ id: r.id, startedAt: r.started_at, seenAt: r.seen_at })),
      ...workers.map(w => ({ id: `worker:${w.name}`, startedAt: w.started_at, seenAt: w.heartbeat_at }))];
  }

  async heartbeat(w: WorkerInfo): Promise<void> {
    const row = { host: w.host, pid: w.pid, tags: JSON.stringify(w.tags), version: w.version, concurrency: w.concurrency, per_host: w.perHost };
    await this.db.insertInto('workers').values({ name: w.name, ...row, started_at: now(), heartbeat_at: dbNow(this.dialect) })
      .onConflict(oc => oc.column('name').doUpdateSet({ ...row, heartbeat_at: dbNow(this.dialect) })).execute();
  }

  async removeWorker(name: string): Promise<void> {
    await this.db.deleteFrom('workers').where('name', '=', name).execute();
  }

  async workers(staleAfterMs: number): Promise<WorkerRecord[]> {
    const rows = await this.db.selectFrom('workers').selectAll()
      .select(eb => eb.case().when('heartbeat_at', '<', dbNow(this.dialect, -staleAfterMs)).then(1).else(0).end().as('stale'))
      .orderBy('name').execute();
    const running = await this.db.selectFrom('jobs').select(['id', 'runner']).where('state', '=', 'running').execute();
    return rows.map(r => ({
      name: r.name, host: r.host, pid: Number(r.pid), tags: JSON.parse(r.tags) as string[], version: r.version,
      concurrency: Number(r.concurrency), perHost: Number(r.per_host), startedAt: r.started_at, heartbeatAt: r.heartbeat_at,
      stale: Number(r.stale) === 1, running: running.filter(j => j.runner === r.name).map(j => j.id),
    }));
  }

  async takeOverStale(staleAfterMs: number, by: string): Promise<{ job: JobRecord; from: string }[]> {
    return this.db.transaction().execute(async trx => {
      const fresh = trx.selectFrom('workers').select('name').where('heartbeat_at', '>=', dbNow(this.dialect, -staleAfterMs));
      // runners that are workers (a row, fresh or not); the embedded runner's jobs (host:pid:start) are its own business
      const known = trx.selectFrom('workers').select('name');
      const rows = await trx.selectFrom('jobs').selectAll().where('state', '=', 'running').where('runner', 'is not', null)
        .where('runner', 'in', known).where('runner', 'not in', fresh).where('runner', '!=', by)
        .$if(this.dialect === 'postgres', q => q.forUpdate().skipLocked()).execute();
      const out: { job: JobRecord; from: string }[] = [];
      for (const r of rows) {
        const from = r.runner!;
        const held = await trx.selectFrom('job_resources').selectAll().where('job_id', '=', r.id).orderBy('seq').execute();
        if (held.length) {
          await trx.insertInto('worker_leftovers').values(held.map(h => ({ worker: from, job_id: r.id, kind: h.kind, res_id: h.res_id, pid: h.pid, detail: h.detail }))).execute();
          await trx.deleteFrom('job_resources').where('job_id', '=', r.id).execute();
        }
        await trx.updateTable('jobs').set({ state: 'queued', runner: null, updated_at: now() }).where('id', '=', r.id).execute();
        out.push({ job: (await this.get(r.id, trx))!, from });
      }
      return out;
    });
  }

  async leftovers(worker: string): Promise<(HeldResource & { jobId: string; seq: number })[]> {
    const rows = await this.db.selectFrom('worker_leftovers').selectAll().where('worker', '=', worker).orderBy('seq').execute();
    return rows.map(r => ({
      seq: Number(r.seq), jobId: r.job_id, kind: r.kind as HeldResource['kind'], id: r.res_id,
      ...(r.pid !== null ? { pid: Number(r.pid) } : {}),
      ...(r.detail !== null ? { detail: r.detail } : {}),
    }));
  }

  async dropLeftover(seq: number): Promise<void> {
    await this.db.deleteFrom('worker_leftovers').where('seq', '=', seq).execute();
  }

  async counts(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const t of ['jobs', 'job_steps', 'job_logs', 'job_resources', 'workers'] as const) {
      const { n } = await this.db.selectFrom(t).select(eb => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
      out[t] = Number(n);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.db.destroy();
    await this.closeRaw();
  }
}

/** Open the store and bring its schema up to date (Kysely's Migrator; it takes its own lock, so workers may start at once). */
export async function openFleetStore(loc: StoreLocation, opts: { poolSize?: number } = {}): Promise<KyselyStore> {
  let db: Kysely<StoreDb>;
  let closeRaw: () => Promise<void> | void = () => undefined;
  if (loc.dialect === 'sqlite') {
    const raw = openDb(loc.home);
    db = new Kysely<StoreDb>({ dialect: new SqliteDialect({ database: raw }) });
  } else {
    const pool = new pg.Pool({ ...loc.pg, max: opts.poolSize ?? 4, idleTimeoutMillis: 5_000 });
    // an idle connection dropped by a database restart must not end the process: the next query reconnects
    pool.on('error', () => undefined);
    // the same for a connection lost while checked out between two queries (a cut link under TLS ends
    // it with an error, not a close): the pool's idle listener is not on it then, and its next query fails
    pool.on('connect', client => client.on('error', () => undefined));
    db = new Kysely<StoreDb>({ dialect: new PostgresDialect({ pool }) });
  }
  const store = new KyselyStore(db, loc.dialect, closeRaw);
  try {
    const { error } = await new Migrator({ db, provider: migrationProvider(loc.dialect) }).migrateToLatest();
    if (error) throw error;
  } catch (e) {
    await db.destroy().catch(() => undefined);
    throw storeUnavailable(loc, e);
  }
  return store;
}

/** A store that cannot be reached or brought up to date: what it said, never a password (none is in the location). */
export function storeUnavailable(loc: StoreLocation, e: unknown): FerryError {
  if (e instanceof FerryError) return e;
  const where = loc.dialect === 'sqlite' ? loc.home : loc.describe;
  return new FerryError('STORE_UNAVAILABLE', 69, `the job store ${where} cannot be used: ${(e as Error).message}; check that it runs and that ~/.pgpass or --store-password-file holds the password`);
}
