// The job store's contract, one suite over both backends: the embedded SQLite
// store (jobs/sqlite-store.ts, what `ferry serve` runs on) and the shared
// PostgreSQL one (store/kysely-store.ts, a real PostgreSQL 15 of this file's
// own). Each gets the job service's own rules on top (submit, cancel, retry,
// as `ferry jobs` opens them: cli/jobs.ts openJobAccess) and the same checks:
// records and their steps, logs, held resources, runners, and claims by
// several claimers at once (each job exactly once). Rows are read back with
// the databases' own clients (sqlite3 module, psql), not only through Ferry.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { openJobAccess, type JobAccess } from '../src/cli/jobs.js';
import { openJobStore } from '../src/jobs/sqlite-store.js';
import type { JobRecord, JobSpec, JobStore } from '../src/jobs/types.js';
import { storeLocation, type StoreLocation } from '../src/store/connection.js';
import { openFleetStore, type KyselyStore } from '../src/store/kysely-store.js';
import type { AnyJobStore } from '../src/store/types.js';
import { guardMachine, tempDir } from './support/harness.js';
import { startPostgres, type Postgres } from './support/postgres.js';

guardMachine();
const dir = await tempDir('ferrystore-');
let pg: Postgres;

/** What differs between the backends: where they are, a second connection, a claim, and a raw look at a table. */
interface Backend {
  name: string;
  loc(): StoreLocation;
  /** another client of the same store (another process's view) */
  openOther(): Promise<{ store: AnyJobStore; claim(worker: string): Promise<JobRecord | undefined>; close(): Promise<void> }>;
  /** rows as the database's own client prints them ('a || b' is written a|b) */
  raw(query: string): Promise<string[]>;
}

const sqliteClaim = (s: JobStore) => async (worker: string) => {
  for (const j of s.list({ state: 'queued' })) { const got = s.claim!(j.id, worker); if (got) return got; }
  return undefined;
};

const BACKENDS: Backend[] = [
  {
    name: 'SQLite (embedded)',
    loc: () => storeLocation({ store: `sqlite:${join(dir, 'home')}` }),
    async openOther() {
      const store = openJobStore(join(dir, 'home'));
      return { store, claim: sqliteClaim(store), close: async () => store.close() };
    },
    async raw(query) {
      const db = new Database(join(dir, 'home', 'ferry.db'), { readonly: true });
      try { return (db.prepare(query.replace(/\|\|/g, "|| '|' ||")).raw().all() as unknown[][]).map(r => r.map(v => v ?? '').join('|')); } finally { db.close(); }
    },
  },
  {
    name: 'PostgreSQL (shared)',
    loc: () => storeLocation({ store: `postgres://${pg.user}@127.0.0.1:${pg.port}/${pg.db}`, passwordFile: join(dir, 'pw') }),
    async openOther() {
      const store = await openFleetStore(this.loc(), { poolSize: 2 });
      return { store, claim: worker => store.claimNext({ worker, tags: [], perHost: 100 }), close: () => store.close() };
    },
    async raw(query) { return (await pg.psql(query.replace(/\|\|/g, "|| '|' ||"))).split('\n').filter(Boolean); },
  },
];

before(async () => {
  pg = await startPostgres(dir, ['127.0.0.1']);
  await writeFile(join(dir, 'pw'), `${pg.password}\n`, { mode: 0o600 });
});
after(async () => { await pg?.stop(); });

let nth = 0;
const spec = (over: Partial<JobSpec> = {}): JobSpec => ({ source: '/var/tmp/none.raw', target: `/var/tmp/none-store-${++nth}.qcow2`, ...over });

