// What anyone may do to a job through the store alone: submit, cancel, retry.
// `ferry jobs …` uses these directly; a runner (ferry serve) in another
// process notices by polling the store, so no API needs to be up.
import { hostname } from 'node:os';
import { SpecInvalidError, jobCancelled, machineBusy, jobNotFound, jobStateConflict } from '../errors.js';
import { runnerAlive } from './reclaim.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { sourceHostOf, validateSpec } from './spec.js';
import { describeDeltaSpec, isDeltaKind } from '../delta/jobs.js';
import { profileNames } from '../profiles/profiles.js';
import type { FieldError, JobRecord, JobSpec, JobStore } from './types.js';
import type { AnyJobStore } from '../store/types.js';

const errorOf = (e: { code: string; message: string; exitCode: number }) => ({ code: e.code, message: e.message, exitCode: e.exitCode });

/** Every problem of a spec at once: its fields (validateSpec) and a hardware profile that does not exist. */
export function specProblems(spec: unknown): FieldError[] {
  const errors = validateSpec(spec);
  const profile = (spec as { profile?: unknown } | null)?.profile;
  if (typeof profile === 'string' && profile.trim() && !profileNames().includes(profile) && !errors.some(e => e.field === 'profile')) {
    errors.push({ field: 'profile', message: `no hardware profile named '${profile}'; known: ${profileNames().join(', ')}` });
  }
  return errors;
}

/** Check the spec (SPEC_INVALID with fieldErrors, exit 2) and queue it. */
export function submitJob(store: JobStore, spec: unknown): JobRecord {
  // fields left undefined (an in-process caller's optional choices) are not there at all
  const raw: unknown = spec === undefined ? spec : JSON.parse(JSON.stringify(spec));
  const problems = specProblems(raw);
  if (problems.length) throw new SpecInvalidError(problems);
  const checked = raw as JobSpec;
  const target = checked.target === undefined ? undefined : parseEndpoint(checked.target);
  // two jobs writing one target would share its partial file
  const busy = target && [...store.list({ state: 'queued' }), ...store.list({ state: 'running' })]
    .find(j => { const t = j.spec.target === undefined ? undefined : parseEndpoint(j.spec.target); return t?.kind === 'file' && target.kind === 'file' && t.path === target.path; });
  if (busy) throw new SpecInvalidError([{ field: 'target', message: `job ${busy.id} (${busy.state}) already writes ${checked.target}; wait for it or cancel it` }]);
  // one deploy or capture per machine at a time: its agent exports one disk, and a second deploy would race the first
  const onMachine = checked.machine && [...store.list({ state: 'queued' }), ...store.list({ state: 'running' })].find(j => j.spec.machine === checked.machine);
  if (onMachine) throw machineBusy(checked.machine!, `taken by a ${onMachine.spec.kind} job (${onMachine.state})`, onMachine.id);
  const job = store.create(checked, sourceHostOf(checked));
  store.appendLog(job.id, `submitted: ${describeSpec(checked)}`);
  return job;
}

/** "IMAGE -> TARGET", "deploy IMAGE -> machine m-…", "capture machine m-… -> TARGET" */
export function describeSpec(s: JobSpec): string {
  if (isDeltaKind(s.kind)) return describeDeltaSpec(s);
  if (s.kind === 'deploy') return `deploy ${s.source} -> machine ${s.machine}${s.disk ? ` disk ${s.disk}` : ''}`;
  if (s.kind === 'capture') return `capture machine ${s.machine}${s.disk ? ` disk ${s.disk}` : ''} -> ${s.target}`;
  return `${s.source} -> ${s.target}`;
}

export function mustGet(store: JobStore, id: string): JobRecord {
  const job = store.get(id);
  if (!job) throw jobNotFound(id);
  return job;
}

/**
 * A queued job is cancelled at once; a running one is marked so that its
 * runner (which polls) aborts it, releases everything and removes the partial.
 */
export function requestCancel(store: JobStore, id: string): JobRecord {
  const job = mustGet(store, id);
  if (job.state === 'queued') {
    store.appendLog(id, 'cancelled before it started');
    return store.update(id, { state: 'cancelled', error: errorOf(jobCancelled(id)) });
  }
  if (job.state === 'running') {
    if (!job.cancelRequested) store.appendLog(id, 'cancel requested');
    return store.update(id, { cancelRequested: true });
  }
  throw jobStateConflict(id, job.state, 'only a queued or running job can be cancelled');
}

/** A failed or cancelled job is queued again and starts from the beginning. */
export function retryJob(store: JobStore, id: string): JobRecord {
  const job = mustGet(store, id);
  if (job.state !== 'failed' && job.state !== 'cancelled') throw jobStateConflict(id, job.state, 'only a failed or cancelled job can be retried');
  store.appendLog(id, `retry (was ${job.state}${job.error ? `: ${job.error.code}` : ''})`);
  // a fresh start: the runs counted against the resume limit were the old attempt's
  return store.update(id, { state: 'queued', steps: [], error: undefined, result: undefined, runner: undefined, cancelRequested: false, attempts: 0 });
}

/** A runner on another host counts while it was seen this recently (it announces itself every poll). */
const REMOTE_RUNNER_FRESH_MS = 30_000;

/** The runners that will pick queued jobs up: on this host, processes that still exist; elsewhere, recently seen. */
export async function liveRunners(store: Pick<AnyJobStore, 'runners' | 'unregisterRunner'>): Promise<string[]> {
  const live: string[] = [];
  for (const r of await store.runners()) {
    const local = r.id.split(':')[0] === hostname();
    if (local ? await runnerAlive(r.id) : Date.now() - Date.parse(r.seenAt) < REMOTE_RUNNER_FRESH_MS) live.push(r.id);
    else if (local) await store.unregisterRunner(r.id); // died without withdrawing (kill -9)
  }
  return live;
}

/** The exit status `ferry jobs submit --wait` ends with. */
export function jobExitCode(job: JobRecord): number {
  if (job.state === 'done') return 0;
  return job.error?.exitCode ?? 1;
}

export const isFinal = (job: JobRecord) => job.state === 'done' || job.state === 'failed' || job.state === 'cancelled';
