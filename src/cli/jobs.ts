// `ferry jobs …`: submit, list, show, logs, cancel, retry. They talk to the
// job store directly, the embedded SQLite or, given --store/FERRY_STORE
// postgres://…, a fleet's shared PostgreSQL; a running `ferry serve` (or
// `ferry jobs run-worker`, or a fleet's `ferry worker`) picks queued jobs up
// and notices cancel requests by polling it.
import { readFile } from 'node:fs/promises';
import type { Argv } from 'yargs';
import { jobNotFound, noJobRunner, notRoot, usageError } from '../errors.js';
import { describeSpec, isFinal, jobExitCode, liveRunners, requestCancel, retryJob, submitJob } from '../jobs/control.js';
import { JobRunner } from '../jobs/runner.js';
import { parseSpec, resolveSpecPaths } from '../jobs/spec.js';
import { openJobStore } from '../jobs/sqlite-store.js';
import type { JobRecord, JobSpec, JobState } from '../jobs/types.js';
import { openFleetStore } from '../store/kysely-store.js';
import { cancelInStore, retryInStore, submitToStore } from '../store/frontend.js';
import type { StoreLocation } from '../store/connection.js';
import type { AnyJobStore } from '../store/types.js';
import { commandGroup } from './group.js';
import { locationOf, storeOptions, type StoreArgs } from './store-options.js';
import { table } from './table.js';

const STATES: JobState[] = ['queued', 'running', 'done', 'failed', 'cancelled'];
const POLL_MS = 500;
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/** The job store as these commands use it, either kind, every call awaited; submit/cancel/retry are jobs/control.ts's rules. */
export interface JobAccess {
  store: AnyJobStore;
  submit(spec: unknown): Promise<JobRecord>;
  cancel(id: string): Promise<JobRecord>;
  retry(id: string): Promise<JobRecord>;
}

/** The store at loc with the job service's rules on it (the caller closes it). */
export async function openJobAccess(loc: StoreLocation): Promise<JobAccess & { close(): Promise<void> }> {
  if (loc.dialect === 'postgres') {
    const store = await openFleetStore(loc, { poolSize: 1 });
    return { store, submit: spec => submitToStore(store, spec), cancel: id => cancelInStore(store, id), retry: id => retryInStore(store, id), close: () => store.close() };
  }
  const store = openJobStore(loc.home);
  return { store, submit: async spec => submitJob(store, spec), cancel: async id => requestCancel(store, id), retry: async id => retryJob(store, id), close: async () => store.close() };
}

/** Open the store that --store / FERRY_STORE names (default: the embedded one), run fn, close it. */
export async function withJobs<T>(a: StoreArgs, fn: (j: JobAccess) => Promise<T> | T): Promise<T> {
  const access = await openJobAccess(locationOf(a));
  try { return await fn(access); } finally { await access.close(); }
}

async function mustGet(store: AnyJobStore, id: string): Promise<JobRecord> {
  const job = await store.get(id);
  if (!job) throw jobNotFound(id);
  return job;
}

const out = (s: string) => process.stdout.write(s);

const fmtBytes = (n: number) => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};

/** The step a job is at: the running one, else the last that ended. */
function currentStep(j: JobRecord): string {
  const s = j.steps.find(x => x.state === 'running') ?? [...j.steps].reverse().find(x => x.state !== 'pending');
  if (!s) return '-';
  const p = s.state === 'running' && s.progress?.total ? ` ${Math.floor(100 * s.progress.bytes / s.progress.total)}%` : '';
  return `${s.name}${s.state === 'running' ? '' : ` (${s.state})`}${p}`;
}

