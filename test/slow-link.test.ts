// A slow link: an NBD server inside a network namespace this test creates,
// reached over a veth pair whose both ends are shaped to 200 Mbit/s with a few
// milliseconds of latency. A conversion completes and verifies, its progress
// rate matches the link and its ETA stays sensible, and the traffic stays on
// the namespace's addresses.
//
// Shaping: `tc netem` (delay + rate) when the kernel has sch_netem. Without it
// (this machine: "Specified qdisc kind is unknown"), the rate is shaped with
// `tc tbf` on both veth ends and the latency is added on the server side by
// nbdkit's delay filter (every read answered DELAY_MS later, about the round
// trip a netem delay of DELAY_MS / 2 each way would add).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect } from 'node:net';
import { execa, type ResultPromise } from 'execa';
import { FERRY, ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { assertSameFiles } from './support/independent.js';
import { makeSmallDisk } from './support/small-disk.js';
import { makeNetnsLink, type NetnsLink } from './support/netns.js';

guardMachine();
const dir = await tempDir('ferryslow-');

const RATE_MBIT = 200;
const LINK_BYTES_PER_S = RATE_MBIT * 1e6 / 8;
const DELAY_MS = 4;
const RANDOM_MIB = 152;
// unique per test process; interface names stay within 15 characters
const tag = `${process.pid % 100000}`;
const NS = `ferry-slow-${tag}`;
const HOST_IF = `fslh${tag}`, NS_IF = `fsln${tag}`;
const HOST_IP = '10.232.0.1', NS_IP = '10.232.0.2';
const PORT = 10809;

const sh = (cmd: string, args: string[]) => execa(cmd, args, { stdin: 'ignore' });
const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/** rx/tx bytes of every interface of this (the host's) namespace */
async function linkBytes(): Promise<Map<string, { rx: number; tx: number }>> {
  const j = JSON.parse((await sh('ip', ['-s', '-j', 'link', 'show'])).stdout) as
    { ifname: string; stats64: { rx: { bytes: number }; tx: { bytes: number } } }[];
  return new Map(j.map(l => [l.ifname, { rx: l.stats64.rx.bytes, tx: l.stats64.tx.bytes }]));
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise(resolve => {
    const s = connect({ host, port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => { s.destroy(); resolve(false); });
  });
}

interface Progress { event: 'progress'; phase: string; done: number; total: number; rate: number; eta: number }
interface Timed { at: number; ev: { event: string; phase?: string } & Partial<Omit<Progress, 'event'>> }

describe('a slow link: NBD from a network namespace over a shaped veth pair', () => {
  let disk: string, diskSum: string;
  let server: ResultPromise | undefined;
  let shaping = '';
  let link: NetnsLink | undefined;
  const inNs = (cmd: string, args: string[]) => link!.exec(cmd, args);

  before(async () => {
    disk = join(dir, 'disk.raw');
    await makeSmallDisk(disk, { sizeMiB: 400, randomMiB: RANDOM_MIB });
    diskSum = await sha256(disk);
    link = await makeNetnsLink({ ns: NS, hostIf: HOST_IF, nsIf: NS_IF, hostIp: HOST_IP, nsIp: NS_IP });

    // netem when the kernel has it: half the delay each way, and the rate
    const netem = (dev: string) => ['qdisc', 'add', 'dev', dev, 'root', 'netem', 'delay', `${DELAY_MS / 2}ms`, 'rate', `${RATE_MBIT}mbit`];
    const n1 = await execa('tc', netem(HOST_IF), { stdin: 'ignore', reject: false });
    if (n1.exitCode === 0) {
      await inNs('tc', netem(NS_IF));
      shaping = 'netem';
    } else {
      assert.match(String(n1.stderr), /qdisc kind is unknown|not supported|No such file/i, `tc netem failed otherwise: ${String(n1.stderr)}`);
      // token bucket: the rate, a 256 KiB bucket (GSO packets on veth reach 64 KiB), 50 ms of queue
      const tbf = (dev: string) => ['qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${RATE_MBIT}mbit`, 'burst', '256kb', 'latency', '50ms'];
      await sh('tc', tbf(HOST_IF));
      await inNs('tc', tbf(NS_IF));
      shaping = 'tbf + nbdkit delay filter';
    }

    // nbdkit inside the namespace, listening on the namespace's address only
    const delay = shaping === 'netem' ? [] : ['--filter=delay'];
    const delayArgs = shaping === 'netem' ? [] : [`delay-read=${DELAY_MS}ms`];
    server = execa('ip', ['netns', 'exec', NS, 'nbdkit', '--foreground', '--exit-with-parent', '--read-only',
      '-i', NS_IP, '-p', String(PORT), ...delay, 'file', disk, ...delayArgs],
    { reject: false, stdin: 'ignore', buffer: true });
    for (let i = 0; ; i++) {
      if (server.exitCode !== null) assert.fail(`nbdkit exited: ${String((await server).stderr)}`);
      if (await canConnect(NS_IP, PORT)) break;
      assert.ok(i < 200, 'nbdkit did not listen within 10 s');
      await sleep(50);
    }
  });

  after(async () => {
    if (server) {
      if (server.exitCode === null) server.kill('SIGTERM');
      const t = setTimeout(() => server!.kill('SIGKILL'), 3000);
      await server;
      clearTimeout(t);
    }
    await link?.remove(); // the pair and the namespace, each checked gone
    if (diskSum) assert.equal(await sha256(disk), diskSum, 'the served disk is unchanged');
  });

  it(`nbdkit listens only on ${NS_IP}, inside the namespace`, async () => {
    const listening = (await inNs('ss', ['-Hltn'])).stdout.trim().split('\n').map(l => l.trim().split(/\s+/)[3]);
    assert.deepEqual(listening, [`${NS_IP}:${PORT}`]);
    assert.equal(await inNs('nbdinfo', ['--size', `nbd://127.0.0.1:${PORT}/disk`]).then(() => true, () => false), false,
      'the namespace\'s loopback does not answer');
  });

  it(`converts over a ${RATE_MBIT} Mbit/s, ${DELAY_MS} ms link (netem; without sch_netem: tbf + nbdkit's delay filter) and verifies; the rate matches the link, the ETA stays sensible, the traffic stays on the veth`, async () => {
    const target = join(dir, 'slow.qcow2');
    const url = `nbd://${NS_IP}:${PORT}/disk`;
    const before = await linkBytes();
    const t0 = performance.now();
    const child = execa('node', [FERRY, 'convert', url, target, '--json', '--mode', 'rebuild'], { reject: false, stdin: 'ignore' });  // its rate and ETA checks read the rebuild's per-partition copy phases
    const events: Timed[] = [];
    for await (const line of child.iterable()) {
      events.push({ at: (performance.now() - t0) / 1000, ev: JSON.parse(String(line)) as Timed['ev'] });
    }
    const r = await child;
    const wall = (performance.now() - t0) / 1000;
    const after = await linkBytes();
    assert.equal(r.exitCode, 0, String(r.stderr));
    assert.equal(events.at(-1)!.ev.event, 'result');

    await assertSameFiles(disk, target);
    const v = await ferry(['verify', disk, target]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /^equivalent: p1 ext4/);

    // the phases, each with its start, end and progress events
    const phases: { name: string; start: number; end: number; progress: Timed[] }[] = [];
    for (const e of events) {
      if (e.ev.event === 'phase') {
        if (phases.length) phases.at(-1)!.end = e.at;
        phases.push({ name: e.ev.phase!, start: e.at, end: wall, progress: [] });
      } else if (e.ev.event === 'progress' && phases.length) {
        phases.at(-1)!.progress.push(e);
      } else if (e.ev.event === 'result' && phases.length) {
        phases.at(-1)!.end = Math.min(phases.at(-1)!.end, e.at);
      }
    }
    const summary = phases.map(p => `${p.name}: ${(p.end - p.start).toFixed(1)} s, ${p.progress.length} progress events: ` +
      p.progress.map(e => `[${(e.at - p.start).toFixed(1)} s ${((e.ev.done ?? 0) / 2 ** 20).toFixed(0)} MiB ${((e.ev.rate ?? 0) / 1e6).toFixed(1)} MB/s eta ${e.ev.eta}]`).join(' ')).join('\n');
    console.log(`shaping: ${shaping}; wall ${wall.toFixed(1)} s\n${summary}`);

    const copy = phases.find(p => p.name === 'copy p1 ext4');
    assert.ok(copy, `a copy phase for p1 (phases: ${phases.map(p => p.name).join(', ')})`);
    const copySeconds = copy.end - copy.start;
    // ~152 MiB over 25 MB/s: the copy must take about as long as the link needs, and not much longer
    const linkSeconds = RANDOM_MIB * 2 ** 20 / LINK_BYTES_PER_S;
    assert.ok(copySeconds > linkSeconds * 0.8, `copy took ${copySeconds.toFixed(1)} s, less than the link allows (${linkSeconds.toFixed(1)} s)`);
    assert.ok(copySeconds < linkSeconds * 4, `copy took ${copySeconds.toFixed(1)} s, over 4x what the link allows (${linkSeconds.toFixed(1)} s)`);

    for (const p of phases) {
      for (const e of p.progress) {
        assert.ok(Number.isFinite(e.ev.eta) && e.ev.eta! >= 0, `${p.name}: eta ${e.ev.eta} is a finite number >= 0`);
        assert.ok(Number.isFinite(e.ev.rate) && e.ev.rate! >= 0, `${p.name}: rate ${e.ev.rate} is a finite number >= 0`);
      }
    }
    // the phases that read the source over the link: the ETA predicts the phase's end
    for (const p of phases.filter(x => /^copy p1|^verify/.test(x.name))) {
      const settled = p.progress.filter(e => e.at - p.start >= 2 && (e.ev.done ?? 0) < (e.ev.total ?? 0));
      assert.ok(p.name.startsWith('verify') || settled.length >= 2, `${p.name}: at least 2 progress events after its first 2 s\n${summary}`);
      for (const e of settled) {
        const remaining = p.end - e.at;
        const eta = e.ev.eta!;
        assert.ok(eta >= remaining * 0.5 - 3 && eta <= remaining * 2 + 3,
          `${p.name} at ${(e.at - p.start).toFixed(1)} s: ETA ${eta} s, but the phase ended ${remaining.toFixed(1)} s later\n${summary}`);
        if (p.name.startsWith('copy')) {
          assert.ok(e.ev.rate! > LINK_BYTES_PER_S / 10 && e.ev.rate! < LINK_BYTES_PER_S * 1.5,
            `${p.name}: rate ${(e.ev.rate! / 1e6).toFixed(1)} MB/s is not of the order of the link's ${LINK_BYTES_PER_S / 1e6} MB/s\n${summary}`);
        }
      }
    }

    // the bytes went over our veth (the source is read at least once in full), not over another interface
    const delta = (name: string) => ({ rx: after.get(name)!.rx - (before.get(name)?.rx ?? 0), tx: after.get(name)!.tx - (before.get(name)?.tx ?? 0) });
    const veth = delta(HOST_IF);
    assert.ok(veth.rx >= RANDOM_MIB * 2 ** 20, `the host end of the veth received ${(veth.rx / 2 ** 20).toFixed(0)} MiB, less than the ${RANDOM_MIB} MiB of data`);
    // copy and verify each read the used bytes once (~160 MiB); more than 3x that would mean repeated reads
    assert.ok(veth.rx < 3 * 2 * (RANDOM_MIB + 10) * 2 ** 20, `the host end of the veth received ${(veth.rx / 2 ** 20).toFixed(0)} MiB`);
    for (const name of after.keys()) {
      if (name === HOST_IF || name === 'lo') continue;
      const d = delta(name);
      assert.ok(d.rx + d.tx < veth.rx / 4, `${name} carried ${((d.rx + d.tx) / 2 ** 20).toFixed(0)} MiB while the veth carried ${(veth.rx / 2 ** 20).toFixed(0)} MiB`);
    }
    console.log(`veth ${HOST_IF}: rx ${(veth.rx / 2 ** 20).toFixed(0)} MiB, tx ${(veth.tx / 2 ** 20).toFixed(1)} MiB`);
  });
});
