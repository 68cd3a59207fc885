// One process-wide abort signal: SIGINT/SIGTERM (and SIGHUP, a closed terminal
// or dropped SSH session, and SIGQUIT) abort the running job, every
// child started through run() is killed, and owners release what they hold.
// A job runner runs several jobs in one process: each gets its own signal,
// carried by async context (withAbortSignal), which wins over the process one.
import { AsyncLocalStorage } from 'node:async_hooks';
import { interrupted } from '../errors.js';

let controller: AbortController | undefined;
const jobSignal = new AsyncLocalStorage<AbortSignal>();

export function currentAbortSignal(): AbortSignal | undefined {
  return jobSignal.getStore() ?? controller?.signal;
}

export function throwIfAborted(): void {
  const signal = currentAbortSignal();
  if (signal?.aborted) throw signal.reason;
}

/** Run fn (and everything it starts) under signal instead of the process-wide one. */
export function withAbortSignal<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
  return jobSignal.run(signal, fn);
}

const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

/** Install signal handlers for the duration of fn. */
export async function withSignalAbort<T>(fn: () => Promise<T>): Promise<T> {
  controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (!controller!.signal.aborted) controller!.abort(interrupted(sig));
  };
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  try {
    return await fn();
  } finally {
    for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
    controller = undefined;
  }
}
