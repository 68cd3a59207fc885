// The job runner: picks queued jobs from the store (polling, so `ferry jobs
// submit` works without the API), runs them as checkpointed steps under
// p-queue bounds (globally and per source host), reports every change as a
// ProgressEvent, and on start-up reclaims what a dead runner held and resumes
// its jobs. Each job runs in its own async context: its abort signal, its
// resource journal and its network credentials (util/abort.ts, util/scope.ts,
// sources/secrets.ts), so concurrent jobs never see each other's.
import { EventEmitter } from 'node:events';
import { rm } from 'node:fs/promises';
import PQueue from 'p-queue';
import { FerryError, jobCancelled, jobInterrupted, jobResumeFailed } from '../errors.js';
import { withNetworkCredentials } from '../sources/secrets.js';
import { withAbortSignal } from '../util/abort.js';
import { withResourceJournal, type ResourceJournal } from '../util/scope.js';
import { requestCancel, retryJob, submitJob } from './control.js';
import { stepProgress } from './progress.js';
import { reclaimJob, runnerAlive, runnerId } from './reclaim.js';
import { runJob } from './kinds.js';
import { partialOf, StepTracker } from './steps.js';
import type { JobRecord, JobSpec, JobState, JobStore, ProgressEvent } from './types.js';

export interface RunnerOptions {
  /** jobs at once (ferry serve --concurrency, default 2) */
  concurrency: number;
  /** jobs at once reading from one network source host; local files are bound only by concurrency */
  perHostConcurrency: number;
  /** how often the store is asked for new jobs and cancel requests */
  pollMs?: number;
}

/** A job whose runner died this many times is failed rather than resumed again. */
const MAX_RUNS = 10;

const errorRecord = (e: FerryError) => ({ code: e.code, message: e.message, exitCode: e.exitCode });

function asFerryError(e: unknown): FerryError {
  if (e instanceof FerryError) return e;
  return new FerryError('INTERNAL', 70, `internal error: ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' ') ?? String(e)}`);
}

