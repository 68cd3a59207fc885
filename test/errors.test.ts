// Bad input and faults: each gets a typed error and exit code, the source is
// unchanged, and nothing is left behind (no target, no partial, no loop,
// mount or daemon — the guard checks the machine after the file).
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import { access, copyFile, readdir, readFile, rm, writeFile, mkdir, truncate, open } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { execa } from 'execa';
import { ferry, ferryProcess, guardMachine, sha256, tempDir, FERRY } from './support/harness.js';
import { makeSmallDisk } from './support/small-disk.js';
import { leftBehind, machineState } from './support/guard.js';

guardMachine();
const dir = await tempDir();

const exists = (p: string) => access(p).then(() => true, () => false);

describe('convert refuses bad input cleanly', () => {
  let disk: string, diskSum: string;

  before(async () => {
    disk = join(dir, 'small.raw');
    await makeSmallDisk(disk);
    diskSum = await sha256(disk);
  });

  // every refusal below used this source: it must be byte-for-byte what it was
  after(async () => { assert.equal(await sha256(disk), diskSum, 'source unchanged after every refusal'); });

  /** the target dir holds nothing but what the test put there */
  const assertNoTargetLeft = async (d: string, allowed: string[] = []) => {
    const left = (await readdir(d)).filter(n => !allowed.includes(n));
    assert.deepEqual(left, [], `left in ${d}: ${left.join(', ')}`);
  };

  it('missing source: SOURCE_MISSING, exit 3', async () => {
    const out = join(dir, 'out1');
    await mkdir(out);
    const r = await ferry(['convert', join(dir, 'nope.qcow2'), join(out, 't.qcow2')]);
    assert.equal(r.exitCode, 3);
    assert.match(r.stderr, /SOURCE_MISSING.*nope\.qcow2/);
    await assertNoTargetLeft(out);
  });

  it('a text file is not a disk image: NOT_A_DISK_IMAGE, exit 3', async () => {
    const out = join(dir, 'out2');
    await mkdir(out);
    const txt = join(dir, 'notes.txt');
    await writeFile(txt, 'these are not the sectors you are looking for\n'.repeat(100));
    const before = await sha256(txt);
    const r = await ferry(['convert', txt, join(out, 't.qcow2')]);
    assert.equal(r.exitCode, 3);
    assert.match(r.stderr, /NOT_A_DISK_IMAGE/);
    assert.equal(await sha256(txt), before);
    await assertNoTargetLeft(out);
  });

  it('a truncated qcow2 and one with a bad header: CORRUPT_IMAGE, exit 3', async () => {
    const out = join(dir, 'out3');
    await mkdir(out);
    const q = join(dir, 'good.qcow2');
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', disk, q]);
    const truncated = join(dir, 'truncated.qcow2');
    await copyFile(q, truncated);
    await truncate(truncated, 300);
    const badHeader = join(dir, 'badheader.qcow2');
    await copyFile(q, badHeader);
    const fh = await open(badHeader, 'r+');
    await fh.write(Buffer.alloc(64, 0xff), 0, 64, 8); // version, backing offset, cluster bits … all garbage
    await fh.close();
    for (const bad of [truncated, badHeader]) {
      const before = await sha256(bad);
      const r = await ferry(['convert', bad, join(out, 't.qcow2')]);
      assert.equal(r.exitCode, 3, r.stderr);
      assert.match(r.stderr, /CORRUPT_IMAGE|NOT_A_DISK_IMAGE/);
      assert.equal(await sha256(bad), before);
      await assertNoTargetLeft(out);
    }
  });

  it('existing target without --force: TARGET_EXISTS, exit 4, target untouched; --force replaces it', async () => {
    const out = join(dir, 'out4');
    await mkdir(out);
    const t = join(out, 't.qcow2');
    await writeFile(t, 'precious');
    const r = await ferry(['convert', disk, t, '--no-progress']);
    assert.equal(r.exitCode, 4);
    assert.match(r.stderr, /TARGET_EXISTS.*--force/);
    assert.equal(await sha256(t), await sha256Of('precious'));
    const f = await ferry(['convert', disk, t, '--force', '--no-progress']);
    assert.equal(f.exitCode, 0, f.stderr);
    const info = await execa('qemu-img', ['info', '--output=json', t]);
    assert.equal(JSON.parse(info.stdout).format, 'qcow2');
    await assertNoTargetLeft(out, ['t.qcow2']);
    assert.equal(await sha256(disk), diskSum);
  });

  it('read-only target directory: TARGET_NOT_WRITABLE, exit 4', async () => {
    const ro = join(dir, 'ro');
    await mkdir(ro);
    await execa('mount', ['-t', 'tmpfs', '-o', 'ro,size=1M', 'tmpfs', ro]);
    try {
      const r = await ferry(['convert', disk, join(ro, 't.qcow2')]);
      assert.equal(r.exitCode, 4);
      assert.match(r.stderr, /TARGET_NOT_WRITABLE/);
    } finally {
      await execa('umount', [ro]);
    }
  });

  it('target directory too small for the estimated output: TARGET_NO_SPACE before writing, exit 4', async () => {
    const big = join(dir, 'data.raw');
    await makeSmallDisk(big, { randomMiB: 40 });
    const bigSum = await sha256(big);
    const small = join(dir, 'small-fs');
    await mkdir(small);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=16M', 'tmpfs', small]);
    try {
      const r = await ferry(['convert', big, join(small, 't.qcow2')]);
      assert.equal(r.exitCode, 4, r.stderr);
      assert.match(r.stderr, /TARGET_NO_SPACE/);
      await assertNoTargetLeft(small);
      assert.equal(await sha256(big), bigSum);
    } finally {
      await execa('umount', [small]);
    }
  });

  it('not root: NOT_ROOT, exit 8', async () => {
    const out = join(dir, 'out5');
    await mkdir(out);
    // user nobody, allowed only to read anything (CAP_DAC_READ_SEARCH): a checkout under a 0700 directory such as /root stays readable
    const asNobody = ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=+dac_read_search', '--ambient-caps=+dac_read_search'];
    const r = await execa('setpriv', [...asNobody, 'node', FERRY, 'convert', disk, join(out, 't.qcow2')], { reject: false });
    assert.equal(r.exitCode, 8);
    assert.match(String(r.stderr), /NOT_ROOT/);
    await assertNoTargetLeft(out);
  });

  it('unsupported --format: UNSUPPORTED_FORMAT, exit 2', async () => {
    const out = join(dir, 'out6');
    await mkdir(out);
    const r = await ferry(['convert', disk, join(out, 't.img'), '--format', 'vhd']);
    assert.equal(r.exitCode, 2);
    assert.match(r.stderr, /UNSUPPORTED_FORMAT.*qcow2/);
    await assertNoTargetLeft(out);
  });

  it('data that cannot fit --size: DOES_NOT_FIT with the bytes needed, exit 5, nothing written', async () => {
    const out = join(dir, 'out7');
    await mkdir(out);
    const r = await ferry(['convert', disk, join(out, 't.qcow2'), '--size', '20M', '--json']);
    assert.equal(r.exitCode, 5);
    const err = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.equal(err.code, 'DOES_NOT_FIT');
    assert.ok(err.needed > 20 * 2 ** 20, 'says how many bytes are needed');
    await assertNoTargetLeft(out);
    assert.equal(await sha256(disk), diskSum);
  });

  it('--inventory: a bad file is INVENTORY_INVALID (exit 2) before anything is written; a good one is kept beside the target', async () => {
    const out = join(dir, 'out-inv');
    await mkdir(out);
    const t = join(out, 't.qcow2');
    const bad: [string, string][] = [
      ['missing', ''], ['notjson.json', '{"ferryInventory": 1,'], ['array.json', '[1]'],
      ['noschema.json', '{"hostname": "db1"}'], ['schema2.json', '{"ferryInventory": 2}'],
    ];
    for (const [name, text] of bad) {
      const f = join(dir, name);
      if (text) await writeFile(f, text);
      const r = await ferry(['convert', disk, t, '--inventory', f, '--no-progress']);
      assert.equal(r.exitCode, 2, `${name}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^ferry: INVENTORY_INVALID: inventory ${f.replace(/[/.]/g, '\\$&')} `, 'm'));
      await assertNoTargetLeft(out);
    }
    const inv = join(dir, 'inventory.json');
    const text = JSON.stringify({ ferryInventory: 1, hostname: 'db1', nics: [{ name: 'eth0', mac: '52:54:00:12:34:56' }] });
    await writeFile(inv, text);
    const r = await ferry(['convert', disk, t, '--inventory', inv, '--no-verify', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout.trim().split('\n').at(-1)!).inventory, `${t}.inventory.json`);
    assert.equal(await readFile(`${t}.inventory.json`, 'utf8'), text);
    await assertNoTargetLeft(out, ['t.qcow2', 't.qcow2.inventory.json']);
    // replaced without an inventory: the old one no longer describes the target
    const f = await ferry(['convert', disk, t, '--force', '--no-verify', '--no-progress']);
    assert.equal(f.exitCode, 0, f.stderr);
    await assertNoTargetLeft(out, ['t.qcow2']);
  });

  // SIGHUP is a closed terminal or a dropped SSH session; it and SIGQUIT clean up like the others
  const stops = [['SIGINT', 'copy', 130], ['SIGTERM', 'copy', 143], ['SIGHUP', 'copy', 129], ['SIGHUP', 'verify', 129], ['SIGQUIT', 'copy', 131]] as const;
  for (const [signal, phase, exit] of stops) {
    it(`${signal} during the ${phase}: INTERRUPTED, exit ${exit}, partial target removed, nothing attached, source unchanged`, async () => {
      const src = join(dir, `busy-${signal}-${phase}.raw`);
      await makeSmallDisk(src, { sizeMiB: 400, randomMiB: 300 });
      const before = await sha256(src);
      const out = join(dir, `out-${signal}-${phase}`);
      await mkdir(out);
      // the file-level rebuild: its copy lasts long enough for a signal to land in it (a used-block copy of this disk is over in well under 300 ms)
      const p = ferryProcess(['convert', src, join(out, 't.qcow2'), '--json', '--mode', 'rebuild']);
      let sent = false;
      p.stdout!.on('data', (chunk: Buffer) => {
        if (!sent && new RegExp(`"event":"phase","phase":"${phase}`).test(chunk.toString())) {
          sent = true;
          setTimeout(() => p.kill(signal), 300);
        }
      });
      const r = await p;
      assert.ok(sent, `the ${phase} phase started`);
      assert.equal(r.exitCode, exit, String(r.stderr));
      assert.match(String(r.stderr), /INTERRUPTED/);
      await assertNoTargetLeft(out);
      assert.equal(await sha256(src), before);
      await rm(src);
    });
  }
});

