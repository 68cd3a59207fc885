// The job service under load, shared by test/api-load.test.ts and the bench's
// `jobs` part: N small data disks (one made, the rest sparse copies) submitted
// at once through the HTTP API of a real `ferry serve`. While they run, the
// number of running jobs is sampled every 200 ms through the API and the
// service's memory from /proc/PID/status (VmRSS; VmHWM is the peak).
import { execa } from 'execa';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Api, memoryOf, startServe } from './api-client.js';
import { makeSmallDisk } from './small-disk.js';
import { sha256 } from './hash.js';

export interface LoadOptions {
  jobs: number;
  concurrency: number;
  /** a scratch directory (sources, targets and FERRY_HOME go here) */
  dir: string;
  sizeMiB?: number;
  log?: (line: string) => void;
}

export interface LoadResult {
  jobs: number;
  /** sha256 of every source before the load (they are copies of one disk) */
  sourceSha256: string;
  concurrency: number;
  diskMiB: number;
  /** HTTP statuses of the submissions */
  submitted: number[];
  /** final state of each job */
  states: Record<string, number>;
  /** jobs whose own verify step found the target equivalent */
  verifiedByJob: number;
  /** the most jobs seen running at one sample */
  maxRunning: number;
  samples: number;
  /** the service's VmRSS right after it listened, its peak (VmHWM) and at the end, bytes */
  rssStartBytes: number;
  peakRssBytes: number;
  rssEndBytes: number;
  /** VmRSS once the first jobs had finished (the service warmed up) */
  rssWarmBytes: number;
  /** from the first submission until the last job ended */
  seconds: number;
  jobsPerMinute: number;
  /** job id, source and target of each job, for further checks (the caller removes dir) */
  records: { id: string; source: string; target: string; state: string; error?: { code: string; message: string } }[];
  /** everything `ferry serve` wrote */
  serveOutput: string;
  token: string;
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));
const FINAL = ['done', 'failed', 'cancelled'];

/** whether the job's own verify step found the target equivalent to its source */
export function verifiedByJob(job: any): boolean {
  return job.state === 'done' && job.result?.verified === true && job.result?.verify?.equivalent === true
    && job.steps?.some((s: any) => s.name === 'verify' && s.state === 'done');
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const log = o.log ?? (() => {});
  const sizeMiB = o.sizeMiB ?? 64;
  const home = join(o.dir, 'home');
  const first = join(o.dir, 'src-0.raw');
  log(`load: making a ${sizeMiB} MiB disk and ${o.jobs - 1} sparse copies`);
  await makeSmallDisk(first, { sizeMiB });
  const sourceSha256 = await sha256(first);
  const sources = [first];
  for (let i = 1; i < o.jobs; i++) {
    const p = join(o.dir, `src-${i}.raw`);
    await execa('cp', ['--sparse=always', first, p]);
    sources.push(p);
  }
  const serve = await startServe(['--listen', '127.0.0.1:0', '--concurrency', String(o.concurrency), '--log-level', 'warn'], { FERRY_HOME: home });
  try {
    const token = (await readFile(serve.tokenPath, 'utf8')).trim();
    const api = new Api(serve.base, token);
    const rssStart = (await memoryOf(serve.pid))!.rss;
    let maxRunning = 0, samples = 0, rssWarm = 0, sampling = true, finished = 0;
    const sampler = (async () => {
      while (sampling) {
        const r = await api.get('/jobs?state=running');
        if (r.status === 200) {
          maxRunning = Math.max(maxRunning, r.body.jobs.length);
          samples++;
        }
        await sleep(200);
      }
    })();

    log(`load: submitting ${o.jobs} jobs at once (concurrency ${o.concurrency})`);
    const t0 = performance.now();
    const subs = await Promise.all(sources.map((source, i) =>
      api.post('/jobs', { source, target: join(o.dir, `out-${i}.qcow2`) }).then(r => ({ r, source, target: join(o.dir, `out-${i}.qcow2`) }))));
    const ids = subs.filter(s => s.r.status === 201).map(s => s.r.body.id as string);
    let jobs: any[] = [];
    for (;;) {
      jobs = (await api.get('/jobs')).body.jobs.filter((j: any) => ids.includes(j.id));
      const n = jobs.filter(j => FINAL.includes(j.state)).length;
      if (n !== finished) log(`load: ${n}/${ids.length} ended after ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      finished = n;
      if (!rssWarm && n >= Math.min(ids.length, o.concurrency * 2)) rssWarm = (await memoryOf(serve.pid))!.rss;
      if (n === ids.length) break;
      await sleep(500);
    }
    const seconds = (performance.now() - t0) / 1000;
    sampling = false;
    await sampler;
    const mem = (await memoryOf(serve.pid))!;
    const states: Record<string, number> = {};
    for (const j of jobs) states[j.state] = (states[j.state] ?? 0) + 1;
    const byId = new Map(jobs.map(j => [j.id, j]));
    const records = subs.map(s => {
      const j = byId.get(s.r.body?.id);
      return { id: j?.id ?? '', source: s.source, target: s.target, state: j?.state ?? `http ${s.r.status}`, error: j?.error };
    });
    return {
      sourceSha256,
      jobs: o.jobs, concurrency: o.concurrency, diskMiB: sizeMiB,
      submitted: subs.map(s => s.r.status), states,
      verifiedByJob: jobs.filter(verifiedByJob).length,
      maxRunning, samples,
      rssStartBytes: rssStart, peakRssBytes: mem.hwm, rssEndBytes: mem.rss, rssWarmBytes: rssWarm,
      seconds, jobsPerMinute: ids.length / (seconds / 60),
      records, serveOutput: serve.output(), token,
    };
  } finally {
    const code = await serve.stop();
    if (code !== 0) log(`load: ferry serve exited with ${code}:\n${serve.output().slice(-2000)}`);
  }
}

/** Remove the load's sources and targets (FERRY_HOME stays for inspection until dir goes). */
export async function cleanLoad(dir: string, jobs: number): Promise<void> {
  for (let i = 0; i < jobs; i++) {
    await rm(join(dir, `src-${i}.raw`), { force: true });
    await rm(join(dir, `out-${i}.qcow2`), { force: true });
  }
}
