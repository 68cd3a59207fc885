// `ferry tools` (issue 15): registering on-demand customization tools from a
// .cab, .zip or directory, versions (a newer one is what customizations use),
// rm of one version, containers that do not unpack (typed error, store
// unchanged); and `--run TOOL` placed into a Linux guest (an overlay of the
// Debian guest fixture) as a systemd one-shot unit with a trigger file, read
// back by the test with debugfs from the partition copied out (no boot).
import assert from 'node:assert/strict';
import { readdir, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { execa } from 'execa';
import { openWritable } from '../src/blockdev/disk.js';
import { workDir } from '../src/blockdev/mount.js';
import { customizeDisk } from '../src/customize/disk.js';
import { parseToolRef } from '../src/customize/tools.js';
import { FerryError } from '../src/errors.js';
import { createOverlay } from '../src/refit/reconfigure.js';
import { withScope } from '../src/util/scope.js';
import { buildDebianGuest } from './support/fixtures.js';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';

guardMachine();
const dir = await tempDir('ferrytest-tools-');
const store = join(dir, 'store');
const env = { FERRY_TOOLS: store, FERRY_HOME: join(dir, 'home') };
process.env.FERRY_TOOLS = store;

interface ToolJson { name: string; version: string; entry: string; os: string; files: { path: string; sha256: string }[]; status?: string }

const tools = async (args: string[]) => {
  const r = await ferry(['tools', ...args], { env });
  return { ...r, json: () => JSON.parse(r.stdout) as unknown };
};

/** every path and size under the store, to prove it unchanged */
async function storeTree(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) await walk(join(d, e.name), `${rel}/${e.name}`);
      else out.push(`${rel}/${e.name}`);
    }
  };
  await walk(store, '');
  return out.sort();
}

async function src(name: string, files: Record<string, string>): Promise<string> {
  const d = join(dir, 'src', name);
  await mkdir(d, { recursive: true });
  for (const [f, text] of Object.entries(files)) await writeFile(join(d, f), text);
  return d;
}

