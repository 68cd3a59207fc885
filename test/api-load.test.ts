// The job service under load through its HTTP API: JOBS small data disks
// submitted at once to `ferry serve --concurrency 2`. All must end done and
// verify (the job's own verify step, then `ferry verify` on each target), the
// running count sampled every 200 ms never exceeds 2, and the service's memory
// stays flat. About 2.5 minutes here (40 s of jobs, 1 s per `ferry verify`).
// FERRY_API_LOAD_JOBS sets the count (default 50, as the bench's `jobs` part).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runLoad, type LoadResult } from './support/api-load.js';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { assertSameFiles } from './support/independent.js';

guardMachine();
const dir = await tempDir('ferry-api-load-');
const JOBS = Number(process.env.FERRY_API_LOAD_JOBS ?? 50);
const MiB = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;

describe('ferry serve under load', () => {
  let r: LoadResult;
  it(`${JOBS} jobs at once, concurrency 2: all done, never more than 2 running, memory flat`, { timeout: 600_000 }, async () => {
    r = await runLoad({ jobs: JOBS, concurrency: 2, dir, log: l => process.stderr.write(l + '\n') });
    process.stderr.write(`load: ${JOBS} jobs in ${r.seconds.toFixed(1)} s (${r.jobsPerMinute.toFixed(1)} jobs/min), max running ${r.maxRunning} over ${r.samples} samples, RSS start ${MiB(r.rssStartBytes)} warm ${MiB(r.rssWarmBytes)} end ${MiB(r.rssEndBytes)} peak ${MiB(r.peakRssBytes)}\n`);
    assert.deepEqual(r.submitted, Array(JOBS).fill(201));
    assert.deepEqual(r.states, { done: JOBS }, JSON.stringify(r.records.filter(x => x.state !== 'done'), null, 1));
    assert.equal(r.verifiedByJob, JOBS, 'every job verified its target');
    assert.ok(r.samples >= 10, `sampled ${r.samples} times`);
    assert.ok(r.maxRunning <= 2, `at most 2 running, saw ${r.maxRunning}`);
    assert.equal(r.maxRunning, 2, 'the bound was reached');
    // flat: the end is within 64 MiB of the service once warm, and the peak stays modest
    assert.ok(r.rssEndBytes - r.rssWarmBytes < 64 * 2 ** 20, `RSS grew from ${MiB(r.rssWarmBytes)} to ${MiB(r.rssEndBytes)}`);
    assert.ok(r.peakRssBytes < 400 * 2 ** 20, `peak RSS ${MiB(r.peakRssBytes)}`);
    assert.ok(!r.serveOutput.includes(r.token), 'the token is in the service output');
  });

  it('every target is equivalent to its source, judged independently and by ferry verify', { timeout: 600_000 }, async () => {
    assert.ok(r, 'the load ran');
    for (const j of r.records) {
      await assertSameFiles(j.source, j.target, j.id);
      const v = await ferry(['verify', j.source, j.target]);
      assert.equal(v.exitCode, 0, `${j.id}: ${v.stdout}${v.stderr}`);
      assert.equal(await sha256(j.source), r.sourceSha256, `${j.id}: its source is unchanged`);
    }
  });
});
