// Bench part `fleet`: FERRY_BENCH_FLEET_JOBS (default 100) small jobs queued
// in a real PostgreSQL 15 (test/support/postgres.ts), then run by 1, 2 and 3
// `ferry worker` processes (--concurrency 2 each), a fresh database per round.
// All on this one machine: the workers share its CPUs, disk and loopback, so
// more workers add claimers and slots but no hardware; the figures say what
// the store and the claiming cost, not how a fleet of hosts scales.
//
// Per round: jobs per minute (first worker started to last job done), claim
// latency (a worker slot's idle gap: from one job's "done on worker" line to
// the next "started on worker" line of that worker, so it includes the poll
// interval), and PostgreSQL's connections per worker (pg_stat_activity by
// application_name, sampled every 250 ms; the most seen).
import { execa, type ResultPromise } from 'execa';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { storeLocation } from '../src/store/connection.js';
import { submitToStore } from '../src/store/frontend.js';
import { openFleetStore } from '../src/store/kysely-store.js';
import { startPostgres } from '../test/support/postgres.js';
import { makeSmallDisk } from '../test/support/small-disk.js';

export interface FleetRound {
  workers: number; jobs: number; done: number; seconds: number; jobsPerMinute: number;
  claimGapMs: { median: number; p95: number; samples: number };
  maxConnectionsPerWorker: number[];
  jobsPerWorker: Record<string, number>;
}
export interface FleetBench { jobs: number; concurrency: number; diskMiB: number; rounds: FleetRound[]; ok: boolean }

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));
const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN; };

export async function measureFleet(cli: string, work: string): Promise<FleetBench> {
  const jobs = Math.max(1, Number(process.env.FERRY_BENCH_FLEET_JOBS ?? 100) || 100);
  const dir = join(work, 'fleet');
  await mkdir(join(dir, 'out'), { recursive: true });
  const disk = join(dir, 'small.raw');
  const diskMiB = 64;
  // the cluster's directory where the postgres user can reach it (the work dir may sit below private ones)
  const pgParent = await mkdtemp('/var/tmp/ferry-bench-pg-');
  const [pg] = await Promise.all([startPostgres(pgParent, ['127.0.0.1']), makeSmallDisk(disk, { sizeMiB: diskMiB })]);
  const pw = join(dir, 'pw');
  await writeFile(pw, `${pg.password}\n`, { mode: 0o600 });
  const rounds: FleetRound[] = [];
  try {
    for (const n of [1, 2, 3]) {
      const db = `fleet${n}`;
      await pg.psql(`CREATE DATABASE ${db} OWNER ferry`);
      const url = (app: string) => `postgres://${pg.user}@127.0.0.1:${pg.port}/${db}?application_name=${app}`;
      const store = await openFleetStore(storeLocation({ store: url('bench'), passwordFile: pw }), { poolSize: 2 });
      const workers: ResultPromise[] = [];
      try {
        for (let i = 0; i < jobs; i++) await submitToStore(store, { source: disk, target: join(dir, 'out', `r${n}-${i}.qcow2`), options: { mode: 'block', verify: false } });
        console.error(`bench: fleet: ${jobs} jobs queued; starting ${n} worker(s)`);
        const started = Date.now();
        for (let k = 0; k < n; k++) {
          workers.push(execa(process.execPath, [cli, 'worker', '--store', url(`w${k}`), '--store-password-file', pw, '--name', `w${k}`, '--concurrency', '2'],
            { env: { FERRY_HOME: join(dir, `home-${n}-${k}`) }, reject: false, stdin: 'ignore' }));
        }
        const maxConn = new Array<number>(n).fill(0);
        let done = 0;
        for (;;) {
          const rows = (await pg.psql(`SELECT application_name || '=' || count(*) FROM pg_stat_activity WHERE datname = '${db}' GROUP BY application_name`)).split('\n');
          for (const r of rows) { const m = /^w(\d+)=(\d+)$/.exec(r); if (m) maxConn[Number(m[1])] = Math.max(maxConn[Number(m[1])], Number(m[2])); }
          const left = (await store.list({ state: 'queued' })).length + (await store.list({ state: 'running' })).length;
          if (!left) break;
          if (Date.now() - started > 30 * 60_000) throw new Error(`fleet: ${left} job(s) not done after 30 minutes`);
          await sleep(250);
        }
        const seconds = (Date.now() - started) / 1000;
        const all = await store.list();
        done = all.filter(j => j.state === 'done').length;
        // each worker's timeline from the job logs: a slot frees at "done on worker", is filled at the next "started on worker"
        const events: { at: number; worker: string; kind: 'start' | 'end' }[] = [];
        const byWorker: Record<string, number> = {};
        for (const j of all) {
          const lines = await store.db.selectFrom('job_logs').select(['at', 'line']).where('job_id', '=', j.id).orderBy('n').execute();
          for (const l of lines) {
            const m = /^(started|done) on worker (\S+)/.exec(l.line);
            if (!m) continue;
            events.push({ at: Date.parse(l.at), worker: m[2], kind: m[1] === 'started' ? 'start' : 'end' });
            if (m[1] === 'done') byWorker[m[2]] = (byWorker[m[2]] ?? 0) + 1;
          }
        }
        const gaps: number[] = [];
        for (const w of Object.keys(byWorker)) {
          const free: number[] = [];
          for (const e of events.filter(x => x.worker === w).sort((a, b) => a.at - b.at)) {
            if (e.kind === 'end') free.push(e.at);
            else if (free.length) gaps.push(e.at - free.shift()!);
          }
        }
        rounds.push({
          workers: n, jobs, done, seconds, jobsPerMinute: done / (seconds / 60),
          claimGapMs: { median: pct(gaps, 0.5), p95: pct(gaps, 0.95), samples: gaps.length },
          maxConnectionsPerWorker: maxConn, jobsPerWorker: byWorker,
        });
        console.error(`bench: fleet: ${n} worker(s): ${done}/${jobs} done in ${seconds.toFixed(1)} s`);
      } finally {
        for (const w of workers) w.kill('SIGTERM');
        await Promise.all(workers);
        await store.close();
        await rm(join(dir, 'out'), { recursive: true, force: true });
        await mkdir(join(dir, 'out'));
      }
    }
  } finally {
    await pg.stop();
    await rm(pgParent, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
  }
  return { jobs, concurrency: 2, diskMiB, rounds, ok: rounds.every(r => r.done === jobs) };
}

export function reportFleet(r: FleetBench): string {
  return [
    `\nfleet: ${r.jobs} queued jobs (${r.diskMiB} MiB disk, block copy, no verify) on 1, 2, 3 ferry workers (--concurrency ${r.concurrency}), PostgreSQL 15, one machine`,
    '  workers  done  time      jobs/min  claim gap median/p95 (n)   PG connections per worker (max)  jobs per worker',
    ...r.rounds.map(x => `  ${String(x.workers).padEnd(8)} ${String(x.done).padEnd(5)} ${`${x.seconds.toFixed(1)} s`.padEnd(9)} ${x.jobsPerMinute.toFixed(1).padEnd(9)} ${`${x.claimGapMs.median} / ${x.claimGapMs.p95} ms (${x.claimGapMs.samples})`.padEnd(28)} ${x.maxConnectionsPerWorker.join(', ').padEnd(32)} ${JSON.stringify(x.jobsPerWorker)}`),
    `  ${r.ok ? 'ok' : 'NOT OK: a job did not finish'}`,
  ].join('\n');
}
