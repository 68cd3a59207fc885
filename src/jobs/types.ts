// The job service's shared shapes: what a job spec holds, what the store keeps
// and what the runner reports. The store is an interface so that a
// PostgreSQL-backed queue (several conversion hosts sharing work) can be added
// without touching the steps.

import type { CustomizeSpec } from '../customize/spec.js';

export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

/**
 * A job spec: the same choices as `ferry convert`, plus an optional registration.
 * kind deploy: source is the image, machine (and disk) the destination, no target;
 * kind capture: machine (and disk) is the source, target the image to write, no source.
 * kinds diff, delta-apply, factory-build: `ferry diff`, `delta apply`, `factory build` (delta/jobs.ts).
 */
export interface JobSpec {
  kind?: 'convert' | 'deploy' | 'capture' | 'diff' | 'delta-apply' | 'factory-build';
  /** absent in a capture spec (the machine's disk is the source) */
  source: string;
  /** absent in a deploy spec (the machine's disk is the target) */
  target: string;
  machine?: string;
  /** which of the machine's disks: name, path, serial, WWN, by-id link or model */
  disk?: string;
  /** convert, deploy: the identity the image gets (src/customize/spec.ts) */
  customize?: CustomizeSpec;
  format?: string;
  size?: string;
  profile?: string;
  mac?: string;
  /** 'uefi': a BIOS/MBR Linux guest becomes GPT/UEFI (convert --firmware uefi) */
  firmware?: string;
  options?: { mode?: 'rebuild' | 'clone' | 'block'; verify?: boolean; force?: boolean; inventory?: string; forceNtfsDirty?: boolean };
  /** network source credentials: paths of secret files, never the secrets */
  credentials?: { chapSecretFile?: string; mutualChapSecretFile?: string; tlsPskFile?: string; tlsCerts?: string };
  register?: { libvirt: string; name: string; memory?: string; cpus?: number; start?: boolean };
  /** diff: the changed image compared with source (target: the delta file to write, optional) */
  changed?: string;
  /** diff: only these guest paths (globs, as --paths) */
  paths?: string[];
  /** delta-apply: the delta file applied to source, written into the overlay target */
  delta?: string;
  /** factory-build: the recipe file (its output is the target) */
  recipe?: string;
  /** fleet: only a worker with every one of these tags runs it (ferry worker --tag), e.g. near the right storage */
  requires?: string[];
}

/** A field-level problem with a spec (HTTP 400 body, CLI exit 2). */
export interface FieldError { field: string; message: string }

export interface StepRecord {
  name: string;
  state: 'pending' | 'running' | 'done' | 'failed';
  startedAt?: string;
  endedAt?: string;
  /** what a later step or a resume needs (e.g. the partial target path, a layout) */
  checkpoint?: unknown;
  /** the latest progress of a running step (written every few seconds) */
  progress?: { bytes: number; total: number; rate?: number; etaSeconds?: number };
}

/** A resource a running job holds, recorded so a restarted service can reclaim it after a crash. */
export interface HeldResource {
  kind: 'loop' | 'mount' | 'daemon' | 'file' | 'process';
  /** loop: /dev/loopN; mount: the mount point; daemon: its FUSE export's mount point; file: the path;
   * process: a word of its command line that only this one has (e.g. its config file) */
  id: string;
  pid?: number;
  /** loop: its backing file, so a reused device number is never detached by mistake; process: its name (comm) */
  detail?: string;
}

export interface JobRecord {
  id: string;
  state: JobState;
  spec: JobSpec;
  /** the source host, for the per-host concurrency bound ('local' for files) */
  sourceHost: string;
  steps: StepRecord[];
  error?: { code: string; message: string; exitCode: number };
  result?: unknown;
  createdAt: string;
  updatedAt: string;
  attempts: number;
  /** the runner process working on it (host:pid:start time), while it runs */
  runner?: string;
  /** `ferry jobs cancel` asked a runner in another process to stop it */
  cancelRequested?: boolean;
}

export interface ProgressEvent {
  jobId: string;
  type: 'step' | 'progress' | 'state' | 'log';
  step?: string;
  state?: JobState;
  bytes?: number;
  total?: number;
  /** bytes per second over the last few seconds */
  rate?: number;
  etaSeconds?: number;
  message?: string;
  at: string;
}

export interface JobStore {
  create(spec: JobSpec, sourceHost: string): JobRecord;
  get(id: string): JobRecord | undefined;
  list(filter?: { state?: JobState }): JobRecord[];
  update(id: string, patch: Partial<Pick<JobRecord, 'state' | 'steps' | 'error' | 'result' | 'attempts' | 'runner' | 'cancelRequested'>>): JobRecord;
  /**
   * Atomically take a queued job for a runner (state running); undefined when
   * another runner took it first. Optional: without it a runner uses get + update.
   */
  claim?(id: string, runner: string): JobRecord | undefined;
  appendLog(id: string, line: string): void;
  logs(id: string, afterLine?: number): { n: number; line: string }[];
  holdResource(id: string, r: HeldResource): void;
  releaseResource(id: string, r: HeldResource): void;
  resources(id?: string): (HeldResource & { jobId: string })[];
  /** A runner announces itself while it is up (and again every poll: seen_at), and withdraws when it stops. */
  registerRunner(id: string): void;
  unregisterRunner(id: string): void;
  runners(): { id: string; startedAt: string; seenAt: string }[];
  close(): void;
}