for (const b of BACKENDS) {
  describe(`the job store on ${b.name}`, () => {
    let j: JobAccess & { close(): Promise<void> };
    before(async () => { j = await openJobAccess(b.loc()); });
    after(async () => { await j?.close(); });

    it('submit checks the spec and queues it; get and list (oldest first, by state) give it back', async () => {
      await assert.rejects(j.submit({ source: '', target: 'x' }), (e: Error & { code?: string }) => e.code === 'SPEC_INVALID');
      const a = await j.submit(spec({ options: { verify: true } }));
      const c = await j.submit(spec({ source: 'nbd://10.0.0.9:10809/e' }));
      assert.equal(a.state, 'queued');
      assert.equal(c.sourceHost, '10.0.0.9');
      assert.deepEqual((await j.store.get(a.id))!.spec, a.spec);
      const queued = (await j.store.list({ state: 'queued' })).map(x => x.id);
      assert.ok(queued.indexOf(a.id) < queued.indexOf(c.id));
      // a second job writing one target: refused
      await assert.rejects(j.submit({ source: '/var/tmp/none.raw', target: a.spec.target }), /already writes/);
      assert.deepEqual(await b.raw(`SELECT state || source_host FROM jobs WHERE id = '${c.id}'`), ['queued|10.0.0.9']);
    });

    it('steps with their checkpoints and progress, the error and the result round-trip; cancel and retry follow the rules', async () => {
      const job = await j.submit(spec());
      const steps = [
        { name: 'open source', state: 'done' as const, startedAt: '2026-01-01T00:00:00.000Z', endedAt: '2026-01-01T00:00:01.000Z', checkpoint: { parts: [1, 2], note: 'é' } },
        { name: 'copy p1', state: 'running' as const, startedAt: '2026-01-01T00:00:01.000Z', progress: { bytes: 10, total: 100, rate: 5, etaSeconds: 18 } },
        { name: 'verify', state: 'pending' as const },
      ];
      await j.store.update(job.id, { state: 'running', steps, attempts: 2, runner: 'r1' });
      const got = (await j.store.get(job.id))!;
      assert.deepEqual(got.steps, steps);
      assert.equal(got.attempts, 2);
      assert.equal(got.runner, 'r1');
      assert.deepEqual(await b.raw(`SELECT name || state FROM job_steps WHERE job_id = '${job.id}' ORDER BY idx`), ['open source|done', 'copy p1|running', 'verify|pending']);
      const cancelled = await j.cancel(job.id);
      assert.equal(cancelled.cancelRequested, true);
      assert.equal(cancelled.state, 'running');
      await assert.rejects(j.retry(job.id), (e: Error & { code?: string }) => e.code === 'JOB_STATE_CONFLICT');
      const error = { code: 'SOURCE_MISSING', message: 'gone', exitCode: 3 };
      await j.store.update(job.id, { state: 'failed', error, runner: undefined });
      assert.deepEqual((await j.store.get(job.id))!.error, error);
      const again = await j.retry(job.id);
      assert.equal(again.state, 'queued');
      assert.deepEqual([again.steps, again.attempts, again.error, again.runner, again.cancelRequested], [[], 0, undefined, undefined, undefined]);
      // a queued job is cancelled at once
      assert.equal((await j.cancel(job.id)).state, 'cancelled');
      await j.store.update(job.id, { result: { target: 'x', bytes: 7 } });
      assert.deepEqual((await j.store.get(job.id))!.result, { target: 'x', bytes: 7 });
      await assert.rejects(j.cancel('nosuch'), (e: Error & { code?: string }) => e.code === 'JOB_NOT_FOUND');
    });

    it('logs are numbered from 1 per job, also when several clients write at once; after= gives the newer ones', async () => {
      const job = await j.submit(spec());
      const others = await Promise.all([b.openOther(), b.openOther()]);
      try {
        await Promise.all(Array.from({ length: 30 }, (_, i) => others[i % 2].store.appendLog(job.id, `line ${i}`)));
      } finally { for (const o of others) await o.close(); }
      const all = await j.store.logs(job.id);
      assert.deepEqual(all.map(l => l.n), Array.from({ length: 31 }, (_, i) => i + 1));
      assert.equal(all[0].line.startsWith('submitted: '), true);
      assert.deepEqual(new Set(all.slice(1).map(l => l.line)), new Set(Array.from({ length: 30 }, (_, i) => `line ${i}`)));
      assert.deepEqual((await j.store.logs(job.id, 29)).map(l => l.n), [30, 31]);
      assert.deepEqual(await b.raw(`SELECT count(*) || max(n) FROM job_logs WHERE job_id = '${job.id}'`), ['31|31']);
    });

    it('held resources come back in the order taken; releasing one takes its latest hold only', async () => {
      const job = await j.submit(spec());
      const res = [
        { kind: 'daemon' as const, id: '/run/x/source.img', pid: 4242 },
        { kind: 'loop' as const, id: '/dev/loop7', detail: '/run/x/source.img' },
        { kind: 'mount' as const, id: '/run/x/m' },
        { kind: 'loop' as const, id: '/dev/loop7', detail: '/run/x/source.img' },
      ];
      for (const r of res) await j.store.holdResource(job.id, r);
      await j.store.releaseResource(job.id, res[1]);
      await j.store.releaseResource(job.id, res[2]);
      assert.deepEqual(await j.store.resources(job.id), [res[0], res[1]].map(r => ({ jobId: job.id, ...r })));
      assert.ok((await j.store.resources()).filter(r => r.jobId === job.id).length === 2);
      assert.deepEqual(await b.raw(`SELECT kind || res_id FROM job_resources WHERE job_id = '${job.id}' ORDER BY seq`), ['daemon|/run/x/source.img', 'loop|/dev/loop7']);
    });

    it('runners announce themselves and withdraw', async () => {
      await j.store.registerRunner('h:1:1');
      await j.store.registerRunner('h:1:1');
      assert.deepEqual((await j.store.runners()).filter(r => r.id === 'h:1:1').length, 1);
      await j.store.unregisterRunner('h:1:1');
      assert.ok(!(await j.store.runners()).some(r => r.id === 'h:1:1'));
    });

    it('four clients claiming at once: every queued job is taken exactly once', async () => {
      // the earlier tests' queued jobs are claimable too: cancel them so that only these count
      for (const q of await j.store.list({ state: 'queued' })) await j.cancel(q.id);
      const ids = new Set<string>();
      for (let i = 0; i < 24; i++) ids.add((await j.submit(spec())).id);
      const claimers = await Promise.all(Array.from({ length: 4 }, () => b.openOther()));
      // connected before the race starts, so that one does not take all while the others dial
      for (const c of claimers) await c.store.list({ state: 'done' });
      const taken: { id: string; by: string }[] = [];
      try {
        await Promise.all(claimers.map(async (c, k) => {
          // a claim that finds every row locked by another claimer's transaction comes back empty: try again while any is queued
          while ((await c.store.list({ state: 'queued' })).length) {
            const got = await c.claim(`w${k}`);
            if (got) taken.push({ id: got.id, by: `w${k}` });
          }
        }));
      } finally { for (const c of claimers) await c.close(); }
      assert.deepEqual(taken.map(t => t.id).sort(), [...ids].sort(), 'each job once');
      const rows = await b.raw(`SELECT id || state || runner FROM jobs WHERE state = 'running' AND runner LIKE 'w_' ORDER BY id`);
      assert.deepEqual(rows, taken.sort((x, y) => (x.id < y.id ? -1 : 1)).map(t => `${t.id}|running|${t.by}`));
      process.stdout.write(`# store ${b.name}: 24 jobs claimed by ${new Set(taken.map(t => t.by)).size} clients at once, each once\n`);
    });
  });
}