export class JobRunner {
  /** 'event': ProgressEvent for every step change, progress tick, state change and log line */
  readonly events = new EventEmitter();
  private readonly global: PQueue;
  private readonly hosts = new Map<string, PQueue>();
  /** jobs waiting in a queue here or running here */
  private readonly scheduled = new Set<string>();
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void> }>();
  private timer?: NodeJS.Timeout;
  private self = '';
  private stopping = false;

  constructor(readonly store: JobStore, private readonly opts: RunnerOptions) {
    this.global = new PQueue({ concurrency: Math.max(1, opts.concurrency) });
    // an 'error' event with no listener would throw; nobody listening is fine
    this.events.setMaxListeners(0);
  }

  /** Reclaim what dead runs held, queue their jobs to resume, and start picking queued jobs. */
  async start(): Promise<void> {
    this.self = await runnerId();
    this.store.registerRunner(this.self);
    await this.recover();
    this.poll();
    this.timer = setInterval(() => this.poll(), this.opts.pollMs ?? 500);
  }

  /** Stop picking jobs; running ones stop where they are (their partial targets kept) and resume at the next start. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.global.clear();
    for (const q of this.hosts.values()) q.clear();
    for (const [id, r] of this.running) if (!r.abort.signal.aborted) r.abort.abort(jobInterrupted(id));
    await Promise.all([...this.running.values()].map(r => r.done));
    try { this.store.unregisterRunner(this.self); } catch { /* a closed store: the next runner's check finds this one dead */ }
  }

  /** Check and queue a spec; SPEC_INVALID (exit 2) carries fieldErrors. */
  submit(spec: JobSpec | unknown): JobRecord {
    const job = submitJob(this.store, spec);
    this.emit({ jobId: job.id, type: 'state', state: 'queued' });
    setImmediate(() => this.poll());
    return job;
  }

  cancel(id: string): JobRecord {
    const mine = this.running.get(id);
    const job = requestCancel(this.store, id);
    if (mine && !mine.abort.signal.aborted) mine.abort.abort(jobCancelled(id));
    if (job.state === 'cancelled') this.emit({ jobId: id, type: 'state', state: 'cancelled' });
    return job;
  }

  retry(id: string): JobRecord {
    const job = retryJob(this.store, id);
    this.emit({ jobId: id, type: 'state', state: 'queued' });
    setImmediate(() => this.poll());
    return job;
  }

  private emit(e: Omit<ProgressEvent, 'at'>): void {
    this.events.emit('event', { ...e, at: new Date().toISOString() } satisfies ProgressEvent);
  }

  private log(jobId: string, line: string): void {
    try { this.store.appendLog(jobId, line); } catch (e) { process.stderr.write(`ferry: cannot log for job ${jobId}: ${(e as Error).message}\n`); }
    this.emit({ jobId, type: 'log', message: line });
  }

  private setState(jobId: string, state: JobState, patch: Parameters<JobStore['update']>[1] = {}): JobRecord {
    const job = this.store.update(jobId, { ...patch, state });
    this.emit({ jobId, type: 'state', state });
    return job;
  }

  /** Jobs left 'running' by a runner that no longer exists: reclaim, then resume (or fail, or finish a cancel). */
  private async recover(): Promise<void> {
    for (const job of this.store.list({ state: 'running' })) {
      if (job.runner === this.self || await runnerAlive(job.runner)) continue;
      const at = Date.now();
      this.log(job.id, `its runner ${job.runner ?? '(unknown)'} is gone; reclaiming what it held`);
      const problems = await reclaimJob(this.store, job.id, line => this.log(job.id, line));
      this.log(job.id, `reclaim finished in ${Date.now() - at} ms${problems.length ? ` with ${problems.length} problem(s)` : ''}`);
      const partial = partialOf(job.spec);
      if (problems.length || job.attempts >= MAX_RUNS || job.cancelRequested) {
        if (partial) await rm(partial, { force: true });
        const err = job.cancelRequested ? jobCancelled(job.id)
          : jobResumeFailed(job.id, problems.length ? `what its dead run held could not be released: ${problems.join('; ')}` : `its runner died ${job.attempts} times`);
        this.log(job.id, `${job.cancelRequested ? 'cancelled' : 'failed'}: ${err.code}: ${err.message}`);
        this.setState(job.id, job.cancelRequested ? 'cancelled' : 'failed', { runner: undefined, error: errorRecord(err) });
        continue;
      }
      this.log(job.id, 'queued to resume from its last completed step');
      this.setState(job.id, 'queued', { runner: undefined });
    }
    // records left by jobs that ended while a release failed
    const live = new Set(this.store.list({ state: 'running' }).map(j => j.id));
    for (const jobId of new Set(this.store.resources().map(r => r.jobId))) {
      if (!live.has(jobId)) await reclaimJob(this.store, jobId, line => this.log(jobId, line));
    }
  }

  private poll(): void {
    if (this.stopping) return;
    try {
      this.store.registerRunner(this.self);
      for (const job of this.store.list({ state: 'queued' })) if (!this.scheduled.has(job.id)) this.schedule(job);
      for (const [id, r] of this.running) {
        if (!r.abort.signal.aborted && this.store.get(id)?.cancelRequested) r.abort.abort(jobCancelled(id));
      }
    } catch (e) {
      process.stderr.write(`ferry: job runner: cannot read the job store: ${(e as Error).message}\n`);
    }
  }

  private hostQueue(host: string): PQueue {
    let q = this.hosts.get(host);
    if (!q) this.hosts.set(host, q = new PQueue({ concurrency: Math.max(1, this.opts.perHostConcurrency) }));
    return q;
  }

  private schedule(job: JobRecord): void {
    this.scheduled.add(job.id);
    const inGlobal = () => this.global.add(() => this.execute(job.id));
    const queued = job.sourceHost === 'local' ? inGlobal() : this.hostQueue(job.sourceHost).add(inGlobal);
    queued
      .catch(e => process.stderr.write(`ferry: job ${job.id}: ${(e as Error).stack ?? String(e)}\n`))
      .finally(() => this.scheduled.delete(job.id));
  }

  private claim(id: string): JobRecord | undefined {
    if (this.store.claim) return this.store.claim(id, this.self);
    const job = this.store.get(id);
    return job?.state === 'queued' ? this.store.update(id, { state: 'running', runner: this.self }) : undefined;
  }

  private async execute(id: string): Promise<void> {
    if (this.stopping) return;
    const claimed = this.claim(id);
    if (!claimed) return;
    const job = this.store.update(id, { attempts: claimed.attempts + 1 });
    const abort = new AbortController();
    let finished!: () => void;
    this.running.set(id, { abort, done: new Promise(r => { finished = r; }) });
    this.emit({ jobId: id, type: 'state', state: 'running' });
    const log = (line: string) => this.log(id, line);
    log(job.steps.some(s => s.state !== 'pending') ? `resuming (run ${job.attempts})` : `started (run ${job.attempts})`);
    const steps = new StepTracker(id, job.steps, s => this.store.update(id, { steps: s }),
      s => this.emit({ jobId: id, type: 'step', step: s.name, message: s.state }), log);
    const progress = stepProgress(id, steps, e => this.emit(e), log);
    const journal: ResourceJournal = {
      hold: r => this.store.holdResource(id, r),
      release: r => this.store.releaseResource(id, r),
    };
    try {
      const result = await withAbortSignal(abort.signal, () => withResourceJournal(journal, () =>
        withNetworkCredentials(job.spec.credentials ?? {}, () => runJob(id, job.spec, steps, progress, log))));
      log('done');
      this.setState(id, 'done', { result, runner: undefined, error: undefined });
    } catch (e) {
      // once aborted, whatever a step tripped on is the abort's doing
      const err = asFerryError(abort.signal.aborted ? abort.signal.reason : e);
      if (err.code === 'JOB_INTERRUPTED') {
        log('interrupted by the service stopping; it resumes from its last completed step at the next start');
        this.setState(id, 'queued', { runner: undefined });
      } else {
        const partial = partialOf(job.spec);
        if (partial) await rm(partial, { force: true }).catch(() => undefined);
        const state = err.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed';
        log(`${state}: ${err.code}: ${err.message}`);
        this.setState(id, state, { error: errorRecord(err), runner: undefined });
      }
    } finally {
      this.running.delete(id);
      finished();
    }
  }
}