function showText(j: JobRecord): string {
  const lines = [
    `job ${j.id}: ${j.state}${j.cancelRequested && j.state === 'running' ? ' (cancel requested)' : ''}`,
    `  ${describeSpec(j.spec)}${j.spec.format ? ` (${j.spec.format})` : ''}`,
    `  created ${j.createdAt}, updated ${j.updatedAt}, runs ${j.attempts}${j.runner ? `, runner ${j.runner}` : ''}`,
    '  steps:',
    ...j.steps.map(s => {
      const p = s.progress ? `  ${fmtBytes(s.progress.bytes)}/${fmtBytes(s.progress.total)}${s.progress.rate ? ` ${fmtBytes(s.progress.rate)}/s` : ''}${s.progress.etaSeconds !== undefined ? ` ETA ${s.progress.etaSeconds}s` : ''}` : '';
      return `    ${s.name.padEnd(14)} ${s.state.padEnd(8)} ${s.startedAt ?? ''}${s.endedAt ? ` .. ${s.endedAt}` : ''}${p}`;
    }),
  ];
  if (j.error) lines.push(`  error: ${j.error.code} (exit ${j.error.exitCode}): ${j.error.message}`);
  return lines.join('\n') + '\n';
}

/** How long a job may wait with no runner up before waiting for it is given up (a runner may be starting). */
const NO_RUNNER_GRACE_MS = 5000;

/**
 * Poll until the job ends; log lines go to stderr as they come. With no
 * runner up for a while the wait ends with NO_JOB_RUNNER (the job stays).
 */
export async function waitForJob(store: AnyJobStore, id: string, echoLogs: boolean): Promise<JobRecord> {
  let seen = 0;
  let alone: number | undefined;
  for (let n = 0; ; n++) {
    const job = await mustGet(store, id);
    for (const l of await store.logs(id, seen)) {
      seen = l.n;
      if (echoLogs) process.stderr.write(`[${id}] ${l.line}\n`);
    }
    if (isFinal(job)) return job;
    if (n % 4 === 0) {
      if ((await liveRunners(store)).length) alone = undefined;
      else if (alone === undefined) alone = Date.now();
      else if (Date.now() - alone >= NO_RUNNER_GRACE_MS) throw noJobRunner(id, job.state);
    }
    await sleep(POLL_MS);
  }
}

export function finishJob(job: JobRecord, json: boolean): void {
  if (json) out(JSON.stringify(job, null, 2) + '\n');
  else out(`job ${job.id}: ${job.state}\n`);
  if (job.error) process.stderr.write(`ferry: ${job.error.code}: ${job.error.message}\n`);
  process.exitCode = jobExitCode(job);
}

/** `ferry convert … --detach`: the same choices as a job, queued; prints the job's id. */
export async function submitDetached(spec: JobSpec, json: boolean): Promise<void> {
  const job = await withJobs({}, j => j.submit(resolveSpecPaths(spec, process.cwd())));
  out(json ? JSON.stringify(job, null, 2) + '\n' : `${job.id}\n`);
}

