// `ferry diff`, `delta apply` and `factory build` as jobs of `ferry serve`
// (kinds diff, delta-apply, factory-build): the commands' own code, one step
// each. What a job writes (the delta file, the overlay) is written under the
// target's partial name and renamed when it is whole, so a failed, cancelled
// or interrupted job leaves no half file (the runner removes the partial).
import { rename, rm, stat } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { partialPathFor } from '../blockdev/disk.js';
import { targetExists } from '../errors.js';
import type { StepTracker } from '../jobs/steps.js';
import type { JobSpec } from '../jobs/types.js';
import { applyDelta, type ApplyResult } from './apply.js';
import { diffImages, type DiffResult } from './diff.js';
import { factoryBuild, type FactoryResult } from './factory.js';

export const DELTA_KINDS = ['diff', 'delta-apply', 'factory-build'] as const;
export type DeltaKind = typeof DELTA_KINDS[number];
export const isDeltaKind = (k: unknown): k is DeltaKind => (DELTA_KINDS as readonly unknown[]).includes(k);

/** the spec fields only these kinds use */
export const DELTA_FIELDS = { changed: 'string', delta: 'string', paths: 'array', recipe: 'string' } as const;

/** which fields each kind needs (required) and may have (beside kind, requires and options.force) */
const KIND_FIELDS: Record<DeltaKind, { required: string[]; optional: string[] }> = {
  diff: { required: ['source', 'changed'], optional: ['target', 'paths'] },
  'delta-apply': { required: ['delta', 'source', 'target'], optional: ['options'] },
  'factory-build': { required: ['recipe'], optional: [] },
};

const WHAT: Record<string, string> = {
  source: 'the base image (an absolute path)',
  changed: 'the changed image to compare with source (an absolute path)',
  target: 'the file to write (an absolute path)',
  delta: 'the .ferrydelta file to apply (an absolute path)',
  recipe: 'the factory recipe (YAML, an absolute path)',
};

/** Every problem with a diff, delta-apply or factory-build spec, as (field, message). */
export function deltaSpecErrors(obj: Record<string, unknown>, kind: DeltaKind, err: (field: string, message: string) => void): void {
  const { required, optional } = KIND_FIELDS[kind];
  for (const k of Object.keys(obj)) {
    if (k === 'kind' || k === 'requires' || required.includes(k) || optional.includes(k)) continue;
    err(k, `does not apply to a ${kind} job; it has ${[...required, ...optional].join(', ')}`);
  }
  for (const k of required) if (obj[k] === undefined) err(k, `is required: ${WHAT[k]}`);
  for (const k of ['source', 'changed', 'target', 'delta', 'recipe']) {
    const v = obj[k];
    if (v === undefined || !(required.includes(k) || optional.includes(k))) continue;
    if (typeof v !== 'string' || !v.trim()) err(k, 'must be a non-empty string');
    else if (!isAbsolute(v)) err(k, `must be an absolute path, not ${v}`);
  }
  if (obj.paths !== undefined && (!Array.isArray(obj.paths) || obj.paths.some(p => typeof p !== 'string' || !p))) err('paths', "must be a list of guest path globs such as '/etc/**'");
  const options = obj.options;
  if (options !== undefined && kind === 'delta-apply') {
    if (typeof options !== 'object' || options === null || Array.isArray(options)) err('options', 'must be a mapping with force');
    else for (const [k, v] of Object.entries(options)) {
      if (k !== 'force') err(`options.${k}`, 'does not apply to a delta-apply job; its only option is force');
      else if (typeof v !== 'boolean') err('options.force', 'must be a boolean');
    }
  }
}

/** "diff A B -> D", "delta-apply D on IMAGE -> OVERLAY", "factory-build RECIPE" */
export function describeDeltaSpec(s: JobSpec): string {
  if (s.kind === 'diff') return `diff ${s.source} ${s.changed}${s.target ? ` -> ${s.target}` : ''}`;
  if (s.kind === 'delta-apply') return `delta-apply ${s.delta} on ${s.source} -> ${s.target}`;
  return `factory-build ${s.recipe}`;
}

/** Write `final` through its partial name: refused if final exists, an interrupted run's partial is ours to redo. */
async function throughPartial<T>(final: string, steps: StepTracker, write: (partial: string) => Promise<T>): Promise<T> {
  if (await stat(final).catch(() => undefined)) throw targetExists(final);
  const partial = partialPathFor(final);
  if (steps.started) await rm(partial, { force: true });
  const value = await write(partial);
  await rename(partial, final);
  return value;
}

export async function runDeltaJob(spec: JobSpec, steps: StepTracker, log: (line: string) => void): Promise<DiffResult | ApplyResult | FactoryResult> {
  if (spec.kind === 'diff') {
    steps.plan(['diff']);
    return steps.run('diff', async () => {
      const diff = (delta?: string) => diffImages({ a: spec.source, b: spec.changed!, delta, paths: spec.paths });
      if (!spec.target) return diff();
      const r = await throughPartial(spec.target, steps, diff);
      if (r.delta) r.delta.file = spec.target;
      log(`delta written to ${spec.target}: ${r.delta?.ops ?? 0} operations`);
      return r;
    });
  }
  if (spec.kind === 'delta-apply') {
    steps.plan(['apply delta']);
    return steps.run('apply delta', async () => {
      const r = await throughPartial(spec.target, steps, overlay => applyDelta({ delta: spec.delta!, image: spec.source, overlay, force: spec.options?.force }));
      r.overlay = spec.target;
      if (r.forced.length) log(`forced over ${r.forced.length} conflict(s): ${r.forced.join(', ')}`);
      return r;
    });
  }
  // factoryBuild checks everything first and removes its output when it fails
  steps.plan(['factory build']);
  return steps.run('factory build', () => factoryBuild(spec.recipe!, { notice: log }), { resumable: false });
}
