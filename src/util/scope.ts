// A Scope owns resources (daemons, loop devices, mounts, temp dirs, partial
// targets). Each acquisition registers its release; release() undoes them in
// reverse order, always runs every one, and is safe to call twice.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { HeldResource } from '../jobs/types.js';

export type Release = () => Promise<void> | void;

/**
 * Where a job records what it holds, so that a restarted service can reclaim
 * what a crashed one left (jobs/reclaim.ts). Set for a job's whole async
 * context; acquisitions outside a job record nothing.
 */
export interface ResourceJournal { hold(r: HeldResource): void; release(r: HeldResource): void }
const journals = new AsyncLocalStorage<ResourceJournal>();

export function withResourceJournal<T>(journal: ResourceJournal, fn: () => Promise<T>): Promise<T> {
  return journals.run(journal, fn);
}

export class Scope {
  private readonly releases: { what: string; fn: Release }[] = [];
  private released = false;

  defer(what: string, fn: Release): void {
    if (this.released) throw new Error(`scope already released; cannot own ${what}`);
    this.releases.push({ what, fn });
  }

  /**
   * Own a system resource: recorded in the job's journal (if any) now, and
   * forgotten there only once its release succeeded.
   */
  hold(what: string, r: HeldResource, fn: Release): void {
    const journal = journals.getStore();
    this.defer(what, async () => { await fn(); journal?.release(r); });
    journal?.hold(r);
  }

  /** Forget a release without running it (ownership handed over, e.g. a finished target). */
  disown(what: string): void {
    const i = this.releases.findIndex(r => r.what === what);
    if (i >= 0) this.releases.splice(i, 1);
  }

  async release(): Promise<string[]> {
    this.released = true;
    const failures: string[] = [];
    while (this.releases.length) {
      const r = this.releases.pop()!;
      try {
        await r.fn();
      } catch (e) {
        failures.push(`${r.what}: ${(e as Error).message}`);
      }
    }
    if (failures.length) process.stderr.write(`ferry: cleanup problems:\n  ${failures.join('\n  ')}\n`);
    return failures;
  }
}

/** Run fn with a fresh scope that is released however fn ends. */
export async function withScope<T>(fn: (scope: Scope) => Promise<T>): Promise<T> {
  const scope = new Scope();
  try {
    return await fn(scope);
  } finally {
    await scope.release();
  }
}
