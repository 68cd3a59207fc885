// Which code runs a job: a conversion (jobs/steps.ts), or a deploy or
// capture through a registered machine's agent (machines/), or a diff, delta
// apply or factory build (delta/jobs.ts).
import { isDeltaKind, runDeltaJob } from '../delta/jobs.js';
import { runCapture, runDeploy } from '../machines/deploy.js';
import type { ProgressSink } from '../util/progress.js';
import { runConversion, type StepTracker } from './steps.js';
import type { JobSpec } from './types.js';

export function runJob(id: string, spec: JobSpec, steps: StepTracker, progress: ProgressSink, log: (line: string) => void): Promise<unknown> {
  if (spec.kind === 'deploy') return runDeploy(id, spec, steps, progress, log);
  if (spec.kind === 'capture') return runCapture(id, spec, steps, progress, log);
  if (isDeltaKind(spec.kind)) return runDeltaJob(spec, steps, log);
  return runConversion(spec, steps, progress, log);
}
