// What an API process (`ferry serve --store postgres://…`) needs of "the
// runner" when the jobs run on other hosts: submit, cancel and retry go
// through the shared store, and events come from it too: every POLL_MS the
// queued and running jobs are read, and new log lines, step changes, progress
// and state changes become ProgressEvents, so `GET /jobs/{id}/events` and
// `jobs logs --follow` work for a job on any worker (within POLL_MS).
import { EventEmitter } from 'node:events';
import { SpecInvalidError, jobCancelled, jobNotFound, jobStateConflict, machineBusy } from '../errors.js';
import { describeSpec } from '../jobs/control.js';
import { checkSpec, sourceHostOf } from '../jobs/spec.js';
import { profileNames } from '../profiles/profiles.js';
import { parseEndpoint } from '../sources/endpoint.js';
import type { JobRecord, JobState, ProgressEvent } from '../jobs/types.js';
import type { FleetStore } from './types.js';

const errorOf = (e: { code: string; message: string; exitCode: number }) => ({ code: e.code, message: e.message, exitCode: e.exitCode });

/** jobs/control.ts submitJob over the shared store: the same checks, awaited. */
export async function submitToStore(store: FleetStore, spec: unknown): Promise<JobRecord> {
  const checked = checkSpec(spec === undefined ? spec : JSON.parse(JSON.stringify(spec)));
  if (checked.profile !== undefined && !profileNames().includes(checked.profile)) {
    throw new SpecInvalidError([{ field: 'profile', message: `no hardware profile named '${checked.profile}'; known: ${profileNames().join(', ')}` }]);
  }
  const active = [...await store.list({ state: 'queued' }), ...await store.list({ state: 'running' })];
  const target = checked.target === undefined ? undefined : parseEndpoint(checked.target);
  const busy = target && active.find(j => { const t = j.spec.target === undefined ? undefined : parseEndpoint(j.spec.target); return t?.kind === 'file' && target.kind === 'file' && t.path === target.path; });
  if (busy) throw new SpecInvalidError([{ field: 'target', message: `job ${busy.id} (${busy.state}) already writes ${checked.target}; wait for it or cancel it` }]);
  const onMachine = checked.machine && active.find(j => j.spec.machine === checked.machine);
  if (onMachine) throw machineBusy(checked.machine!, `taken by a ${onMachine.spec.kind} job (${onMachine.state})`, onMachine.id);
  const job = await store.create(checked, sourceHostOf(checked));
  await store.appendLog(job.id, `submitted: ${describeSpec(checked)}`);
  return job;
}

/** A queued job is cancelled at once; a running one is marked, and its worker (any host) aborts it at its next poll. */
export async function cancelInStore(store: FleetStore, id: string): Promise<JobRecord> {
  const job = await store.get(id);
  if (!job) throw jobNotFound(id);
  if (job.state === 'queued') {
    await store.appendLog(id, 'cancelled before it started');
    return store.update(id, { state: 'cancelled', error: errorOf(jobCancelled(id)) });
  }
  if (job.state === 'running') {
    if (!job.cancelRequested) await store.appendLog(id, 'cancel requested');
    return store.update(id, { cancelRequested: true });
  }
  throw jobStateConflict(id, job.state, 'only a queued or running job can be cancelled');
}

export async function retryInStore(store: FleetStore, id: string): Promise<JobRecord> {
  const job = await store.get(id);
  if (!job) throw jobNotFound(id);
  if (job.state !== 'failed' && job.state !== 'cancelled') throw jobStateConflict(id, job.state, 'only a failed or cancelled job can be retried');
  await store.appendLog(id, `retry (was ${job.state}${job.error ? `: ${job.error.code}` : ''})`);
  return store.update(id, { state: 'queued', steps: [], error: undefined, result: undefined, runner: undefined, cancelRequested: false, attempts: 0 });
}

interface Seen { state: JobState; logN: number; steps: string; progress: string }

export class StoreFrontend {
  readonly events = new EventEmitter();
  private readonly seen = new Map<string, Seen>();
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(readonly store: FleetStore, readonly pollMs = 1000) { this.events.setMaxListeners(0); }

  start(): void { this.timer = setInterval(() => void this.poll(), this.pollMs); }
  stop(): void { if (this.timer) clearInterval(this.timer); }

  submit(spec: unknown) { return submitToStore(this.store, spec); }
  cancel(id: string) { return cancelInStore(this.store, id); }
  retry(id: string) { return retryInStore(this.store, id); }

  private emit(e: Omit<ProgressEvent, 'at'>) { this.events.emit('event', { ...e, at: new Date().toISOString() }); }

  private async poll(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const active = [...await this.store.list({ state: 'queued' }), ...await this.store.list({ state: 'running' })];
      const ids = new Set(active.map(j => j.id));
      // jobs that ended since the last look
      const ended = (await Promise.all([...this.seen.keys()].filter(id => !ids.has(id)).map(id => this.store.get(id)))).filter((j): j is JobRecord => !!j);
      for (const job of [...active, ...ended]) this.diff(job, await this.store.logs(job.id, this.seen.get(job.id)?.logN ?? 0));
      for (const j of ended) this.seen.delete(j.id);
    } catch { /* the store away for a moment: the next poll tells */ } finally {
      this.busy = false;
    }
  }

  private diff(job: JobRecord, lines: { n: number; line: string }[]): void {
    const was = this.seen.get(job.id);
    const now: Seen = {
      state: job.state, logN: lines.at(-1)?.n ?? was?.logN ?? 0,
      steps: job.steps.map(s => `${s.name}=${s.state}`).join(','),
      progress: JSON.stringify(job.steps.find(s => s.state === 'running')?.progress ?? null),
    };
    this.seen.set(job.id, now);
    if (!was) return; // first sight: the API's snapshot (GET /jobs/{id}/events 'job') already has it all
    for (const l of lines) this.emit({ jobId: job.id, type: 'log', message: l.line });
    if (was.steps !== now.steps) {
      const s = job.steps.find(x => x.state === 'running') ?? job.steps.filter(x => x.state !== 'pending').at(-1);
      if (s) this.emit({ jobId: job.id, type: 'step', step: s.name, message: s.state });
    }
    const running = job.steps.find(s => s.state === 'running');
    if (was.progress !== now.progress && running?.progress) {
      const p = running.progress;
      this.emit({ jobId: job.id, type: 'progress', step: running.name, bytes: p.bytes, total: p.total, rate: p.rate, etaSeconds: p.etaSeconds });
    }
    if (was.state !== now.state) this.emit({ jobId: job.id, type: 'state', state: job.state, message: job.error?.message });
  }
}
