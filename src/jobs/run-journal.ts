// What a CLI run holds, written down as it goes, so that a run killed with
// SIGKILL (nothing in-process can clean up then) is cleaned up by the next
// `ferry` command or by `ferry cleanup`. A job of `ferry serve` records into
// the job store instead (jobs/reclaim.ts); this is the same idea for runs
// that have no store: one JSON-lines file per process under /run/ferry/runs
// (tmpfs: after a reboot nothing it names exists any more).
import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { HeldResource } from './types.js';
import { reclaimOne, runnerAlive, runnerId } from './reclaim.js';
import type { ResourceJournal } from '../util/scope.js';

export const runDir = () => process.env.FERRY_RUN_DIR ?? '/run/ferry/runs';

interface Entry { op: 'hold' | 'release'; r: HeldResource }

const sameResource = (a: HeldResource, b: HeldResource) => a.kind === b.kind && a.id === b.id;

/** This process's journal; its file appears with the first resource held and goes when the run ends. */
export class RunJournal implements ResourceJournal {
  private file?: string;
  constructor(private readonly runner: string) {}

  hold(r: HeldResource): void { this.write({ op: 'hold', r }); }
  release(r: HeldResource): void { if (this.file) this.write({ op: 'release', r }); }

  private write(e: Entry): void {
    try {
      if (!this.file) {
        mkdirSync(runDir(), { recursive: true, mode: 0o700 });
        this.file = join(runDir(), `${this.runner.replace(/[^\w.-]/g, '_')}.jsonl`);
        appendFileSync(this.file, JSON.stringify({ runner: this.runner }) + '\n');
      }
      appendFileSync(this.file, JSON.stringify(e) + '\n');
    } catch { /* not root or no /run: the run works, it just cannot be reclaimed after a SIGKILL */ }
  }

  /** the run ended (however): everything it held was released in-process */
  close(): void { if (this.file) rmSync(this.file, { force: true }); }
}

export async function openRunJournal(): Promise<RunJournal> {
  return new RunJournal(await runnerId());
}

/** What a dead run still holds, oldest first. */
function stillHeld(lines: string[]): { runner?: string; held: HeldResource[] } {
  let runner: string | undefined;
  const held: HeldResource[] = [];
  for (const line of lines) {
    let e: Partial<Entry> & { runner?: string };
    try { e = JSON.parse(line) as typeof e; } catch { continue; } // a line cut by the kill
    if (e.runner) runner = e.runner;
    else if (e.op === 'hold' && e.r) held.push(e.r);
    else if (e.op === 'release' && e.r) {
      for (let i = held.length - 1; i >= 0; i--) if (sameResource(held[i], e.r)) { held.splice(i, 1); break; }
    }
  }
  return { runner, held };
}

export interface DeadRun { runner: string; file: string; held: HeldResource[] }

/** Runs whose process is gone but whose journal is still there: they were killed. A live run is never listed. */
export async function deadRuns(): Promise<DeadRun[]> {
  const names = (await readdir(runDir()).catch(() => [] as string[])).filter(n => n.endsWith('.jsonl'));
  const out: DeadRun[] = [];
  for (const n of names) {
    const file = join(runDir(), n);
    const text = await readFile(file, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    const { runner, held } = stillHeld(text.split('\n').filter(Boolean));
    if (!runner || await runnerAlive(runner)) continue;
    out.push({ runner, file, held });
  }
  return out;
}

export const describeResource = (r: HeldResource) => `${r.kind} ${r.id}${r.pid ? ` (pid ${r.pid})` : ''}`;

/**
 * Undo what dead runs left, newest first. Each journal is first renamed to a
 * name of this process, so two commands starting at once never both undo it.
 * Returns one line per resource; what could not be undone keeps its journal.
 */
export async function reclaimDeadRuns(log: (line: string) => void): Promise<string[]> {
  const done: string[] = [];
  for (const run of await deadRuns()) {
    if (!run.held.length) { await rm(run.file, { force: true }); continue; } // it had released everything
    const claimed = `${run.file}.reclaiming-${process.pid}`;
    if (!(await rename(run.file, claimed).then(() => true, () => false))) continue;
    const failed: HeldResource[] = [];
    for (const r of [...run.held].reverse()) {
      try {
        const did = await reclaimOne(r, log);
        done.push(`${did ? 'removed' : 'already gone'}: ${describeResource(r)}`);
      } catch (e) {
        failed.push(r);
        done.push(`could not remove ${describeResource(r)}: ${(e as Error).message}`);
      }
    }
    if (failed.length) {
      // keep what is left for the next try, under the dead run's own name
      const lines = [{ runner: run.runner }, ...failed.map(r => ({ op: 'hold', r }))].map(x => JSON.stringify(x)).join('\n') + '\n';
      await rm(claimed, { force: true });
      appendFileSync(run.file, lines);
    } else {
      await rm(claimed, { force: true });
    }
    log(`ferry: cleaned up after a killed run (${run.runner.split(':')[1] ? `pid ${run.runner.split(':')[1]}` : run.runner}): ${run.held.length} resource(s)`);
  }
  return done;
}