describe('a killed run leaves nothing for long', () => {
  // a private journal directory: other ferry processes on this machine are not this test's business
  const env = { FERRY_RUN_DIR: join(dir, 'runs') };
  // wrapped: an async function returning the process itself would wait for it to end
  const startCopy = async (src: string, out: string): Promise<{ p: ReturnType<typeof ferryProcess> }> => {
    const p = ferryProcess(['convert', src, out, '--json', '--mode', 'rebuild'], { env });
    await new Promise<void>((resolve, reject) => {
      p.stdout!.on('data', (chunk: Buffer) => { if (/"event":"phase","phase":"copy/.test(chunk.toString())) setTimeout(resolve, 300); });
      p.then(r => reject(new Error(`convert ended before its copy: ${r.stderr}`)), reject);
    });
    return { p };
  };
  const loopsOn = async (file: string) => String((await execa('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE'])).stdout).split('\n').filter(l => l.includes(file));

  it('SIGKILL mid-copy: cleanup --dry-run lists what it left, the next command removes it all; a live run is never touched', async () => {
    const src = join(dir, 'killed.raw');
    await makeSmallDisk(src, { sizeMiB: 400, randomMiB: 300 });
    const before = await sha256(src);
    const out = join(dir, 'out-killed');
    await mkdir(out);
    const partial = join(out, '.t.qcow2.ferry-partial');
    const { p: killed } = await startCopy(src, join(out, 't.qcow2'));
    killed.kill('SIGKILL');
    await killed;
    // what SIGKILL leaves: nothing in-process could clean up
    assert.ok(existsSync(partial), 'the partial target is still there after SIGKILL');
    const daemons = String((await execa('pgrep', ['-a', '-f', `qemu-storage-daemon.*${out}`], { reject: false })).stdout);
    assert.match(daemons, /qemu-storage-daemon/, 'the target\'s qemu-storage-daemon outlived its run');

    const dry = await ferry(['cleanup', '--dry-run', '--json'], { env });
    assert.equal(dry.exitCode, 0, dry.stderr);
    const listed = JSON.parse(dry.stdout).runs as { runner: string; held: { kind: string; id: string }[] }[];
    assert.equal(listed.length, 1, dry.stdout);
    const kinds = new Set(listed[0].held.map(h => h.kind));
    for (const k of ['file', 'daemon']) assert.ok(kinds.has(k), `${k} in ${dry.stdout}`);
    assert.ok(listed[0].held.some(h => h.id === partial), `the partial target is listed: ${dry.stdout}`);
    assert.ok(existsSync(partial), 'a dry run removes nothing');

    // the next command, a conversion, removes it all before it starts; `ferry cleanup` during that live run leaves it alone
    const src2 = join(dir, 'live.raw');
    await makeSmallDisk(src2, { sizeMiB: 400, randomMiB: 300 });
    const out2 = join(dir, 'out-live');
    await mkdir(out2);
    const { p: live } = await startCopy(src2, join(out2, 't.qcow2'));
    assert.equal(existsSync(partial), false, 'the partial target was removed');
    assert.equal(String((await execa('pgrep', ['-a', '-f', `qemu-storage-daemon.*${out}`], { reject: false })).stdout), '', 'its daemon is gone');
    assert.deepEqual(await loopsOn(src), [], 'no loop device on the killed run\'s source');
    const during = await ferry(['cleanup'], { env });
    assert.equal(during.stdout.trim(), 'nothing to clean up', 'a live run is not a killed one');
    const lr = await live;
    assert.equal(lr.exitCode, 0, String(lr.stderr));
    assert.match(String(lr.stderr), /cleaned up after a killed run \(pid \d+\): \d+ resource/);
    assert.deepEqual((await readdir(out2)), ['t.qcow2'], 'the live run finished its target');
    assert.equal((await ferry(['cleanup', '--dry-run'], { env })).stdout.trim(), 'nothing to clean up');
    assert.equal(await sha256(src), before, 'the killed run\'s source is unchanged');
    await rm(src);
    await rm(src2);
  });

  it('a killed run\'s work dir: what is mounted, attached or running inside it goes too, even where the kill came before its record', async () => {
    // a run killed between a mount and its record: the journal names only its work dir
    const work = join(dir, 'ferry-dead-work');
    await mkdir(work);
    const fsFile = join(work, 'fs.raw');
    await execa('truncate', ['-s', '64M', fsFile]);
    await execa('mkfs.ext4', ['-q', fsFile]);
    const loop = String((await execa('losetup', ['-f', '--show', fsFile])).stdout).trim();
    await mkdir(join(work, 'fs1'));
    await execa('mount', [loop, join(work, 'fs1')]);
    await writeFile(join(work, 'img.img'), '');
    await execa('qemu-storage-daemon', ['--blockdev', JSON.stringify({ driver: 'file', 'node-name': 'disk', filename: fsFile, 'read-only': true }),
      '--export', JSON.stringify({ type: 'fuse', id: 'e', 'node-name': 'disk', mountpoint: join(work, 'img.img'), writable: false }),
      '--pidfile', join(work, 'img.pid'), '--daemonize']);
    const qsd = Number((await readFile(join(work, 'img.pid'), 'utf8')).trim());
    const runs = env.FERRY_RUN_DIR;
    await mkdir(runs, { recursive: true });
    // a journal of a run that is not alive (no such pid), holding only the work dir
    await writeFile(join(runs, 'dead.jsonl'), `${JSON.stringify({ runner: `${hostname()}:999999999:1` })}\n${JSON.stringify({ op: 'hold', r: { kind: 'file', id: work } })}\n`);

    try {
      const r = await ferry(['cleanup', '--json'], { env });
      assert.equal(r.exitCode, 0, r.stdout + r.stderr);
      const mounts = await readFile('/proc/self/mounts', 'utf8');
      assert.ok(!mounts.includes(work), `nothing mounted inside the dead run's work dir:\n${mounts.split('\n').filter(l => l.includes(work)).join('\n')}`);
      assert.equal(String((await execa('losetup', ['-n', '-O', 'BACK-FILE', loop], { reject: false })).stdout).trim(), '', `${loop} detached`);
      // gone, or a zombie waiting for init to reap it (a daemonized qsd's parent is init)
      const state = /^State:\s+(\S)/m.exec(await readFile(`/proc/${qsd}/status`, 'utf8').catch(() => ''))?.[1];
      assert.ok(state === undefined || state === 'Z', `the daemon exporting from inside it is stopped (state ${state})`);
      assert.equal(existsSync(work), false, 'the work dir is removed');
    } finally {
      // what cleanup did not take, the test takes back itself
      await execa('umount', [join(work, 'fs1')], { reject: false });
      await execa('losetup', ['-d', loop], { reject: false });
      try { process.kill(qsd, 'SIGKILL'); } catch { /* gone */ }
      await execa('fusermount3', ['-u', '-z', join(work, 'img.img')], { reject: false });
    }
  });
});

describe('a stop signal at any moment', () => {
  // A device, mount or daemon acquired in the instant a signal lands (the tool done, its owner not yet
  // told) was left behind: a SIGHUP as verify's export started left its qemu-storage-daemon, FUSE
  // mount and a loop device in a CI run. Signals spread over a whole conversion hit such instants.
  it('SIGINT at ten moments across a conversion: each run ends INTERRUPTED (or done, when it finished first), with nothing left and the source unchanged', async () => {
    const src = join(dir, 'sweep.raw');
    await makeSmallDisk(src);
    const sum = await sha256(src);
    const t0 = performance.now();
    const whole = await ferry(['convert', src, join(dir, 'sweep-whole.qcow2'), '--json']);
    assert.equal(whole.exitCode, 0, whole.stderr);
    const wholeMs = performance.now() - t0;
    await rm(join(dir, 'sweep-whole.qcow2'));
    const start = await machineState();
    const stoppedAt: number[] = [];
    for (let i = 0; i < 10; i++) {
      const delay = Math.round(wholeMs * (i + 1) / 11);
      const out = join(dir, `sweep-${i}`);
      await mkdir(out);
      const p = ferryProcess(['convert', src, join(out, 't.qcow2'), '--json']);
      const timer = setTimeout(() => p.kill('SIGINT'), delay);
      const r = await p;
      clearTimeout(timer);
      if (r.exitCode === 0) continue;
      // before node installed its handlers the signal simply ends the process: nothing was acquired yet
      if (r.signal !== 'SIGINT') {
        assert.equal(r.exitCode, 130, `SIGINT at ${delay} ms: ${r.stderr}`);
        assert.match(String(r.stderr), /INTERRUPTED/);
      }
      assert.deepEqual(await readdir(out), [], `SIGINT at ${delay} ms left a target`);
      assert.deepEqual(leftBehind(start, await machineState()), [], `SIGINT at ${delay} ms left these`);
      stoppedAt.push(delay);
    }
    assert.ok(stoppedAt.length >= 5, `at least half the runs were stopped (at ${stoppedAt.join(', ')} ms of ${Math.round(wholeMs)})`);
    assert.equal(await sha256(src), sum, 'the source is unchanged');
  });
});

async function sha256Of(text: string): Promise<string> {
  const { createHash } = await import('node:crypto');
  return createHash('sha256').update(text).digest('hex');
}
