// Seeded, reproducible fuzzing of what Ferry reads from a disk before it
// trusts it: MBR and GPT tables, ext4, FAT, xfs and btrfs superblocks, the NTFS
// boot sector, qcow2, vmdk and vhdx headers, the P2V inventory JSON, and
// the job service's HTTP API (a real `ferry serve`: every answer 4xx with a
// typed error body, never 5xx, and the service still answers after). Each mutated input goes to `ferry info`, and some to
// `ferry convert`; every case must end within a bound with exit 0 or a typed
// error (`ferry: CODE: …`) — never an internal error, a hang, a changed input
// or anything left attached. CI runs a fixed seed and a few cases per kind;
// FERRY_FUZZ_ITERATIONS (cases per kind) and FERRY_FUZZ_SEED run longer or other campaigns.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { FERRY, guardMachine, sha256, tempDir } from './support/harness.js';
import { Api, startServe } from './support/api-client.js';
import { makeSmallDisk } from './support/small-disk.js';
import { buildPhonyWindows } from './support/fixtures.js';

guardMachine();
const dir = await tempDir('ferryfuzz-');
const ITERATIONS = Number(process.env.FERRY_FUZZ_ITERATIONS ?? 3);
const SEED = Number(process.env.FERRY_FUZZ_SEED ?? 20261203);
const BOUND_MS = 90_000;

/** mulberry32: small, seeded, the same sequence on every machine */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Case { kind: string; n: number; file: string; format: string; what: string }

/** Overwrite `count` bytes at random offsets within [start, start+len) with random values, or with edge values. */
async function mutate(file: string, start: number, len: number, count: number, rnd: () => number): Promise<string> {
  const fh = await open(file, 'r+');
  const done: string[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const at = start + Math.floor(rnd() * len);
      const pick = rnd();
      const v = pick < 0.25 ? 0x00 : pick < 0.5 ? 0xff : pick < 0.6 ? 0x80 : Math.floor(rnd() * 256);
      await fh.write(Buffer.from([v]), 0, 1, at);
      done.push(`${at}=${v.toString(16)}`);
    }
  } finally { await fh.close(); }
  return done.join(',');
}

/** A small GPT disk: ext4 and FAT partitions. */
async function makeGptDisk(path: string): Promise<void> {
  await execa('truncate', ['-s', '96M', path]);
  await execa('sfdisk', ['-q', path], { input: 'label: gpt\nstart=2048, size=122880, type=L, name=root\nstart=124928, size=65536, type=U, name=esp\n' });
  const attach = async (start: number, size: number) => String((await execa('losetup', ['-f', '--show', '-o', String(start * 512), '--sizelimit', String(size * 512), path])).stdout).trim();
  const a = await attach(2048, 122880);
  try { await execa('mkfs.ext4', ['-q', '-L', 'fuzzroot', a]); } finally { await execa('losetup', ['-d', a]); }
  const b = await attach(124928, 65536);
  try { await execa('mkfs.vfat', ['-n', 'FUZZESP', b]); } finally { await execa('losetup', ['-d', b]); }
}

const typed = (stderr: string) => /^ferry: [A-Z][A-Z0-9_]+: \S/m.test(stderr) && !/internal error/.test(stderr);

/** A raw disk with one MBR partition (1 MiB in, to the end) holding a fresh, empty file system made by `mkfs ARGS LOOP`. */
async function makeFsDisk(path: string, sizeMiB: number, mkfs: string[]): Promise<void> {
  await execa('truncate', ['-s', `${sizeMiB}M`, path]);
  await execa('sfdisk', ['-q', path], { input: 'label: dos\nstart=2048, type=83\n' });
  const loop = String((await execa('losetup', ['-f', '--show', '-o', String(2048 * 512), path])).stdout).trim();
  try { await execa(mkfs[0], [...mkfs.slice(1), loop]); } finally { await execa('losetup', ['-d', loop]); }
}