describe('ferry tools: add, versions, list, show, rm', () => {
  let cab: string;
  before(async () => {
    const v1 = await src('fix-v1', { 'run.cmd': '@echo v1\r\n' });
    cab = join(dir, 'fix-v2.cab');
    const v2 = await src('fix-v2', { 'run.cmd': '@echo v2\r\n', 'data.ini': '[x]\r\n' });
    await execa('gcab', ['-c', '-n', cab, join(v2, 'run.cmd'), join(v2, 'data.ini')]);
    const a = await tools(['add', v1, '--name', 'fix', '--json']);
    assert.equal(a.exitCode, 0, a.stderr);
    assert.deepEqual([(a.json() as ToolJson).version, (a.json() as ToolJson).status], ['1', 'new'], 'the first version is 1');
  });

  it('a .cab registered next is version 2, the one customizations use', async () => {
    const a = await tools(['add', cab, '--name', 'fix', '--json']);
    assert.equal(a.exitCode, 0, a.stderr);
    const t = a.json() as ToolJson;
    assert.equal(t.version, '2');
    assert.equal(t.entry, 'run.cmd');
    assert.equal(t.os, 'windows');
    assert.deepEqual(t.files.map(f => f.path).sort(), ['data.ini', 'run.cmd']);
    const list = (await tools(['list', '--json'])).json() as ToolJson[];
    assert.deepEqual(list.filter(x => x.name === 'fix').map(x => x.version), ['1', '2']);
    const text = (await tools(['list'])).stdout;
    assert.match(text, /^fix\s+2\s+yes\s+windows/m, 'the text list marks v2 as used');
    assert.match(text, /^fix\s+1\s+-\s/m);
    // the stored files are the container's bytes
    const stored = join(store, 'fix', '2', 'files', 'run.cmd');
    assert.equal((await execa('sha256sum', [stored])).stdout.split(' ')[0], t.files.find(f => f.path === 'run.cmd')!.sha256);
  });

  it('adding the same files again is a no-op; other files under a registered version are refused', async () => {
    const again = await tools(['add', join(dir, 'src', 'fix-v1'), '--name', 'fix', '--version', '1', '--json']);
    assert.equal(again.exitCode, 0, again.stderr);
    assert.equal((again.json() as ToolJson).status, 'present');
    const before = await storeTree();
    const other = await tools(['add', cab, '--name', 'fix', '--version', '1']);
    assert.equal(other.exitCode, 2);
    assert.match(other.stderr, /TOOL_VERSION_EXISTS/);
    assert.deepEqual(await storeTree(), before);
  });

  it('show NAME lists every version with its files', async () => {
    const r = await tools(['show', 'fix', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((r.json() as ToolJson[]).map(t => t.version), ['1', '2']);
    assert.match((await tools(['show', 'fix'])).stdout, /fix 2 {2}\(used by customizations\)/);
  });

  it('containers that do not unpack, or hold nothing to run → typed errors, the store unchanged', async () => {
    const before = await storeTree();
    const junkZip = join(dir, 'junk.zip');
    await writeFile(junkZip, 'this is no zip archive\n'.repeat(40));
    const junkCab = join(dir, 'junk.cab');
    await writeFile(junkCab, Buffer.concat([Buffer.from('MSCF'), Buffer.alloc(200, 7)]));
    const noEntry = await src('no-entry', { 'a.txt': 'a', 'b.txt': 'b' });
    for (const [c, code, exit] of [[junkZip, 'CONTAINER_UNREADABLE', 3], [junkCab, 'CONTAINER_UNREADABLE', 3], [join(dir, 'missing.zip'), 'CONTAINER_UNREADABLE', 3], [noEntry, 'TOOL_NO_ENTRY', 2]] as const) {
      const r = await tools(['add', c, '--name', 'bad']);
      assert.equal(r.exitCode, exit, `${c}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(code));
      assert.deepEqual(await storeTree(), before, `${c}: the store is unchanged`);
    }
    const badName = await tools(['add', noEntry, '--name', 'no/slash']);
    assert.equal(badName.exitCode, 2);
    assert.deepEqual(await storeTree(), before);
  });

  it('rm NAME@VERSION removes that version; the older one is used again; rm of what is not there → TOOL_NOT_FOUND', async () => {
    const r = await tools(['rm', 'fix@2', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((r.json() as ToolJson[]).map(t => t.version), ['2']);
    assert.deepEqual(((await tools(['list', '--json'])).json() as ToolJson[]).filter(x => x.name === 'fix').map(x => x.version), ['1']);
    assert.deepEqual(await readdir(join(store, 'fix')), ['1']);
    const gone = await tools(['rm', 'fix@2']);
    assert.equal(gone.exitCode, 2);
    assert.match(gone.stderr, /TOOL_NOT_FOUND: no registered tool fix version 2 \(registered: fix@1\)/);
    assert.equal((await tools(['rm', 'fix'])).exitCode, 0);
    assert.equal((await tools(['show', 'fix'])).exitCode, 2);
  });
});

describe('--run TOOL on a Linux guest: a systemd one-shot unit guarded by a trigger file', () => {
  it('Debian guest overlay: tool files, unit, trigger and wants link, read back with debugfs; an unknown tool changes nothing', async () => {
    const t0 = Date.now();
    const lap = (what: string) => process.stderr.write(`  ${what}: ${Date.now() - t0} ms\n`);
    const tool = await src('greet', { 'run.sh': '#!/bin/sh\necho greeted > /var/lib/greeted\n', 'lib.txt': 'data\n' });
    assert.equal((await tools(['add', tool, '--name', 'greet', '--version', '1.0'])).exitCode, 0);
    assert.equal((await tools(['add', tool, '--name', 'greet', '--version', '1.1'])).exitCode, 0);
    const base = await buildDebianGuest();
    const baseSum = await sha256(base);
    const overlay = join(dir, 'deb.qcow2');
    await createOverlay(base, overlay);
    const custom = (c: Parameters<typeof customizeDisk>[3]) => withScope(async s => {
      const work = await workDir(s);
      return customizeDisk(s, await openWritable(s, overlay, work), work, c);
    });

    const overlaySum = await sha256(overlay);
    await assert.rejects(custom({ run: [parseToolRef('greet@9')] }), (e: unknown) => e instanceof FerryError && e.code === 'TOOL_NOT_FOUND');
    await assert.rejects(custom({ run: [parseToolRef('fixw')] }), (e: unknown) => e instanceof FerryError && e.code === 'TOOL_NOT_FOUND');
    assert.equal(await sha256(overlay), overlaySum, 'an unknown tool leaves the image as it was');
    lap('refusals');
    const changes = await custom({ run: [parseToolRef('greet')] });
    lap('customized');
    const files = changes.map(c => c.file);
    for (const f of ['/usr/local/lib/ferry/tools/greet/1.1/run.sh', '/usr/local/lib/ferry/tools/greet/1.1/lib.txt', '/etc/systemd/system/ferry-run-greet.service',
      '/var/lib/ferry/run/greet.pending', '/etc/systemd/system/multi-user.target.wants/ferry-run-greet.service']) assert.ok(files.includes(f), `${f} reported`);
    for (const c of changes) assert.ok(c.before && c.after && c.reason, JSON.stringify(c));

    // the root partition copied out of the overlay; debugfs reads it (nothing mounted)
    const table = JSON.parse((await execa('sfdisk', ['--json', base])).stdout) as { partitiontable: { partitions: { start: number; size: number }[] } };
    const p1 = table.partitiontable.partitions[0];
    const part = join(dir, 'root.ext4');
    const spec = { driver: 'raw', offset: p1.start * 512, size: p1.size * 512, file: { driver: 'qcow2', file: { driver: 'file', filename: overlay } } };
    await execa('qemu-img', ['convert', '-O', 'raw', `json:${JSON.stringify(spec)}`, part]);
    lap('partition copied out');
    const debugfs = async (cmd: string) => {
      const r = await execa('debugfs', ['-R', cmd, part], { reject: false });
      assert.equal(r.exitCode, 0, `debugfs ${cmd}: ${r.stderr}`);
      return String(r.stdout);
    };
    const unit = await debugfs('cat /etc/systemd/system/ferry-run-greet.service');
    assert.match(unit, /^ConditionPathExists=\/var\/lib\/ferry\/run\/greet\.pending$/m);
    assert.match(unit, /^Type=oneshot$/m);
    assert.match(unit, /^ExecStart=\/usr\/local\/lib\/ferry\/tools\/greet\/1\.1\/run\.sh$/m, 'the newest version runs');
    assert.match(unit, /^ExecStopPost=\/bin\/rm -f \/var\/lib\/ferry\/run\/greet\.pending$/m, 'the trigger removes itself after the run');
    assert.match(unit, /^WantedBy=multi-user\.target$/m);
    assert.equal(await debugfs('cat /var/lib/ferry/run/greet.pending'), 'greet@1.1');
    assert.equal(await debugfs('cat /usr/local/lib/ferry/tools/greet/1.1/run.sh'), '#!/bin/sh\necho greeted > /var/lib/greeted');
    assert.match(await debugfs('stat /usr/local/lib/ferry/tools/greet/1.1/run.sh'), /Mode:\s+0755/, 'the entry is executable');
    assert.match(await debugfs('stat /etc/systemd/system/multi-user.target.wants/ferry-run-greet.service'), /Fast link dest: "\/etc\/systemd\/system\/ferry-run-greet\.service"/);
    assert.equal(await sha256(base), baseSum, 'the Debian fixture is byte for byte unchanged (the overlay took every write)');
    process.stderr.write(`linux --run on the Debian overlay: ${Date.now() - t0} ms\n`);
  });
});
