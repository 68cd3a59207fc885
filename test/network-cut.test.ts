// A network source that goes away in the middle of a copy. The server is
// killed with SIGKILL once the first copy phase has run for a moment; then it
// either comes back on the same port (the conversion waits, resumes and
// verifies) or stays gone (SOURCE_CONNECTION_LOST, exit 9, naming the
// endpoint, after the reconnect window and not long after; the partial
// target is removed and nothing is left on the machine).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { FERRY, ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { assertSameFiles } from './support/independent.js';
import { makeSmallDisk } from './support/small-disk.js';
import { startNbdkit, startTgtd, stopAllServers, type Server } from './support/servers.js';

guardMachine();
const dir = await tempDir('ferrycut-');
const IQN = 'iqn.2026-11.io.ferry.test:cut';

interface Event { event: string; phase?: string; message?: string; code?: string; [k: string]: unknown }

/**
 * `ferry convert URL TARGET --json` with FERRY_RECONNECT_SECONDS; 150 ms into
 * the first copy phase, SIGKILL the server and call afterKill. Early: the
 * partition is read ahead of the copy in large pieces, and an unthrottled
 * server has handed all of it over within a second. Returns the
 * exit, the events and the seconds from the kill to ferry's exit.
 */
async function convertCut(server: Server, target: string, reconnectSeconds: number, afterKill: () => Promise<void>,
  at: { phase: string; mode: 'rebuild' | 'clone'; env?: Record<string, string> } = { phase: 'copy', mode: 'rebuild' }) {
  // rebuild by default: its per-partition copy lasts long enough to cut (a used-block copy of this disk is over at once)
  const p = execa('node', [FERRY, 'convert', server.url, target, '--json', '--mode', at.mode], {
    reject: false, stdin: 'ignore', env: { FERRY_RECONNECT_SECONDS: String(reconnectSeconds), ...at.env },
  });
  const events: Event[] = [];
  let killedAt = 0, pending = '', phasesAtKill: string[] = [];
  let cut: Promise<void> | undefined;
  p.stdout!.on('data', (d: Buffer) => {
    pending += String(d);
    const lines = pending.split('\n');
    pending = lines.pop()!;
    for (const l of lines) {
      const e = JSON.parse(l) as Event;
      events.push(e);
      if (!cut && e.event === 'phase' && e.phase!.startsWith(at.phase)) {
        cut = (async () => {
          await new Promise(r => setTimeout(r, 150));
          phasesAtKill = events.filter(x => x.event === 'phase').map(x => x.phase!);
          process.kill(server.pid, 'SIGKILL');
          killedAt = Date.now();
          await server.stop();
          await afterKill();
        })();
      }
    }
  });
  const r = await p;
  await cut;
  const phases = events.filter(x => x.event === 'phase').map(x => x.phase!);
  assert.ok(killedAt, `the server was killed (phases: ${phases.join(', ')})`);
  assert.equal(phasesAtKill.length, phases.findIndex(x => x.startsWith(at.phase)) + 1, `killed during the first ${at.phase} phase`);
  return { exitCode: r.exitCode ?? -1, stderr: String(r.stderr), events, secondsAfterKill: (Date.now() - killedAt) / 1000 };
}

const notes = (events: Event[]) => events.filter(e => e.event === 'note').map(e => e.message!);

