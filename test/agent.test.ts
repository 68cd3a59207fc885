// `ferry agent build`, checked with tools other than Ferry's own code: the
// initrd's listing (zstd + cpio), modinfo for the module dependencies, ldd for
// nbdkit's libraries, `file` for the kernel, xorriso for the ISO's BIOS and
// UEFI boot entries. A second build is skipped, a changed input (a server baked
// into the ISO) rebuilds, and a bad --out is a typed error that leaves nothing.
// Nothing is booted here (the boot test is test/agent-boot.test.ts's job).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { ROOT, ferry, guardMachine, run, tempDir } from './support/harness.js';

guardMachine();
const dir = await tempDir('ferryagent-');
const out = join(dir, 'agent');

interface Result { event: string; dir: string; upToDate: boolean; kernel: string; initrdBytes: number; isoBytes: number; builtFrom: string }

async function build(args: string[] = []): Promise<{ r: Result; stderr: string }> {
  const res = await ferry(['agent', 'build', '--out', out, '--json', ...args]);
  assert.equal(res.exitCode, 0, res.stderr);
  const lines = res.stdout.trim().split('\n');
  return { r: JSON.parse(lines[lines.length - 1]) as Result, stderr: res.stderr };
}

/** `zstd -dc initrd | cpio -itv`: name → the listing's mode column */
async function listInitrd(initrd: string): Promise<Map<string, string>> {
  const r = await execa('bash', ['-o', 'pipefail', '-c', 'zstd -dc -- "$1" | cpio -itv --quiet', 'list', initrd]);
  const entries = new Map<string, string>();
  for (const line of String(r.stdout).split('\n')) {
    // "-rwxr-xr-x   1 root root   9151 Jan  1  1970 init", "crw------- 1 root root 5,   1 Jan  1  1970 dev/console", "… bin/sh -> busybox"
    const m = /^(\S+)\s+\d+\s+\S+\s+\S+\s+(?:\d+,\s*)?\d+\s+\w{3}\s+\d+\s+[\d:]+\s+(.+?)(?: -> .*)?$/.exec(line);
    if (m) entries.set(m[2], m[1]);
  }
  return entries;
}

/** a module's .ko and every module it depends on, as modinfo of the host says, relative to / */
async function moduleClosure(kernel: string, name: string, seen = new Set<string>()): Promise<Set<string>> {
  const file = (await run('modinfo', ['-k', kernel, '-F', 'filename', name])).trim();
  if (seen.has(file)) return seen;
  seen.add(file);
  const deps = (await run('modinfo', ['-k', kernel, '-F', 'depends', name])).trim();
  for (const d of deps.split(',').filter(Boolean)) await moduleClosure(kernel, d, seen);
  return seen;
}