async function runBounded(args: string[]): Promise<{ exitCode: number; stderr: string; timedOut: boolean }> {
  const r = await execa('node', [FERRY, ...args], { reject: false, stdin: 'ignore', timeout: BOUND_MS, killSignal: 'SIGKILL' });
  return { exitCode: r.exitCode ?? -1, stderr: String(r.stderr), timedOut: !!r.timedOut };
}

async function loopsOn(file: string): Promise<string> {
  return String((await execa('losetup', ['-j', file], { reject: false })).stdout).trim();
}

describe(`fuzzed inputs end in exit 0 or a typed error (seed ${SEED}, ${ITERATIONS} per kind)`, () => {
  const mbr = join(dir, 'mbr.raw'), gpt = join(dir, 'gpt.raw'), qcow2 = join(dir, 'base.qcow2');
  const xfs = join(dir, 'xfs.raw'), btrfs = join(dir, 'btrfs.raw'), ntfs = join(dir, 'ntfs.raw'), vmdk = join(dir, 'base.vmdk'), vhdx = join(dir, 'base.vhdx');
  const P = 2048 * 512; // where makeFsDisk's partition starts
  let windows = '';
  /** where the phony Windows 2003 disk's registry hives start (their "regf" base blocks) */
  let hives: number[] = [];
  const tally = { cases: 0, ok: 0, typed: new Map<string, number>() };

  before(async () => {
    await makeSmallDisk(mbr, { sizeMiB: 80 });
    await makeGptDisk(gpt);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', mbr, qcow2]);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vmdk', mbr, vmdk]);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', mbr, vhdx]);
    // xfs and btrfs refuse smaller file systems
    await makeFsDisk(xfs, 320, ['mkfs.xfs', '-q', '-L', 'fuzzxfs']);
    await makeFsDisk(btrfs, 140, ['mkfs.btrfs', '-q', '-L', 'fuzzbtrfs']);
    await makeFsDisk(ntfs, 24, ['mkntfs', '-Q', '-F', '-q', '-p', '2048', '-L', 'FUZZNTFS']);
    windows = (await buildPhonyWindows()).win2003.image;
    const image = await readFile(windows);
    for (let at = 0; at < image.length; at += 512) if (image.toString('latin1', at, at + 4) === 'regf') hives.push(at);
    assert.ok(hives.length >= 2, `the phony Windows disk holds hives: ${hives.join(', ')}`);
  });

  after(async t => {
    const codes = [...tally.typed].map(([c, n]) => `${c} ${n}`).join(', ');
    process.stdout.write(`# fuzz: ${tally.cases} cases, ${tally.ok} exit 0, typed errors: ${codes || 'none'}\n`);
    void t;
  });

  const kinds: {
    kind: string; base: () => string; format: string; region: (rnd: () => number) => [number, number, number];
    /** the commands run on case n (default: info, and convert on odd cases) */
    runs?: (file: string, n: number) => string[][];
  }[] = [
    // the four MBR partition entries and the signature
    { kind: 'mbr', base: () => mbr, format: 'raw', region: () => [446, 66, 3] },
    // the primary GPT header and its first entries (the backup stays: a reader may fall back to it)
    { kind: 'gpt', base: () => gpt, format: 'raw', region: rnd => (rnd() < 0.5 ? [512, 92, 2] : [1024, 256, 3]) },
    // ext4's superblock (partition 1 starts at 1 MiB; the superblock 1 KiB into it)
    { kind: 'ext4-superblock', base: () => gpt, format: 'raw', region: () => [2048 * 512 + 1024, 256, 2] },
    // the FAT boot sector of partition 2
    { kind: 'fat-bootsector', base: () => gpt, format: 'raw', region: () => [124928 * 512, 90, 2] },
    // the qcow2 header: magic, version, backing file, cluster bits, size, L1 table
    { kind: 'qcow2-header', base: () => qcow2, format: 'qcow2', region: () => [0, 104, 1] },
    // xfs's superblock (magic, block size, counts, uuid, log, feature words) at the partition's start
    { kind: 'xfs-superblock', base: () => xfs, format: 'raw', region: () => [P, 264, 2] },
    // btrfs's superblock 64 KiB in: past the checksum (a reader that checks it refuses all; one that does not, reads the fields)
    { kind: 'btrfs-superblock', base: () => btrfs, format: 'raw', region: rnd => (rnd() < 0.5 ? [P + 65536 + 32, 200, 2] : [P + 65536, 32, 1]) },
    // the NTFS boot sector: OEM id, BPB (sector and cluster sizes, MFT location, record size), serial
    { kind: 'ntfs-bootsector', base: () => ntfs, format: 'raw', region: () => [P, 84, 2] },
    // the vmdk sparse header (magic, version, capacity, grain size, descriptor and grain directory offsets) or its embedded descriptor
    { kind: 'vmdk-header', base: () => vmdk, format: 'vmdk', region: rnd => (rnd() < 0.6 ? [0, 77, 1] : [512, 400, 3]) },
    // the vhdx file identifier, the first header (the second may stand in) or the first region table
    { kind: 'vhdx-header', base: () => vhdx, format: 'vhdx', region: rnd => [[0, 8, 1], [65536, 80, 2], [196608, 64, 2]][Math.floor(rnd() * 3)] as [number, number, number] },
    // a registry hive of the phony Windows 2003 disk, read by inspect: its base block (root cell, sizes, checksum) or its first bin's cells
    {
      kind: 'windows-hive', base: () => windows, format: 'raw', runs: file => [['inspect', file, '--json']],
      region: rnd => { const at = hives[Math.floor(rnd() * hives.length)]; return rnd() < 0.4 ? [at, 512, 2] : [at + 4096, 1024, 4]; },
    },
  ];

  for (const k of kinds) {
    it(`${k.kind}: ${k.runs ? 'inspect' : 'info (and every other case convert)'} on mutated inputs`, async t => {
      const rnd = prng(SEED ^ [...k.kind].reduce((h, c) => Math.imul(h, 31) + c.charCodeAt(0), 7));
      for (let n = 0; n < ITERATIONS; n++) {
        const c: Case = { kind: k.kind, n, file: join(dir, `${k.kind}-${n}.${k.format}`), format: k.format, what: '' };
        await copyFile(k.base(), c.file);
        const [start, len, count] = k.region(rnd);
        c.what = await mutate(c.file, start, len, count, rnd);
        const sum = await sha256(c.file);
        const label = `${k.kind} #${n} (seed ${SEED}, bytes ${c.what})`;
        const runs: string[][] = k.runs?.(c.file, n) ?? [['info', c.file, '--json'], ...(n % 2 === 1 ? [['convert', c.file, join(dir, `out-${k.kind}-${n}.qcow2`), '--no-progress']] : [])];
        for (const args of runs) {
          const t0 = Date.now();
          const r = await runBounded(args);
          t.diagnostic(`${label}: ${args[0]} ${r.exitCode === 0 ? 'exit 0' : /^ferry: ([A-Z0-9_]+):.*$/m.exec(r.stderr)?.[0].slice(0, 300) ?? `exit ${r.exitCode}`} (${Date.now() - t0} ms)`);
          tally.cases++;
          assert.equal(r.timedOut, false, `${label}: ferry ${args[0]} did not end within ${BOUND_MS / 1000} s`);
          if (r.exitCode === 0) tally.ok++;
          else {
            assert.ok(typed(r.stderr), `${label}: ferry ${args[0]} exit ${r.exitCode} without a typed error:\n${r.stderr.slice(-2000)}`);
            assert.notEqual(r.exitCode, 70, `${label}: internal error`);
            const code = /^ferry: ([A-Z0-9_]+):/m.exec(r.stderr)![1];
            tally.typed.set(code, (tally.typed.get(code) ?? 0) + 1);
          }
          assert.equal(await sha256(c.file), sum, `${label}: ferry ${args[0]} changed its input`);
          assert.equal(await loopsOn(c.file), '', `${label}: a loop device is left on the input`);
        }
        await rm(c.file);
        await rm(join(dir, `out-${k.kind}-${n}.qcow2`), { force: true });
      }
    });
  }

  it('fixed: an MBR slot of size 0 with a stray byte is no partition (VERIFY_FAILED "partition 3: missing in target" before); a partition past the disk\'s end is PARTITION_OUTSIDE_DISK (exit 3)', async () => {
    // mbr #1 of seed 20261203: 477=eb makes partition 2 end far past the disk, 480=3a fills an unused slot's CHS
    const write = async (file: string, bytes: [number, number][]) => {
      await copyFile(mbr, file);
      const fh = await open(file, 'r+');
      try { for (const [at, v] of bytes) await fh.write(Buffer.from([v]), 0, 1, at); } finally { await fh.close(); }
      return sha256(file);
    };
    const stray = join(dir, 'mbr-stray.raw');
    const straySum = await write(stray, [[480, 0x3a]]);
    const out = join(dir, 'mbr-stray.qcow2');
    const r = await runBounded(['convert', stray, out, '--no-progress']);
    assert.equal(r.exitCode, 0, `a stray byte in an unused slot converts and verifies:\n${r.stderr}`);
    // judged by sfdisk, not by Ferry: the target has the source's two partitions only
    const parts = (file: string) => execa('sfdisk', ['--json', file]).then(x => (JSON.parse(x.stdout) as { partitiontable: { partitions: { size: number; type: string }[] } }).partitiontable.partitions.filter(p => p.size > 0).map(p => p.type));
    await execa('qemu-img', ['convert', '-O', 'raw', out, `${out}.raw`]);
    assert.deepEqual(await parts(`${out}.raw`), await parts(stray));
    assert.equal(await sha256(stray), straySum);
    await rm(`${out}.raw`);
    await rm(out);

    const past = join(dir, 'mbr-past.raw');
    const pastSum = await write(past, [[477, 0xeb], [480, 0x3a], [447, 0x80]]);
    for (const args of [['info', past, '--json'], ['convert', past, join(dir, 'mbr-past.qcow2'), '--no-progress']]) {
      const p = await runBounded(args);
      assert.equal(p.exitCode, 3, `${args[0]}: exit 3:\n${p.stderr}`);
      assert.match(p.stderr, /^ferry: PARTITION_OUTSIDE_DISK: partition 2 ends at byte \d+, beyond the end of the disk \(83886080 bytes\)/m);
    }
    assert.equal(existsSync(join(dir, 'mbr-past.qcow2')), false, 'no target');
    assert.equal(await sha256(past), pastSum);
    assert.equal(await loopsOn(past), '');
  });

  it('fixed: ext4, xfs and btrfs that their tools or the kernel refuse to read are FS_DAMAGED (exit 3) naming the partition and the checker, not TOOL_FAILED', async () => {
    // the bytes the seeded cases changed when they found it (TOOL_FAILED from dumpe2fs or mount before)
    const cases: [string, string, [number, number][], RegExp][] = [
      ['ext4', gpt, [[1049675, 0xff], [1049631, 0]], /e2fsck -f/],
      ['xfs', xfs, [[1048739, 0x9e], [1048805, 0]], /xfs_repair/],
      ['btrfs', btrfs, [[1114168, 0x80], [1114297, 0]], /btrfs check/],
    ];
    for (const [type, base, bytes, checker] of cases) {
      const file = join(dir, `damaged-${type}.raw`);
      await copyFile(base, file);
      const fh = await open(file, 'r+');
      try { for (const [at, v] of bytes) await fh.write(Buffer.from([v]), 0, 1, at); } finally { await fh.close(); }
      const sum = await sha256(file);
      const r = await runBounded(['info', file, '--json']);
      assert.equal(r.exitCode, 3, `${type}: exit 3:\n${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^ferry: FS_DAMAGED: the ${type} file system on the partition at byte ${2048 * 512} of the disk cannot be read: `, 'm'), type);
      assert.match(r.stderr, checker, `${type}: names its checker`);
      assert.equal(await sha256(file), sum, `${type}: the input is unchanged`);
      assert.equal(await loopsOn(file), '', `${type}: no loop left on it`);
      await rm(file);
    }
  });

  it('inventory JSON: convert --inventory refuses what is not an inventory with a typed error, before any target exists', async () => {
    const good = { ferryInventory: 1, system: { uuid: '7f1d2c3b-4a59-4e68-9d7c-0b1a2c3d4e5f', serial: 'S1' }, firmware: { type: 'BIOS' }, cpu: { architecture: 'x86_64' }, disks: [], nics: [] };
    const rnd = prng(SEED);
    const junk = () => [null, 0, -1, 2 ** 53, '', 'x'.repeat(70_000), [], {}, true, '\u0000\u202e'][Math.floor(rnd() * 10)];
    // fixed cases first: each bug the fuzzing found stays here (a list given as a string crashed convert with exit 70)
    const variants: unknown[] = ['not json at all', '[]', 'null', '{"ferryInventory": 2}', '{"ferryInventory":1,"nics":"x"}', '{"ferryInventory":1,"storageControllers":[7]}'];
    for (let n = 0; n < ITERATIONS * 2; n++) {
      const inv = JSON.parse(JSON.stringify(good)) as Record<string, unknown>;
      const keys = Object.keys(inv);
      inv[keys[Math.floor(rnd() * keys.length)]] = junk();
      variants.push(JSON.stringify(inv));
    }
    const src = join(dir, 'inv-src.raw');
    await copyFile(mbr, src);
    const sum = await sha256(src);
    for (const [n, v] of variants.entries()) {
      const f = join(dir, `inv-${n}.json`);
      await writeFile(f, typeof v === 'string' ? v : JSON.stringify(v));
      const out = join(dir, `inv-out-${n}.qcow2`);
      const r = await runBounded(['convert', src, out, '--inventory', f, '--profile', 'physical', '--no-progress']);
      tally.cases++;
      assert.equal(r.timedOut, false, `inventory #${n} did not end`);
      if (r.exitCode === 0) { tally.ok++; await rm(out); continue; }
      assert.equal(existsSync(out), false, `inventory #${n}: no target after a refusal`);
      assert.ok(typed(r.stderr), `inventory #${n} (${(await readFile(f, 'utf8')).slice(0, 200)}): exit ${r.exitCode} without a typed error:\n${r.stderr.slice(-1500)}`);
      const code = /^ferry: ([A-Z0-9_]+):/m.exec(r.stderr)![1];
      tally.typed.set(code, (tally.typed.get(code) ?? 0) + 1);
    }
    assert.equal(await sha256(src), sum, 'the source is unchanged');
  });
  it('HTTP API: malformed JSON and job specs to a real ferry serve get a 4xx with a typed error body, never a 5xx; it still answers after', async () => {
    const home = join(dir, 'api-home');
    const serve = await startServe(['--listen', '127.0.0.1:0', '--log-level', 'silent'], { FERRY_HOME: home });
    try {
      const api = new Api(serve.base, (await readFile(serve.tokenPath, 'utf8')).trim());
      const enrol = (await readFile(join(home, 'enrol-token'), 'utf8')).trim();
      const src = join(dir, 'api-src.raw');
      await copyFile(mbr, src);
      const sum = await sha256(src);
      const rnd = prng(SEED ^ 0x5eed);
      // a spec the service would take, but whose target is in a dir that does not exist: mutated copies may be accepted (201), not run far
      const good = { source: src, target: join(dir, 'no-such-dir', 'out.qcow2'), format: 'qcow2', profile: 'kvm-virtio', options: { mode: 'copy' } };
      const junk = () => [null, 0, -1, 1e308, 2 ** 53, '', 'x'.repeat(70_000), [], {}, true, '\u0000\u202e', '../../etc/passwd', { $ref: '#' }][Math.floor(rnd() * 13)];
      // fixed cases first (each bug found stays here), then seeded ones
      const bodies: { path: string; body: string; type?: string; auth?: string }[] = [
        { path: '/jobs', body: '{' }, { path: '/jobs', body: '' }, { path: '/jobs', body: 'null' }, { path: '/jobs', body: '[]' }, { path: '/jobs', body: '"x"' },
        { path: '/jobs', body: '{"source": 1}' }, { path: '/jobs', body: '{"source": "/x", "target": "/y", "options": "copy"}' },
        { path: '/jobs', body: `${'['.repeat(5000)}${']'.repeat(5000)}` }, { path: '/jobs', body: '{"__proto__": {"x": 1}, "source": "/x"}' },
        { path: '/jobs', body: 'source=/x', type: 'application/x-www-form-urlencoded' }, { path: '/jobs', body: '{"source":"/x"}', type: 'text/plain' },
        { path: '/jobs/../jobs', body: '{}' }, { path: '/jobs/%00/cancel', body: '' }, { path: '/jobs/x'.repeat(300), body: '' },
        { path: '/machines/register', body: '{', auth: enrol }, { path: '/machines/register', body: '{"ferryInventory": "1"}', auth: enrol },
      ];
      for (let n = 0; n < ITERATIONS * 3; n++) {
        const spec = JSON.parse(JSON.stringify(good)) as Record<string, unknown>;
        const keys = [...Object.keys(spec), 'register', 'size', 'options'];
        spec[keys[Math.floor(rnd() * keys.length)]] = junk();
        let text = JSON.stringify(spec);
        // every other case: a byte of the text changed as well (mostly breaking the JSON)
        if (n % 2) { const at = Math.floor(rnd() * text.length); text = text.slice(0, at) + String.fromCharCode(Math.floor(rnd() * 128)) + text.slice(at + 1); }
        bodies.push({ path: '/jobs', body: text });
      }
      const accepted: string[] = [];
      for (const [n, c] of bodies.entries()) {
        const headers: Record<string, string> = { authorization: `Bearer ${c.auth ?? api.token}`, 'content-type': c.type ?? 'application/json' };
        const r = await fetch(api.base + c.path, { method: 'POST', headers, body: c.body, signal: AbortSignal.timeout(BOUND_MS) });
        const text = await r.text();
        const label = `API #${n} POST ${c.path.slice(0, 60)} ${c.body.slice(0, 120)}: ${r.status} ${text.slice(0, 300)}`;
        tally.cases++;
        assert.ok(r.status < 500, `${label}: a 5xx`);
        if (r.status === 201) { tally.ok++; accepted.push((JSON.parse(text) as { id: string }).id); continue; }
        assert.ok(r.status >= 400, `${label}: neither accepted nor refused`);
        let err: { error?: unknown; message?: unknown };
        try { err = JSON.parse(text) as typeof err; } catch { assert.fail(`${label}: the body is not JSON`); }
        assert.match(String(err.error), /^[A-Z][A-Z0-9_]+$/, `${label}: a typed error`);
        assert.equal(typeof err.message, 'string', `${label}: with a message`);
        tally.typed.set(`HTTP ${r.status} ${String(err.error)}`, (tally.typed.get(`HTTP ${r.status} ${String(err.error)}`) ?? 0) + 1);
      }
      // the service still answers, and a job it took ends (failed: no target dir) without touching the source
      assert.equal((await api.get('/jobs')).status, 200, 'the service answers after the fuzzing');
      for (const id of accepted) {
        const end = Date.now() + BOUND_MS;
        let state = '';
        while (!['done', 'failed', 'cancelled'].includes(state)) {
          assert.ok(Date.now() < end, `job ${id} still ${state} after ${BOUND_MS / 1000} s`);
          state = String((await api.get(`/jobs/${id}`)).body.state);
          await new Promise(r => setTimeout(r, 200));
        }
      }
      assert.equal(serve.child.exitCode, null, 'ferry serve still runs');
      assert.equal(await sha256(src), sum, 'the source is unchanged');
    } finally {
      assert.equal(await serve.stop(), 0, `ferry serve stopped cleanly:\n${serve.output().slice(-2000)}`);
    }
  });
});