describe('a connection dropped mid-copy', () => {
  // ~300 MiB of random files: long enough a copy to cut
  let disk: string, diskSum: string;

  before(async () => {
    disk = join(dir, 'big.raw');
    await makeSmallDisk(disk, { sizeMiB: 400, randomMiB: 304 });
    diskSum = await sha256(disk);
  });

  after(async () => {
    await stopAllServers();
    assert.equal(await sha256(disk), diskSum, 'the served file is unchanged');
  });

  const servers = {
    // nbdkit served at 400 MB/s so the copy lasts a few seconds; tgtd has no rate limit, the copy is short anyway
    nbd: (port?: number) => startNbdkit({ file: disk, rate: '400M', port }),
    iscsi: (port?: number) => startTgtd({ file: disk, iqn: IQN, port }),
  };
  const portOf = (s: Server) => Number(new URL(s.url).port);

  for (const kind of ['nbd', 'iscsi'] as const) {
    const where = kind === 'nbd' ? 'the NBD server at' : 'the iSCSI portal';

    it(`${kind}: server killed and restarted on the same port: the conversion says it is reconnecting, completes and verifies`, async () => {
      const server = await servers[kind]();
      const o = join(dir, `${kind}-restart`);
      await mkdir(o);
      const target = join(o, 't.qcow2');
      const r = await convertCut(server, target, 30, async () => {
        await new Promise(res => setTimeout(res, 3500));
        await servers[kind](portOf(server));
      });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.events.at(-1)!.event, 'result');
      const said = notes(r.events);
      assert.ok(said.some(n => n.startsWith(`lost the connection to ${where} 127.0.0.1:${portOf(server)}`) && /reconnecting, attempt 1\b/.test(n)), said.join('\n'));
      assert.ok(said.some(n => /is back after \d+ s/.test(n)), said.join('\n'));
      await assertSameFiles(disk, target);
      const v = await ferry(['verify', disk, target]);
      assert.equal(v.exitCode, 0, v.stdout + v.stderr);
      assert.match(v.stdout, /^equivalent: p1 ext4/);
    });

    it(`${kind}: server killed and not restarted: SOURCE_CONNECTION_LOST, exit 9, naming host and port, after the retry window; nothing left`, async () => {
      const server = await servers[kind]();
      const port = portOf(server);
      const o = join(dir, `${kind}-gone`);
      await mkdir(o);
      const r = await convertCut(server, join(o, 't.qcow2'), 5, async () => undefined);
      assert.equal(r.exitCode, 9, r.stderr);
      assert.match(r.stderr, new RegExp(`^ferry: SOURCE_CONNECTION_LOST: lost the connection to ${where} 127\\.0\\.0\\.1:${port} .*backoff for 5 s did not succeed`, 'm'));
      assert.ok(r.secondsAfterKill >= 5, `failed ${r.secondsAfterKill} s after the kill, before the retry window ran out`);
      assert.ok(r.secondsAfterKill < 5 + 15, `failed ${r.secondsAfterKill} s after the kill`);
      // the retries were shown, with growing gaps, and a bounded count
      const attempts = notes(r.events).filter(n => /reconnecting, attempt \d+/.test(n));
      assert.ok(attempts.length >= 2 && attempts.length <= 6, attempts.join('\n'));
      const e = r.events.at(-1)!;
      assert.equal(e.code, 'SOURCE_CONNECTION_LOST');
      assert.equal(e.host, '127.0.0.1');
      assert.equal(e.port, port);
      assert.deepEqual(await readdir(o), [], 'no target or partial target left');
    });
  }

  // With the used-block copy the ext4 partition is done before the swap's copy starts; killed then,
  // the server is missed first by verify, which reads many files at once through node's thread pool.
  // Every pool thread then waits in the kernel, and a watchdog that needed the pool itself (fs.promises,
  // dns.lookup) would never cut the source off: the run hung for good.
  it('iscsi: server killed after the used-block copy, before verify: SOURCE_CONNECTION_LOST after the retry window, not a hang; nothing left', async () => {
    const server = await servers.iscsi();
    const o = join(dir, 'iscsi-verify-gone');
    await mkdir(o);
    // The page cache is dropped, so verify must ask the dead server again; and node's thread pool is
    // one thread, so the first hung read takes all of it (on a busy host with the default four, the
    // run seen in CI, verify's parallel reads did the same)
    const r = await convertCut(server, join(o, 't.qcow2'), 5, () => writeFile('/proc/sys/vm/drop_caches', '3'),
      { phase: 'copy', mode: 'clone', env: { UV_THREADPOOL_SIZE: '1' } });
    assert.equal(r.exitCode, 9, r.stderr);
    assert.match(r.stderr, /^ferry: SOURCE_CONNECTION_LOST: /m);
    assert.ok(r.secondsAfterKill < 5 + 15, `failed ${r.secondsAfterKill} s after the kill`);
    assert.deepEqual(await readdir(o), [], 'no target or partial target left');
  });

  it('verify and info against a server that is gone: SOURCE_UNREACHABLE naming the endpoint, nothing left', async () => {
    const server = await servers.nbd();
    const url = server.url;
    await server.stop();
    for (const args of [['verify', url, disk], ['info', url]]) {
      const r = await ferry(args);
      assert.equal(r.exitCode, 9, r.stderr);
      assert.match(r.stderr, /^ferry: SOURCE_UNREACHABLE: cannot reach the NBD server at 127\.0\.0\.1:\d+: connection refused/m);
    }
  });
});
