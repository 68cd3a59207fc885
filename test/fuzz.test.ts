// Seeded, reproducible fuzzing of what Ferry reads from a disk before it
// trusts it: MBR and GPT tables, ext4 and FAT superblocks, qcow2 headers, and
// the P2V inventory JSON. Each mutated input goes to `ferry info`, and some to
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
import { makeSmallDisk } from './support/small-disk.js';

guardMachine();
const dir = await tempDir('ferryfuzz-');
const ITERATIONS = Number(process.env.FERRY_FUZZ_ITERATIONS ?? 4);
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

async function runBounded(args: string[]): Promise<{ exitCode: number; stderr: string; timedOut: boolean }> {
  const r = await execa('node', [FERRY, ...args], { reject: false, stdin: 'ignore', timeout: BOUND_MS, killSignal: 'SIGKILL' });
  return { exitCode: r.exitCode ?? -1, stderr: String(r.stderr), timedOut: !!r.timedOut };
}

async function loopsOn(file: string): Promise<string> {
  return String((await execa('losetup', ['-j', file], { reject: false })).stdout).trim();
}

describe(`fuzzed inputs end in exit 0 or a typed error (seed ${SEED}, ${ITERATIONS} per kind)`, () => {
  const mbr = join(dir, 'mbr.raw'), gpt = join(dir, 'gpt.raw'), qcow2 = join(dir, 'base.qcow2');
  const tally = { cases: 0, ok: 0, typed: new Map<string, number>() };

  before(async () => {
    await makeSmallDisk(mbr, { sizeMiB: 80 });
    await makeGptDisk(gpt);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', mbr, qcow2]);
  });

  after(async t => {
    const codes = [...tally.typed].map(([c, n]) => `${c} ${n}`).join(', ');
    process.stdout.write(`# fuzz: ${tally.cases} cases, ${tally.ok} exit 0, typed errors: ${codes || 'none'}\n`);
    void t;
  });

  const kinds: { kind: string; base: () => string; format: string; region: (rnd: () => number) => [number, number, number] }[] = [
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
  ];

  for (const k of kinds) {
    it(`${k.kind}: info (and every other case convert) on mutated inputs`, async t => {
      const rnd = prng(SEED ^ [...k.kind].reduce((h, c) => Math.imul(h, 31) + c.charCodeAt(0), 7));
      for (let n = 0; n < ITERATIONS; n++) {
        const c: Case = { kind: k.kind, n, file: join(dir, `${k.kind}-${n}.${k.format === 'qcow2' ? 'qcow2' : 'raw'}`), format: k.format, what: '' };
        await copyFile(k.base(), c.file);
        const [start, len, count] = k.region(rnd);
        c.what = await mutate(c.file, start, len, count, rnd);
        const sum = await sha256(c.file);
        const label = `${k.kind} #${n} (seed ${SEED}, bytes ${c.what})`;
        const runs: string[][] = [['info', c.file, '--json']];
        if (n % 2 === 1) runs.push(['convert', c.file, join(dir, `out-${k.kind}-${n}.qcow2`), '--no-progress']);
        for (const args of runs) {
          const r = await runBounded(args);
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
        t.diagnostic(`${label}: done`);
        await rm(c.file);
        await rm(join(dir, `out-${k.kind}-${n}.qcow2`), { force: true });
      }
    });
  }

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
});