function builder(y: Argv): Argv {
  return y
    .command('submit SPEC', 'queue a job from a spec file (YAML, or JSON by a .json name)', b => storeOptions(b)
      .positional('SPEC', { type: 'string', demandOption: true })
      .option('wait', { type: 'boolean', default: false, describe: "wait for the job to end and exit with its status (needs 'ferry serve' or 'ferry jobs run-worker' up; NO_JOB_RUNNER otherwise)" })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const file = a.SPEC as string;
      const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => { throw usageError(`cannot read the spec ${file}: ${e.code ?? e.message}`); });
      const spec = parseSpec(text, file);
      await withJobs(a, async j => {
        const job = await j.submit(spec);
        if (!a.wait) { out(a.json ? JSON.stringify(job, null, 2) + '\n' : `${job.id}\n`); return; }
        if (!a.json) out(`${job.id}\n`);
        finishJob(await waitForJob(j.store, job.id, !a.json), a.json as boolean);
      });
    })
    .command('list', 'jobs, oldest first', b => storeOptions(b)
      .option('state', { choices: STATES })
      .option('json', { type: 'boolean', default: false }),
    a => withJobs(a, async ({ store }) => {
      const jobs = await store.list(a.state ? { state: a.state as JobState } : {});
      if (a.json) { out(JSON.stringify(jobs, null, 2) + '\n'); return; }
      if (!jobs.length) return;
      out(table([['ID', 'STATE', 'STEP', 'CREATED', 'SOURCE -> TARGET'],
        ...jobs.map(j => [j.id, j.state, currentStep(j), j.createdAt.replace(/\.\d+Z$/, 'Z'), describeSpec(j.spec)])]));
    }))
    .command('show ID', 'one job: spec, steps with their times and progress, error', b => storeOptions(b)
      .positional('ID', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    a => withJobs(a, async ({ store }) => {
      const j = await mustGet(store, a.ID as string);
      out(a.json ? JSON.stringify(j, null, 2) + '\n' : showText(j));
    }))
    .command('logs ID', "a job's log", b => storeOptions(b)
      .positional('ID', { type: 'string', demandOption: true })
      .option('follow', { alias: 'f', type: 'boolean', default: false, describe: 'keep printing new lines until the job ends' }),
    a => withJobs(a, async ({ store }) => {
      const id = a.ID as string;
      let seen = 0;
      for (;;) {
        const job = await mustGet(store, id);
        // the lines after the state was read: a job's last line is written before it ends
        for (const l of await store.logs(id, seen)) { seen = l.n; out(`${l.line}\n`); }
        if (!a.follow || isFinal(job)) break;
        await sleep(POLL_MS);
      }
    }))
    .command('cancel ID', 'cancel a queued or running job (its runner stops it within seconds and removes the partial target)', b => storeOptions(b)
      .positional('ID', { type: 'string', demandOption: true })
      .option('wait', { type: 'boolean', default: false, describe: 'wait until the job has stopped' }),
    a => withJobs(a, async ({ store, cancel }) => {
      let j = await cancel(a.ID as string);
      if (a.wait) j = await waitForJob(store, j.id, false);
      out(`job ${j.id}: ${j.state === 'running' ? 'cancel requested' : j.state}\n`);
    }))
    .command('retry ID', 'queue a failed or cancelled job again (it starts from the beginning)', b => storeOptions(b)
      .positional('ID', { type: 'string', demandOption: true }),
    a => withJobs(a, async ({ retry }) => { const j = await retry(a.ID as string); out(`job ${j.id}: ${j.state}\n`); }))
    .command('run-worker', "run the job runner without the HTTP API ('ferry serve' runs both)", b => storeOptions(b)
      .option('concurrency', { type: 'number', default: 2, describe: 'jobs running at once' })
      .option('per-host', { type: 'number', default: 1, describe: 'jobs reading from one network source host at once' }),
    async a => {
      const loc = locationOf(a);
      if (loc.dialect === 'postgres') throw usageError("jobs run-worker runs the embedded store's jobs; for a shared store run 'ferry worker --store …' on each host");
      if (process.getuid?.() !== 0) throw notRoot();
      const store = openJobStore(loc.home);
      const runner = new JobRunner(store, { concurrency: a.concurrency as number, perHostConcurrency: a['per-host'] as number });
      try {
        await runner.start();
      } catch (e) {
        await runner.stop();
        store.close();
        throw e;
      }
      out(`ferry jobs run-worker: running (pid ${process.pid})\n`);
      await new Promise<void>(resolve => {
        const stop = (sig: NodeJS.Signals) => {
          process.stderr.write(`ferry jobs run-worker: ${sig}: stopping; running jobs resume at the next start\n`);
          void runner.stop().finally(() => { store.close(); resolve(); });
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      });
    });
}

export const jobsCommand = commandGroup('jobs', 'the job queue: submit conversions, watch them, cancel and retry them', 'submit, list, show, logs, cancel, retry or run-worker', builder);