describe('ferry agent build', () => {
  let first: Result;

  it('builds vmlinuz, initrd.img, a hybrid ISO and the manifest', async () => {
    const { r, stderr } = await build();
    first = r;
    assert.equal(r.upToDate, false);
    assert.match(stderr, /agent: initrd\.img/, 'progress lines on stderr');
    for (const f of ['vmlinuz', 'initrd.img', 'ferry-agent.iso', 'manifest.json']) assert.ok(existsSync(join(out, f)), f);
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(manifest.kernel, r.kernel);
    assert.equal(manifest.initrdBytes, (await stat(join(out, 'initrd.img'))).size);
    assert.equal(manifest.isoBytes, (await stat(join(out, 'ferry-agent.iso'))).size);
    assert.match(String(manifest.builtFrom), /^[0-9a-f]{64}$/);
    // the Debian kernel with its modules, not the host's running one
    assert.match(r.kernel, /-amd64$/);
    assert.ok(existsSync(`/lib/modules/${r.kernel}/modules.dep`));
    assert.match(await run('file', ['-b', join(out, 'vmlinuz')]), new RegExp(`Linux kernel x86 boot executable bzImage, version ${r.kernel.replace(/\./g, '\\.')} `));
    assert.deepEqual((await readdir(out)).filter(n => n.startsWith('.')), [], 'no temp dir left in --out');
  });

  it('puts busybox, bash, nbdkit with TLS, the modules with their dependencies, /init and the inventory into the initrd', async () => {
    const initrd = join(out, 'initrd.img');
    const entries = await listInitrd(initrd);
    const has = (p: string) => assert.ok(entries.has(p.replace(/^\//, '')), `${p} is in the initrd`);
    for (const p of ['/bin/busybox', '/bin/bash', '/bin/sh', '/bin/udhcpc', '/bin/wget', '/bin/modprobe', '/usr/bin/nbdkit',
      '/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-file-plugin.so', '/usr/share/udhcpc/default.script',
      '/usr/lib/ferry/ferry-p2v-agent', '/dev/console', `/lib/modules/${first.kernel}/modules.dep`]) has(p);
    assert.match(entries.get('init') ?? '', /^-rwx/, '/init is an executable file');
    assert.match(entries.get('dev/console') ?? '', /^c/, '/dev/console is a character device');
    // every library ldd names for nbdkit, its file plugin and bash (gnutls among them)
    let libs = '';
    for (const p of ['/usr/bin/nbdkit', '/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-file-plugin.so', '/bin/bash']) libs += await run('ldd', [p]);
    const paths = [...libs.matchAll(/(\/\S+) \(0x/g)].map(m => m[1]);
    assert.ok(paths.some(p => p.includes('libgnutls')), 'nbdkit links gnutls');
    for (const p of paths) has(p);
    // e1000e, ahci, virtio_net, sd_mod, nvme and all they depend on
    for (const m of ['e1000e', 'ahci', 'virtio_net', 'virtio_pci', 'sd_mod', 'nvme']) {
      for (const f of await moduleClosure(first.kernel, m)) has(f);
    }
    // the p2v agent as it is in the tree: one inventory, one schema
    const agent = await execa('bash', ['-o', 'pipefail', '-c', 'zstd -dc -- "$1" | cpio -i --quiet --to-stdout usr/lib/ferry/ferry-p2v-agent', 'x', initrd], { encoding: 'buffer', stripFinalNewline: false });
    assert.ok(Buffer.from(agent.stdout).equals(await readFile(join(ROOT, 'scripts', 'p2v-agent', 'ferry-p2v-agent'))), 'the initrd holds scripts/p2v-agent/ferry-p2v-agent unchanged');
  });

  it('makes an ISO with a BIOS and a UEFI El Torito boot entry', async () => {
    const r = await execa('xorriso', ['-indev', join(out, 'ferry-agent.iso'), '-report_el_torito', 'plain'], { stdin: 'ignore' });
    assert.match(String(r.stdout), /El Torito boot img :\s+\d+\s+BIOS\s+y/);
    assert.match(String(r.stdout), /El Torito boot img :\s+\d+\s+UEFI\s+y/);
  });

  it('skips a second build when its inputs are unchanged', async () => {
    const before = (await stat(join(out, 'initrd.img'))).mtimeMs;
    const { r, stderr } = await build();
    assert.equal(r.upToDate, true);
    assert.equal(r.builtFrom, first.builtFrom);
    assert.match(stderr, /is up to date/);
    assert.equal((await stat(join(out, 'initrd.img'))).mtimeMs, before, 'the initrd was not written again');
  });

  it('rebuilds when an input changes (a server and enrolment token baked into the ISO)', async () => {
    const tokenFile = join(dir, 'enrol-token');
    await writeFile(tokenFile, 'ab'.repeat(32) + '\n', { mode: 0o600 });
    const { r, stderr } = await build(['--server', 'http://192.0.2.1:8470', '--enrol-token-file', tokenFile]);
    assert.equal(r.upToDate, false);
    assert.notEqual(r.builtFrom, first.builtFrom);
    assert.ok(!stderr.includes('ab'.repeat(32)), 'the token is never printed');
    const iso = join(out, 'ferry-agent.iso');
    assert.equal((await stat(iso)).mode & 0o777, 0o600, 'an ISO holding the enrolment token is private');
    const cfg = join(dir, 'grub.cfg');
    await execa('xorriso', ['-osirrox', 'on', '-indev', iso, '-extract', '/boot/grub/grub.cfg', cfg], { stdin: 'ignore' });
    assert.match(await readFile(cfg, 'utf8'), /linux \/boot\/vmlinuz .*ferry\.server=http:\/\/192\.0\.2\.1:8470 ferry\.enrol=/);
    assert.deepEqual((await readdir(out)).filter(n => n.startsWith('.')), []);
  });

  it('refuses an --out that is a file, or under one, with a typed error and writes nothing', async () => {
    const file = join(dir, 'a-file');
    await writeFile(file, 'keep me\n');
    const before = await readdir(dir);
    for (const bad of [file, join(file, 'agent')]) {
      const res = await ferry(['agent', 'build', '--out', bad]);
      assert.equal(res.exitCode, 4, res.stderr);
      assert.match(res.stderr, /^ferry: TARGET_NOT_WRITABLE: /m);
    }
    assert.equal(await readFile(file, 'utf8'), 'keep me\n');
    assert.deepEqual(await readdir(dir), before, 'nothing was created');
  });
});
