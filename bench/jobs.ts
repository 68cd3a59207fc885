// Bench part `jobs`: the job service under load. FERRY_BENCH_JOBS (default 50)
// small data disks (64 MiB, one made and the rest sparse copies) submitted at
// once through the HTTP API of `ferry serve --concurrency 2`; reports the total
// time, jobs per minute, the most jobs seen running at once (sampled every
// 200 ms through the API) and the service's memory (VmRSS, peak VmHWM).
import { cleanLoad, runLoad, type LoadResult } from '../test/support/api-load.js';

export type JobsResult = Omit<LoadResult, 'records' | 'serveOutput' | 'token' | 'submitted'> & {
  /** submissions answered 201 */
  accepted: number;
  /** all jobs done and verified by their own verify step, never more running than the bound */
  ok: boolean;
};

export async function measureJobs(work: string): Promise<JobsResult> {
  const jobs = Math.max(1, Number(process.env.FERRY_BENCH_JOBS ?? 50) || 50);
  const r = await runLoad({ jobs, concurrency: 2, dir: work, log: l => console.error(`bench: jobs: ${l.replace(/^load: /, '')}`) });
  await cleanLoad(work, jobs);
  if (r.serveOutput.includes(r.token)) throw new Error('the API token appeared in the output of ferry serve');
  const { records: _records, serveOutput: _out, token: _token, submitted, ...figures } = r;
  const accepted = submitted.filter(s => s === 201).length;
  const ok = accepted === jobs && r.states.done === jobs && r.verifiedByJob === jobs && r.maxRunning <= r.concurrency;
  return { ...figures, accepted, ok };
}

export function reportJobs(r: JobsResult): string {
  const MiB = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  return [
    `\njob service: ${r.jobs} jobs (${r.diskMiB} MiB data disks) submitted at once through the HTTP API, --concurrency ${r.concurrency}`,
    `  accepted (201):   ${r.accepted}`,
    `  ended:            ${Object.entries(r.states).map(([s, n]) => `${n} ${s}`).join(', ')}; verified by their own step: ${r.verifiedByJob}`,
    `  total time:       ${r.seconds.toFixed(1)} s   (${r.jobsPerMinute.toFixed(1)} jobs/minute)`,
    `  running at once:  at most ${r.maxRunning} over ${r.samples} samples (bound ${r.concurrency})`,
    `  ferry serve RSS:  ${MiB(r.rssStartBytes)} at start, ${MiB(r.rssWarmBytes)} warm, ${MiB(r.rssEndBytes)} at the end; peak (VmHWM) ${MiB(r.peakRssBytes)}`,
    `  ${r.ok ? 'ok' : 'NOT OK: a job did not finish and verify, or the bound was exceeded'}`,
  ].join('\n');
}
