// The job store in Ferry's own SQLite database ($FERRY_HOME/ferry.db, schema
// migrations 2 and 3). Every call is one short transaction, so `ferry jobs …` in
// another process sees a runner's progress at once (WAL lets readers in).
import { randomBytes } from 'node:crypto';
import { openDb, type Db } from '../catalog/db.js';
import { jobNotFound } from '../errors.js';
import type { HeldResource, JobRecord, JobSpec, JobState, JobStore, StepRecord } from './types.js';

interface JobRow {
  id: string; state: JobState; spec: string; source_host: string; error: string | null; result: string | null;
  created_at: string; updated_at: string; attempts: number; runner: string | null; cancel_requested: number;
}
interface StepRow { name: string; state: StepRecord['state']; started_at: string | null; ended_at: string | null; checkpoint: string | null; progress: string | null }

const now = () => new Date().toISOString();
const parse = <T>(s: string | null): T | undefined => (s === null ? undefined : JSON.parse(s) as T);
const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v));

export class SqliteJobStore implements JobStore {
  constructor(private readonly db: Db) {}

  private stepsOf(id: string): StepRecord[] {
    const rows = this.db.prepare('SELECT name, state, started_at, ended_at, checkpoint, progress FROM job_steps WHERE job_id = ? ORDER BY idx').all(id) as StepRow[];
    return rows.map(r => ({
      name: r.name, state: r.state,
      ...(r.started_at ? { startedAt: r.started_at } : {}),
      ...(r.ended_at ? { endedAt: r.ended_at } : {}),
      ...(r.checkpoint !== null ? { checkpoint: JSON.parse(r.checkpoint) } : {}),
      ...(r.progress !== null ? { progress: JSON.parse(r.progress) } : {}),
    }));
  }

  private record(r: JobRow): JobRecord {
    return {
      id: r.id, state: r.state, spec: JSON.parse(r.spec) as JobSpec, sourceHost: r.source_host, steps: this.stepsOf(r.id),
      ...(r.error ? { error: parse(r.error) } : {}),
      ...(r.result ? { result: parse(r.result) } : {}),
      createdAt: r.created_at, updatedAt: r.updated_at, attempts: r.attempts,
      ...(r.runner ? { runner: r.runner } : {}),
      ...(r.cancel_requested ? { cancelRequested: true } : {}),
    };
  }

  create(spec: JobSpec, sourceHost: string): JobRecord {
    const t = now();
    const id = randomBytes(4).toString('hex');
    this.db.prepare(`INSERT INTO jobs (id, state, spec, source_host, created_at, updated_at) VALUES (?, 'queued', ?, ?, ?, ?)`)
      .run(id, JSON.stringify(spec), sourceHost, t, t);
    return this.get(id)!;
  }

  get(id: string): JobRecord | undefined {
    const r = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return r && this.record(r);
  }

  list(filter: { state?: JobState } = {}): JobRecord[] {
    const rows = (filter.state
      ? this.db.prepare('SELECT * FROM jobs WHERE state = ? ORDER BY created_at, rowid').all(filter.state)
      : this.db.prepare('SELECT * FROM jobs ORDER BY created_at, rowid').all()) as JobRow[];
    return rows.map(r => this.record(r));
  }

  update(id: string, patch: Parameters<JobStore['update']>[1]): JobRecord {
    this.db.transaction(() => {
      const cols: string[] = ['updated_at = ?'];
      const vals: unknown[] = [now()];
      const set = (col: string, v: unknown) => { cols.push(`${col} = ?`); vals.push(v); };
      if ('state' in patch) set('state', patch.state);
      if ('error' in patch) set('error', json(patch.error));
      if ('result' in patch) set('result', json(patch.result));
      if ('attempts' in patch) set('attempts', patch.attempts);
      if ('runner' in patch) set('runner', patch.runner ?? null);
      if ('cancelRequested' in patch) set('cancel_requested', patch.cancelRequested ? 1 : 0);
      const changed = this.db.prepare(`UPDATE jobs SET ${cols.join(', ')} WHERE id = ?`).run(...vals, id).changes;
      if (!changed) throw jobNotFound(id);
      if (patch.steps) {
        this.db.prepare('DELETE FROM job_steps WHERE job_id = ?').run(id);
        const ins = this.db.prepare('INSERT INTO job_steps (job_id, idx, name, state, started_at, ended_at, checkpoint, progress) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
        patch.steps.forEach((s, i) => ins.run(id, i, s.name, s.state, s.startedAt ?? null, s.endedAt ?? null, json(s.checkpoint), json(s.progress)));
      }
    })();
    return this.get(id)!;
  }

  claim(id: string, runner: string): JobRecord | undefined {
    const changed = this.db.prepare(`UPDATE jobs SET state = 'running', runner = ?, updated_at = ? WHERE id = ? AND state = 'queued'`)
      .run(runner, now(), id).changes;
    return changed ? this.get(id) : undefined;
  }

  appendLog(id: string, line: string): void {
    this.db.prepare(`INSERT INTO job_logs (job_id, n, at, line)
      VALUES (?, (SELECT COALESCE(MAX(n), 0) + 1 FROM job_logs WHERE job_id = ?), ?, ?)`).run(id, id, now(), line);
  }

  logs(id: string, afterLine = 0): { n: number; line: string }[] {
    return this.db.prepare('SELECT n, line FROM job_logs WHERE job_id = ? AND n > ? ORDER BY n').all(id, afterLine) as { n: number; line: string }[];
  }

  holdResource(id: string, r: HeldResource): void {
    this.db.prepare('INSERT INTO job_resources (job_id, kind, res_id, pid, detail, held_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(id, r.kind, r.id, r.pid ?? null, r.detail ?? null, now());
  }

  releaseResource(id: string, r: HeldResource): void {
    this.db.prepare(`DELETE FROM job_resources WHERE seq = (
      SELECT seq FROM job_resources WHERE job_id = ? AND kind = ? AND res_id = ? ORDER BY seq DESC LIMIT 1)`).run(id, r.kind, r.id);
  }

  /** In the order they were acquired (reclaim walks them backwards). */
  resources(id?: string): (HeldResource & { jobId: string })[] {
    const rows = (id === undefined
      ? this.db.prepare('SELECT * FROM job_resources ORDER BY seq').all()
      : this.db.prepare('SELECT * FROM job_resources WHERE job_id = ? ORDER BY seq').all(id)) as
      { job_id: string; kind: HeldResource['kind']; res_id: string; pid: number | null; detail: string | null }[];
    return rows.map(r => ({
      jobId: r.job_id, kind: r.kind, id: r.res_id,
      ...(r.pid !== null ? { pid: r.pid } : {}),
      ...(r.detail !== null ? { detail: r.detail } : {}),
    }));
  }

  registerRunner(id: string): void {
    const t = now();
    this.db.prepare('INSERT INTO job_runners (id, started_at, seen_at) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET seen_at = excluded.seen_at').run(id, t, t);
  }

  unregisterRunner(id: string): void {
    this.db.prepare('DELETE FROM job_runners WHERE id = ?').run(id);
  }

  runners(): { id: string; startedAt: string; seenAt: string }[] {
    return (this.db.prepare('SELECT id, started_at, seen_at FROM job_runners ORDER BY started_at').all() as { id: string; started_at: string; seen_at: string }[])
      .map(r => ({ id: r.id, startedAt: r.started_at, seenAt: r.seen_at }));
  }

  close(): void {
    this.db.close();
  }
}

/** The default store: the catalog database under FERRY_HOME. */
export function openJobStore(home?: string): JobStore {
  return new SqliteJobStore(openDb(home));
}