describe('claims on the shared store: the per-host bound over every worker, and tags', () => {
  let stores: KyselyStore[] = [];
  before(async () => { stores = await Promise.all([0, 1].map(() => openFleetStore(BACKENDS[1].loc(), { poolSize: 2 }))); });
  after(async () => { for (const s of stores) await s.close(); });

  it('two workers with per-host 1 get one job of a host between them; a job requiring a tag goes to the worker that has it', async () => {
    const [s1, s2] = stores;
    for (const q of await s1.list({ state: 'queued' })) await s1.update(q.id, { state: 'cancelled' });
    const host = (n: number) => s1.create(spec({ source: `nbd://10.0.0.7:10809/e${n}` }), '10.0.0.7');
    await host(1); await host(2);
    const tagged = await s1.create(spec({ requires: ['rack-3'] }), 'local');
    const [a, c] = await Promise.all([s1.claimNext({ worker: 'x', tags: [], perHost: 1 }), s2.claimNext({ worker: 'y', tags: [], perHost: 1 })]);
    assert.equal([a, c].filter(Boolean).length, 1, 'one job of the host at a time, over both workers');
    assert.equal(await s2.claimNext({ worker: 'y', tags: [], perHost: 1 }), undefined, 'nothing else for a worker without the tag');
    const t = await s2.claimNext({ worker: 'y', tags: ['rack-3'], perHost: 1 });
    assert.equal(t?.id, tagged.id);
    assert.equal(await pg.psql(`SELECT count(*) FROM jobs WHERE state = 'running' AND source_host = '10.0.0.7'`), '1');
  });
});
