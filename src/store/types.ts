// The store as the fleet sees it: the job store's calls (jobs/types.ts
// JobStore), each a promise because a shared database is across a network,
// plus what workers on several hosts need: claiming under the per-host bound,
// heartbeats, and taking over a dead worker's jobs.
import type { HeldResource, JobRecord, JobSpec, JobState, JobStore } from '../jobs/types.js';

type Async<T> = { [K in keyof T]: T[K] extends (...a: infer A) => infer R ? (...a: A) => Promise<R> : T[K] };

/** The embedded store (sync) and the shared one (async) alike: callers await every call. */
export type AnyJobStore = { [K in keyof JobStore]: JobStore[K] extends ((...a: infer A) => infer R) | undefined ? (...a: A) => R | Promise<R> : JobStore[K] };

export interface WorkerInfo {
  name: string; host: string; pid: number; tags: string[]; version: string; concurrency: number; perHost: number;
}
export interface WorkerRecord extends WorkerInfo {
  startedAt: string; heartbeatAt: string;
  /** the heartbeat is older than the timeout given to workers() */
  stale: boolean;
  running: string[];
}

export interface ClaimRequest {
  worker: string; tags: string[]; perHost: number;
}

export interface FleetStore extends Async<Omit<JobStore, 'claim' | 'update'>> {
  readonly dialect: 'sqlite' | 'postgres';
  update(id: string, patch: Parameters<JobStore['update']>[1], opts?: { ifRunner?: string }): Promise<JobRecord>;
  /** Atomically take one queued job this worker may run (its tags, the per-host bound over every worker); undefined: none. */
  claimNext(req: ClaimRequest): Promise<JobRecord | undefined>;
  /** Insert or refresh this worker's row (the database's clock); false when the row says another process owns the name. */
  heartbeat(w: WorkerInfo): Promise<void>;
  removeWorker(name: string): Promise<void>;
  workers(staleAfterMs: number): Promise<WorkerRecord[]>;
  /**
   * Running jobs whose worker has not beaten for staleAfterMs: queued again for any worker, their
   * held resources moved to that worker's leftovers. Returns them with the dead worker's name.
   */
  takeOverStale(staleAfterMs: number, by: string): Promise<{ job: JobRecord; from: string }[]>;
  leftovers(worker: string): Promise<(HeldResource & { jobId: string; seq: number })[]>;
  dropLeftover(seq: number): Promise<void>;
  /** the runners field of a job as the API shows it */
  list(filter?: { state?: JobState }): Promise<JobRecord[]>;
  create(spec: JobSpec, sourceHost: string): Promise<JobRecord>;
  /** rows per table, for store migrate's comparison */
  counts(): Promise<Record<string, number>>;
}
