// One process-wide abort signal: SIGINT/SIGTERM abort the running job, every
// child started through run() is killed, and owners release what they hold.
import { interrupted } from '../errors.js';

let controller: AbortController | undefined;

export function currentAbortSignal(): AbortSignal | undefined {
  return controller?.signal;
}

export function throwIfAborted(): void {
  if (controller?.signal.aborted) throw controller.signal.reason;
}

/** Install signal handlers for the duration of fn. */
export async function withSignalAbort<T>(fn: () => Promise<T>): Promise<T> {
  controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (!controller!.signal.aborted) controller!.abort(interrupted(sig));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await fn();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    controller = undefined;
  }
}
