// A fleet worker (`ferry worker`, and `ferry serve --store postgres://…`
// unless --no-worker): one of several hosts taking jobs from one shared store.
//
// Every POLL_MS it beats (workers.heartbeat_at, the database's clock), takes
// over the running jobs of workers silent for longer than the stale timeout,
// looks for cancel requests on its own jobs (so a cancel reaches a job on any
// host within POLL_MS plus the abort), and claims jobs while it has room
// (KyselyStore.claimNext: SKIP LOCKED, the per-host bound over all workers).
// The store unreachable: it stops claiming and retries with backoff; running
// copies go on and their step records are written when the store is back.
// Silent for FENCE_FRACTION of the stale timeout, it stops its own jobs:
// another worker is about to take them over, and two writers on one partial
// target would spoil it.
import { EventEmitter } from 'node:events';
import { access, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { FerryError, jobCancelled, jobInterrupted, jobResumeFailed } from '../errors.js';
import { withNetworkCredentials } from '../sources/secrets.js';
import { withAbortSignal } from '../util/abort.js';
import { run } from '../util/exec.js';
import { withResourceJournal, type ResourceJournal } from '../util/scope.js';
import { stepProgress } from '../jobs/progress.js';
import { reclaimOne } from '../jobs/reclaim.js';
import { runJob } from '../jobs/kinds.js';
import { partialOf, StepTracker } from '../jobs/steps.js';
import type { JobRecord, JobState, ProgressEvent, StepRecord } from '../jobs/types.js';
import type { FleetStore, WorkerInfo } from './types.js';
import { VERSION } from './version.js';

export interface WorkerOptions {
  name: string;
  tags: string[];
  concurrency: number;
  perHost: number;
  pollMs?: number;
  /** a worker silent this long is dead: its jobs are taken over */
  staleAfterMs?: number;
}

const MAX_RUNS = 10;
const FENCE_FRACTION = 0.6;
const errorRecord = (e: FerryError) => ({ code: e.code, message: e.message, exitCode: e.exitCode });
const asFerryError = (e: unknown) => e instanceof FerryError ? e
  : new FerryError('INTERNAL', 70, `internal error: ${(e as Error)?.stack?.split('\n').slice(0, 3).join(' ') ?? String(e)}`);
const exists = (p: string) => access(p).then(() => true, () => false);
const pause = (ms: number) => new Promise(r => setTimeout(r, ms));

/**
 * Whether another process (a dead worker's leftover daemon, on this host or on another one sharing
 * the storage) still holds the partial target open for writing: qemu's image locks say so.
 */
async function heldElsewhere(path: string): Promise<string | undefined> {
  const r = await run('qemu-img', ['info', path], { ignoreAbort: true, okCodes: [1] });
  return r.exitCode !== 0 && /lock|another process/i.test(r.stderr) ? r.stderr.trim().split('\n').pop() : undefined;
}

interface Running { abort: AbortController; done: Promise<void>; writes: Promise<unknown> }

export class FleetWorker {
  readonly events = new EventEmitter();
  private readonly running = new Map<string, Running>();
  private timer?: NodeJS.Timeout;
  private fenceTimer?: NodeJS.Timeout;
  private stopping = false;
  private ticking = false;
  private lastBeat = Date.now();
  private backoffUntil = 0;
  private failures = 0;
  private leftoversDue = false;
  private readonly info: WorkerInfo;
  readonly pollMs: number;
  readonly staleAfterMs: number;

  constructor(readonly store: FleetStore, private readonly opts: WorkerOptions) {
    this.events.setMaxListeners(0);
    this.pollMs = opts.pollMs ?? 1000;
    this.staleAfterMs = opts.staleAfterMs ?? 15_000;
    this.info = { name: opts.name, host: hostname(), pid: process.pid, tags: opts.tags, version: VERSION, concurrency: opts.concurrency, perHost: opts.perHost };
  }

  private say(line: string) { process.stderr.write(`ferry worker ${this.opts.name}: ${line}\n`); }

  async start(): Promise<void> {
    await this.store.heartbeat(this.info);
    this.lastBeat = Date.now();
    await this.reclaimOwn();
    this.schedule();
    this.fenceTimer = setInterval(() => this.fence(), Math.max(100, this.pollMs / 2));
    void this.tick();
  }

  /** What this worker left behind when it died or was cut off: undone here, on its own host, before it takes work. */
  private async reclaimOwn(): Promise<void> {
    await this.reclaimLeftovers();
    await this.requeueOwn();
  }

  /** What other workers found held by this one's jobs when they took them over (skipping a job this process still stops). */
  private async reclaimLeftovers(): Promise<number> {
    const left = (await this.store.leftovers(this.opts.name)).filter(r => !this.running.has(r.jobId));
    for (const r of left.reverse()) {
      try {
        const did = await reclaimOne(r, line => this.say(line));
        this.say(`${did ? 'reclaimed' : 'already gone'}: ${r.kind} ${r.id} (left by job ${r.jobId}, which another worker took over)`);
        await this.store.dropLeftover(r.seq);
      } catch (e) {
        this.say(`could not reclaim ${r.kind} ${r.id}: ${(e as Error).message}`);
      }
    }
    return left.length;
  }

  /** Jobs still marked ours: this worker died and came back before anyone took them over. */
  private async requeueOwn(): Promise<void> {
    for (const job of (await this.store.list({ state: 'running' })).filter(j => j.runner === this.opts.name)) {
      await this.log(job.id, `worker ${this.opts.name} restarted; reclaiming what its previous run held`);
      for (const r of (await this.store.resources(job.id)).reverse()) {
        try { await reclaimOne(r, line => void this.log(job.id, line)); await this.store.releaseResource(job.id, r); } catch (e) {
          await this.log(job.id, `could not reclaim ${r.kind} ${r.id}: ${(e as Error).message}`);
        }
      }
      await this.store.update(job.id, { state: 'queued', runner: undefined }, { ifRunner: this.opts.name }).catch(() => undefined);
    }
  }

  /** Cut off too long: our jobs are about to be someone else's. Checked on its own timer too: a tick can wait on a silent connection longer than that. */
  private fence(): void {
    if (Date.now() - this.lastBeat <= this.staleAfterMs * FENCE_FRACTION) return;
    for (const [id, r] of this.running) if (!r.abort.signal.aborted) r.abort.abort(new FerryError('JOB_LEASE_LOST', 75, `worker ${this.opts.name} lost the store for ${Math.round((Date.now() - this.lastBeat) / 1000)} s; another worker takes job ${id} over`));
  }

  /** The next tick after 0.5-1.5 poll intervals: workers polling in lockstep would hand every freed slot to the same one. */
  private schedule(): void {
    if (this.stopping) return;
    this.timer = setTimeout(() => { void this.tick().finally(() => this.schedule()); }, this.pollMs * (0.5 + Math.random()));
  }

  /** Stop claiming; running jobs stop where they are (queued again, to resume on any worker). */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    clearInterval(this.fenceTimer);
    for (const [id, r] of this.running) if (!r.abort.signal.aborted) r.abort.abort(jobInterrupted(id));
    await Promise.all([...this.running.values()].map(r => r.done));
    await this.store.removeWorker(this.opts.name).catch(() => undefined);
  }

  private emit(e: Omit<ProgressEvent, 'at'>): void {
    this.events.emit('event', { ...e, at: new Date().toISOString() } satisfies ProgressEvent);
  }

  private async log(jobId: string, line: string): Promise<void> {
    this.emit({ jobId, type: 'log', message: line });
    await this.retrying(jobId, () => this.store.appendLog(jobId, line)).catch(e => this.say(`cannot log for job ${jobId}: ${(e as Error).message}`));
  }

  /** A write for a running job: retried while the store is away, until the fence stops the job. */
  private async retrying<T>(jobId: string, f: () => Promise<T>): Promise<T> {
    for (let wait = 250; ; wait = Math.min(wait * 2, 4000)) {
      try { return await f(); } catch (e) {
        if (e instanceof FerryError) throw e;
        const r = this.running.get(jobId);
        if (!r || r.abort.signal.aborted || this.stopping) throw e;
        await pause(wait);
      }
    }
  }

  private async tick(): Promise<void> {
    if (this.ticking || this.stopping) return;
    this.ticking = true;
    try {
      this.fence();
      if (Date.now() < this.backoffUntil) return;
      await this.store.heartbeat(this.info);
      this.lastBeat = Date.now();
      if (this.failures) {
        this.say(`the store answers again after ${this.failures} failed attempt(s); claiming again`);
        this.leftoversDue = true;
      }
      this.failures = 0;
      // back from a cut: what others took over from us is undone here once our own run of it has stopped
      if (this.leftoversDue) this.leftoversDue = (await this.reclaimLeftovers()) > 0 || [...this.running.values()].some(r => r.abort.signal.aborted);
      for (const { job, from } of await this.store.takeOverStale(this.staleAfterMs, this.opts.name)) {
        await this.log(job.id, `worker ${from} stopped heartbeating (silent over ${this.staleAfterMs / 1000} s); ${this.opts.name} took the job over and queued it again`);
        this.emit({ jobId: job.id, type: 'state', state: 'queued' });
      }
      for (const j of await this.store.list({ state: 'running' })) {
        const r = this.running.get(j.id);
        if (r && j.cancelRequested && !r.abort.signal.aborted) r.abort.abort(jobCancelled(j.id));
        // a claim whose commit went through while its answer was lost with the connection: nobody runs it
        if (!r && j.runner === this.opts.name) {
          await this.store.update(j.id, { state: 'queued', runner: undefined }, { ifRunner: this.opts.name });
          await this.log(j.id, `worker ${this.opts.name} lost the answer to its claim (the store connection dropped); queued again`);
        }
      }
      while (!this.stopping && this.running.size < this.opts.concurrency) {
        const job = await this.store.claimNext({ worker: this.opts.name, tags: this.opts.tags, perHost: this.opts.perHost });
        if (!job) break;
        this.launch(job);
      }
    } catch (e) {
      this.failures++;
      // short enough that a store back within the fence finds the heartbeat before the fence fires
      const wait = Math.min(250 * 2 ** Math.min(this.failures, 5), 10_000, this.staleAfterMs / 8);
      this.backoffUntil = Date.now() + wait;
      if (this.failures === 1 || this.failures % 10 === 0) this.say(`the store does not answer (${(e as Error).message}); not claiming, retrying in ${wait} ms`);
    } finally {
      this.ticking = false;
    }
  }

  private launch(job: JobRecord): void {
    const abort = new AbortController();
    let finished!: () => void;
    const r: Running = { abort, done: new Promise<void>(res => { finished = res; }), writes: Promise.resolve() };
    this.running.set(job.id, r);
    void this.execute(job, r).catch(e => this.say(`job ${job.id}: ${(e as Error).stack ?? String(e)}`)).finally(() => {
      this.running.delete(job.id);
      finished();
    });
  }

  private setState(id: string, state: JobState, patch: Parameters<FleetStore['update']>[1] = {}) {
    this.emit({ jobId: id, type: 'state', state });
    return this.retrying(id, () => this.store.update(id, { ...patch, state }, { ifRunner: this.opts.name }));
  }

  private async execute(claimed: JobRecord, r: Running): Promise<void> {
    const id = claimed.id, me = this.opts.name;
    const log = (line: string) => { r.writes = r.writes.then(() => this.log(id, line)); };
    /** store writes in the order the job made them, never blocking the copy */
    const write = (f: () => Promise<unknown>) => {
      r.writes = r.writes.then(() => this.retrying(id, f)).catch(e => {
        if ((e as FerryError).code === 'JOB_LEASE_LOST' && !r.abort.signal.aborted) r.abort.abort(e);
      });
    };
    this.emit({ jobId: id, type: 'state', state: 'running' });
    let steps: StepRecord[] = claimed.steps;
    if (claimed.attempts > MAX_RUNS) {
      const err = jobResumeFailed(id, `it was started ${claimed.attempts - 1} times`);
      await this.log(id, `failed: ${err.code}: ${err.message}`);
      await this.setState(id, 'failed', { runner: undefined, error: errorRecord(err) });
      return;
    }
    const partial = partialOf(claimed.spec);
    if (steps.some(s => s.state !== 'pending')) {
      const done = steps.filter(s => s.state === 'done').map(s => s.name);
      const needsPartial = partial && !steps.some(s => s.name === 'commit' && s.state === 'done') && done.some(n => n !== 'open source' && n !== 'plan layout');
      const held = needsPartial && await exists(partial) ? await heldElsewhere(partial) : undefined;
      if (needsPartial && (held || !(await exists(partial)))) {
        await this.log(id, `restarting on worker ${me} (run ${claimed.attempts}): ${held
          ? `the partial target ${partial} is still held open by another process (${held}), the dead worker's leftovers, reclaimed when it comes back`
          : `the partial target ${partial} is not reachable from this host`}; starting again from the beginning`);
        // unlinked, not written: a leftover writer keeps its own inode, the new run gets a new file
        if (held) await rm(partial, { force: true });
        steps = [];
        await this.retrying(id, () => this.store.update(id, { steps }, { ifRunner: me }));
      } else {
        const running = steps.find(s => s.state === 'running');
        await this.log(id, `resuming on worker ${me} (run ${claimed.attempts}) from its last checkpoint: done before: ${done.join(', ') || 'nothing'}${running ? `; redoing '${running.name}'` : ''}${partial ? ` (partial target ${partial} is here)` : ''}`);
      }
    } else {
      await this.log(id, `started on worker ${me} (run ${claimed.attempts})`);
    }
    const tracker = new StepTracker(id, steps, s => { const copy = structuredClone(s); write(() => this.store.update(id, { steps: copy }, { ifRunner: me })); },
      s => this.emit({ jobId: id, type: 'step', step: s.name, message: s.state }), log);
    const progress = stepProgress(id, tracker, e => this.emit(e), log);
    const journal: ResourceJournal = {
      hold: res => write(() => this.store.holdResource(id, res)),
      release: res => write(() => this.store.releaseResource(id, res)),
    };
    const abort = r.abort;
    try {
      const result = await withAbortSignal(abort.signal, () => withResourceJournal(journal, () =>
        withNetworkCredentials(claimed.spec.credentials ?? {}, () => runJob(id, claimed.spec, tracker, progress, log))));
      await r.writes;
      if (abort.signal.aborted) throw abort.signal.reason;
      log(`done on worker ${me}`);
      await r.writes;
      await this.setState(id, 'done', { result, runner: undefined, error: undefined });
    } catch (e) {
      await r.writes;
      const err = asFerryError(abort.signal.aborted ? abort.signal.reason : e);
      if (err.code === 'JOB_LEASE_LOST') {
        // not ours any more: nothing written, the partial left to the worker that took it
        this.say(`job ${id}: ${err.message}`);
      } else if (err.code === 'JOB_INTERRUPTED') {
        await this.log(id, `interrupted: worker ${me} is stopping; the job is queued to resume on any worker`);
        await this.setState(id, 'queued', { runner: undefined }).catch(() => undefined);
      } else {
        if (partial) await rm(partial, { force: true }).catch(() => undefined);
        const state = err.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed';
        await this.log(id, `${state} on worker ${me}: ${err.code}: ${err.message}`);
        await this.setState(id, state, { error: errorRecord(err), runner: undefined }).catch(x => this.say(`job ${id}: ${(x as Error).message}`));
      }
    }
  }
}
