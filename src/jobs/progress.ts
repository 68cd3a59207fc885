// A job's ProgressSink: bytes, rate and ETA as 'progress' events (at most one
// a second), notes as log lines, and the latest figures on the running step
// in the store every few seconds so `ferry jobs show` sees them too.

import type { ProgressSink } from '../util/progress.js';
import type { StepTracker } from './steps.js';
import type { ProgressEvent } from './types.js';

export interface ProgressTick { phase: string; bytes: number; total: number; rate?: number; etaSeconds?: number }

/** The rate is measured over the last WINDOW_MS, as the terminal bar does. */
const WINDOW_MS = 5000, EMIT_MS = 1000, STORE_MS = 2000;

export function jobProgress(on: { tick(t: ProgressTick, store: boolean): void; note(message: string): void }): ProgressSink {
  let phase = '', total = 0, done = 0, lastEmit = 0, lastStore = 0;
  let samples: { t: number; done: number }[] = [];
  const emit = (force: boolean) => {
    const now = Date.now();
    if (!force && now - lastEmit < EMIT_MS) return;
    lastEmit = now;
    const a = samples[0];
    const rate = a && now - a.t >= 1000 ? (done - a.done) / ((now - a.t) / 1000) : undefined;
    const eta = rate && rate > 0 && total > done ? (total - done) / rate : undefined;
    const toStore = force || now - lastStore >= STORE_MS;
    if (toStore) lastStore = now;
    on.tick({ phase, bytes: done, total, rate: rate === undefined ? undefined : Math.round(rate), etaSeconds: eta === undefined ? undefined : Math.round(eta) }, toStore);
  };
  return {
    phase(name, t) { phase = name; total = t; done = 0; samples = []; lastEmit = 0; emit(true); },
    update(d) {
      done = d;
      const now = Date.now();
      if (!samples.length || now - samples.at(-1)!.t >= 100) samples.push({ t: now, done });
      while (samples.length > 1 && samples[1].t <= now - WINDOW_MS) samples.shift();
      emit(false);
    },
    note(message) { on.note(message); },
    end() { if (phase) emit(true); phase = ''; },
  };
}

/** A running job's sink, as the embedded runner and a fleet worker both use it: events, and the figures on the running step. */
export function stepProgress(jobId: string, tracker: Pick<StepTracker, 'running' | 'setProgress'>,
  emit: (e: Omit<ProgressEvent, 'at'>) => void, note: (line: string) => void): ProgressSink {
  return jobProgress({
    tick: (t, toStore) => {
      emit({ jobId, type: 'progress', step: tracker.running?.name ?? t.phase, message: t.phase, bytes: t.bytes, total: t.total, rate: t.rate, etaSeconds: t.etaSeconds });
      if (toStore) tracker.setProgress({ bytes: t.bytes, total: t.total, rate: t.rate, etaSeconds: t.etaSeconds });
    },
    note,
  });
}
