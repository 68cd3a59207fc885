// The judges judged: a converted target is corrupted, one way at a time, in
// each way a bug could leave it (a byte of a file, its mode, owner, mtime, an
// xattr, an ACL, a missing and an extra file, a symlink's target, a hard link
// split, the file system's UUID and label, a partition's type, the boot code),
// and both the independent comparison (test/support/independent.ts) and
// `ferry verify` must report every one. A judge that misses one would let the
// same bug pass every conversion test.
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { execa } from 'execa';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { independentCompare } from './support/independent.js';
import { makeSmallDisk } from './support/small-disk.js';

guardMachine();
const dir = await tempDir('ferryoracle-');
const ROOT_START = 2048 * 512;

/** Mount partition 1 (ext4) of a raw image read-write, run fn on it, unmount. */
async function onRoot(image: string, fn: (mnt: string) => Promise<unknown>): Promise<void> {
  const loop = String((await execa('losetup', ['-f', '--show', '-o', String(ROOT_START), image])).stdout).trim();
  const mnt = await mkdtemp('/var/tmp/oracle-mnt-');
  try {
    await execa('mount', [loop, mnt]);
    try { await fn(mnt); } finally { await execa('umount', [mnt]); }
  } finally {
    await execa('losetup', ['-d', loop]);
    await rm(mnt, { recursive: true, force: true });
  }
}

/** Run a tool on partition 1's device (unmounted). */
async function onRootDev(image: string, cmd: string, args: (dev: string) => string[]): Promise<void> {
  const loop = String((await execa('losetup', ['-f', '--show', '-o', String(ROOT_START), image])).stdout).trim();
  try { await execa(cmd, args(loop)); } finally { await execa('losetup', ['-d', loop]); }
}

const sh = (mnt: string, cmd: string, args: string[]) => execa(cmd, args, { cwd: mnt });

const mutations: [string, (img: string) => Promise<void>][] = [
  ['a byte of a file', img => onRoot(img, m => execa('dd', ['of=' + join(m, 'etc/deep/er/file'), 'bs=1', 'seek=100', 'count=1', 'conv=notrunc', 'status=none'], { input: 'Y' }))],
  ['a file\'s mode', img => onRoot(img, m => sh(m, 'chmod', ['0600', 'etc/hostname']))],
  ['a file\'s owner', img => onRoot(img, m => sh(m, 'chown', ['1234:1234', 'etc/deep/er/file']))],
  ['a file\'s mtime', img => onRoot(img, m => sh(m, 'touch', ['-m', '-d', '2001-02-03 04:05:06', 'etc/deep/er/file']))],
  ['an xattr', img => onRoot(img, m => sh(m, 'setfattr', ['-n', 'user.note', '-v', 'changed', 'etc/hostname']))],
  ['an ACL', img => onRoot(img, m => sh(m, 'setfacl', ['-m', 'u:4321:r', 'etc/deep/er/file']))],
  ['a missing file', img => onRoot(img, m => sh(m, 'rm', ['etc/deep/er/file']))],
  ['an extra file', img => onRoot(img, m => sh(m, 'touch', ['-d', '2020-01-01', 'extra']))],
  ['a symlink\'s target', img => onRoot(img, async m => { await sh(m, 'rm', ['link']); await sh(m, 'ln', ['-s', 'etc/elsewhere', 'link']); })],
  ['a hard link split', img => onRoot(img, async m => { await sh(m, 'rm', ['hostname.link']); await sh(m, 'cp', ['-a', 'etc/hostname', 'hostname.link']); })],
  // tune2fs -U wants a freshly checked file system: a used-block copy keeps the source's mount and check times
  ['the file system UUID', async img => {
    const loop = String((await execa('losetup', ['-f', '--show', '-o', String(ROOT_START), img])).stdout).trim();
    try {
      await execa('e2fsck', ['-f', '-y', loop], { reject: false });
      await execa('tune2fs', ['-f', '-U', '0a1b2c3d-0000-4000-8000-0000000000ff', loop]);
    } finally { await execa('losetup', ['-d', loop]); }
  }],
  ['the file system label', img => onRootDev(img, 'e2label', d => [d, 'other'])],
  ['a partition\'s type', async img => { await execa('sfdisk', ['-q', '--part-type', img, '2', '83']); }],
  ['the boot code', async img => { await execa('dd', ['of=' + img, 'bs=1', 'seek=5', 'count=4', 'conv=notrunc', 'status=none'], { input: 'ZZZZ' }); }],
];

describe('both judges report every kind of corruption of a converted target', () => {
  const source = join(dir, 'source.raw');
  const target = join(dir, 'target.raw');
  let sourceSum = '';

  before(async () => {
    await makeSmallDisk(source, { sizeMiB: 80 });
    // what small-disk lacks: a symlink and an ACL
    await onRoot(source, async m => { await sh(m, 'ln', ['-s', 'etc/hostname', 'link']); await sh(m, 'setfacl', ['-m', 'u:1000:rw', 'etc/deep/er/file']); });
    sourceSum = await sha256(source);
    const r = await ferry(['convert', source, target, '--format', 'raw', '--no-progress']);
    assert.equal(r.exitCode, 0, r.stderr);
  });

  it('the unmodified target: both judges find it equivalent (the control)', async () => {
    assert.deepEqual(await independentCompare(source, 'raw', target, 'raw'), []);
    const v = await ferry(['verify', source, target]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
  });

  for (const [what, corrupt] of mutations) {
    it(`${what}: the independent comparison and ferry verify both report it`, async () => {
      const bad = join(dir, 'bad.raw');
      await copyFile(target, bad);
      try {
        await corrupt(bad);
        const indep = await independentCompare(source, 'raw', bad, 'raw');
        const v = await ferry(['verify', source, bad]);
        const tableLevel = /partition's type|boot code/.test(what);
        // the independent comparison judges file systems; the table and boot code are sfdisk's and cmp's job below
        if (!tableLevel) assert.notDeepEqual(indep, [], `the independent comparison missed ${what}`);
        else {
          const [a, b] = [await execa('sfdisk', ['--dump', source]), await execa('sfdisk', ['--dump', bad])];
          const code = await execa('cmp', ['-n', '440', source, bad], { reject: false });
          assert.ok(String(a.stdout).replace(/^(label-id|device).*$/gm, '').replace(/source\.raw/g, 'X') !== String(b.stdout).replace(/^(label-id|device).*$/gm, '').replace(/bad\.raw/g, 'X') || code.exitCode === 1, `sfdisk and cmp missed ${what}`);
        }
        assert.equal(v.exitCode, 6, `ferry verify missed ${what}:\n${v.stdout}${v.stderr}`);
      } finally {
        await rm(bad, { force: true });
      }
    });
  }

  it('the source never changed', async () => {
    assert.equal(await sha256(source), sourceSum);
  });
});
