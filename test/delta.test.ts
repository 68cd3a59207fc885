// Image deltas and the factory (issue 15), on real images, no boots:
// a copy of the Debian guest gets Debian's `hello` .deb installed with dpkg in
// a chroot (plus an /etc line, a mode, an owner, an xattr and a removal);
// `ferry diff` names exactly those changes and writes a delta; the delta is
// applied to the original through a qcow2 overlay and the result compared
// with the installed copy by independent means (find, sha256sum, getfattr,
// lsattr on read-only mounts). A template that changed the same file gets
// DELTA_CONFLICT naming it; bad deltas are refused before anything is
// written. Windows: registry values and files between two phony Windows
// disks, applied to a third, read back with ntfscat and hivexget. The factory
// builds a catalog image from the fixture, the delta and a hostname.
import assert from 'node:assert/strict';
import { chmod, copyFile, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { execa } from 'execa';
import { buildDebianGuest, buildPhonyWindows, type PhonyWindows } from './support/fixtures.js';
import { ferry, guardMachine, ROOT, sha256, tempDir } from './support/harness.js';
import { imageMounts } from './support/image-mount.js';
import { independentCompare } from './support/independent.js';

guardMachine();
const dir = await tempDir('ferrytest-delta-');

const P1 = 2048 * 512; // the Debian guest's root partition (test/fixtures/build-debian-guest.sh)

const { withMounted, withQcow2Mounted } = imageMounts(dir);

const cp = (from: string, to: string) => execa('cp', ['--sparse=always', from, to]);
const json = (s: string) => JSON.parse(s) as Record<string, any>;

let guest: string;
let guestSum: string;
let installed: string; // the copy with hello installed
let template: string; // a copy whose /etc/hosts changed another way
let delta: string;
let deb: string;

describe('ferry diff and delta on the Debian guest', () => {
  before(async () => {
    guest = await buildDebianGuest();
    deb = String((await execa('bash', [join(ROOT, 'test', 'fixtures', 'fetch-hello-deb.sh')], { stdin: 'ignore', stderr: 'inherit' })).stdout).trim().split('\n').at(-1)!;
    guestSum = await sha256(guest);
    installed = join(dir, 'installed.raw');
    template = join(dir, 'template.raw');
    await Promise.all([cp(guest, installed), cp(guest, template)]);
    await withMounted(installed, P1, undefined, 'ext4', async m => {
      await copyFile(deb, join(m, 'tmp', 'hello.deb'));
      await execa('chroot', [m, 'dpkg', '-i', '/tmp/hello.deb'], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive' } });
      await execa('rm', [join(m, 'tmp', 'hello.deb')]);
      await writeFile(join(m, 'etc', 'hosts'), (await readFile(join(m, 'etc', 'hosts'), 'utf8')) + '10.9.8.7 delta-host\n');
      await chmod(join(m, 'etc', 'issue'), 0o600);
      await execa('chown', ['1000:1000', join(m, 'etc', 'issue.net')]);
      await execa('rm', [join(m, 'etc', 'motd')]);
      await execa('setfattr', ['-n', 'user.ferry', '-v', 'delta', join(m, 'etc', 'debian_version')]);
    });
    await withMounted(template, P1, undefined, 'ext4', async m => {
      await writeFile(join(m, 'etc', 'hosts'), (await readFile(join(m, 'etc', 'hosts'), 'utf8')) + '10.1.1.1 template-host\n');
    });
  });

  it('diff names the package, the files and the /etc lines; --delta writes a delta that `delta show` reads', async () => {
    delta = join(dir, 'hello.ferrydelta');
    const t0 = Date.now();
    const r = await ferry(['diff', guest, installed, '--json', '--delta', delta]);
    assert.equal(r.exitCode, 0, r.stderr);
    const d = json(r.stdout);
    process.stderr.write(`# diff of the 2 GiB guests with --delta: ${Date.now() - t0} ms\n`);
    const file = (p: string) => d.files.find((f: { path: string }) => f.path === p);
    assert.equal(file('/usr/bin/hello')?.change, 'added');
    assert.equal(file('/usr/share/doc/hello')?.kind, 'dir');
    assert.equal(file('/etc/motd')?.change, 'removed');
    assert.deepEqual(file('/etc/issue')?.aspects.filter((a: string) => a !== 'times'), ['mode']);
    assert.deepEqual(file('/etc/issue.net')?.aspects.filter((a: string) => a !== 'times'), ['owner']);
    assert.deepEqual(file('/etc/debian_version')?.aspects.filter((a: string) => a !== 'times'), ['xattrs']);
    assert.ok(file('/etc/hosts')?.aspects.includes('content'));
    assert.deepEqual(d.lines.find((l: { path: string }) => l.path === '/etc/hosts')?.edits.map((e: { op: string; line: string }) => e.op + e.line), ['+10.9.8.7 delta-host']);
    assert.deepEqual(d.packages, [{ name: 'hello:amd64', change: 'added', to: '2.10-3' }]);
    // nothing else: the rest is dpkg's own bookkeeping and the package's files
    const other = d.files.filter((f: { path: string }) => !/^\/(usr\/(bin\/hello|share\/.*hello.*)|var\/lib\/dpkg\/.*|var\/log\/dpkg\.log|etc\/(motd|issue|issue\.net|debian_version|hosts))$/.test(f.path));
    assert.deepEqual(other, []);

    const text = await ferry(['diff', guest, installed, '--paths', '/etc/**']);
    assert.equal(text.exitCode, 0, text.stderr);
    assert.match(text.stdout, /^changed \/etc\/hosts: content/m);
    assert.match(text.stdout, /^ {4}\+10\.9\.8\.7 delta-host$/m);
    assert.doesNotMatch(text.stdout, /\/usr\/bin\/hello/);

    const show = await ferry(['delta', 'show', delta, '--json']);
    assert.equal(show.exitCode, 0, show.stderr);
    const m = json(show.stdout);
    assert.equal(m.format, 'ferry-delta');
    assert.equal(m.osFamily, 'linux');
    assert.ok(m.ops.some((o: { op: string; path: string }) => o.op === 'add' && o.path === '/usr/bin/hello'));
    assert.equal((await readFile(delta)).subarray(0, 8).toString('latin1'), 'FRYDELTA');
  });

  it('delta apply to the original through an overlay: independently the same tree as the installed copy; the original unchanged', async () => {
    const overlay = join(dir, 'applied.qcow2');
    const t0 = Date.now();
    const r = await ferry(['delta', 'apply', delta, guest, '--overlay', overlay, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    process.stderr.write(`# delta apply: ${Date.now() - t0} ms\n`);
    const info = json((await execa('qemu-img', ['info', '--output=json', overlay])).stdout);
    assert.equal(info['backing-filename'], guest);
    const t1 = Date.now();
    assert.deepEqual(await independentCompare(installed, 'raw', overlay, 'qcow2'), []);
    process.stderr.write(`# independent compare: ${Date.now() - t1} ms\n`);
  });

  it('a template that changed /etc/hosts: DELTA_CONFLICT naming /etc/hosts only; no overlay; the template unchanged; --dry-run --force lists it', async () => {
    const before = await sha256(template);
    const overlay = join(dir, 'conflict.qcow2');
    const r = await ferry(['delta', 'apply', delta, template, '--overlay', overlay]);
    assert.equal(r.exitCode, 5, r.stderr);
    assert.match(r.stderr, /DELTA_CONFLICT: .* at 1 path\(s\): \/etc\/hosts;/);
    assert.equal(await stat(overlay).catch(() => undefined), undefined);
    assert.equal(await sha256(template), before);
    const dry = await ferry(['delta', 'apply', delta, template, '--overlay', overlay, '--dry-run', '--force', '--json']);
    assert.equal(dry.exitCode, 0, dry.stderr);
    assert.deepEqual(json(dry.stdout).forced, ['/etc/hosts']);
    assert.equal(await stat(overlay).catch(() => undefined), undefined, 'a dry run writes nothing');
  });

  it('--force merges the line edit into the template\'s own /etc/hosts', async () => {
    const overlay = join(dir, 'forced.qcow2');
    const r = await ferry(['delta', 'apply', delta, template, '--overlay', overlay, '--force']);
    assert.equal(r.exitCode, 0, r.stderr);
    const hosts = await withQcow2Mounted(overlay, P1, m => readFile(join(m, 'etc', 'hosts'), 'utf8'));
    assert.match(hosts, /^10\.1\.1\.1 template-host$/m);
    assert.match(hosts, /^10\.9\.8\.7 delta-host$/m);
  });

  it('bad deltas: truncated, corrupted, wrong OS family, missing --overlay, existing overlay: typed errors, nothing written', async () => {
    const overlay = join(dir, 'bad.qcow2');
    const truncated = join(dir, 'truncated.ferrydelta');
    await copyFile(delta, truncated);
    await truncate(truncated, Math.floor((await stat(delta)).size / 2));
    const corrupt = join(dir, 'corrupt.ferrydelta');
    const bytes = await readFile(delta);
    bytes[bytes.length - 100] ^= 0xff;
    await writeFile(corrupt, bytes);
    for (const [file, code] of [[truncated, 'DELTA_CORRUPT'], [corrupt, 'DELTA_CORRUPT']]) {
      const r = await ferry(['delta', 'apply', file, guest, '--overlay', overlay]);
      assert.equal(r.exitCode, 3, r.stderr);
      assert.match(r.stderr, new RegExp(`${code}: `));
      assert.equal(await stat(overlay).catch(() => undefined), undefined);
      const s = await ferry(['delta', 'show', file]);
      assert.equal(s.exitCode, 3);
    }
    const w = await buildPhonyWindows();
    const wrong = await ferry(['delta', 'apply', delta, w.win2019.image, '--overlay', overlay]);
    assert.equal(wrong.exitCode, 5, wrong.stderr);
    assert.match(wrong.stderr, /DELTA_WRONG_OS: .*a delta for a linux system/);
    assert.equal(await stat(overlay).catch(() => undefined), undefined);
    const noOverlay = await ferry(['delta', 'apply', delta, guest]);
    assert.equal(noOverlay.exitCode, 2);
    assert.match(noOverlay.stderr, /USAGE: .*--overlay/);
    await writeFile(overlay, 'x');
    const exists = await ferry(['delta', 'apply', delta, guest, '--overlay', overlay]);
    assert.equal(exists.exitCode, 4);
    assert.match(exists.stderr, /TARGET_EXISTS/);
    assert.equal(await readFile(overlay, 'utf8'), 'x');
    await execa('rm', [overlay]);
  });

  it('factory build: the fixture + the delta + a hostname + a profile → a catalog image whose recipe `images show` gives; its files checked on a read-only mount', async () => {
    const home = join(dir, 'home');
    const env = { FERRY_HOME: home };
    const add = await ferry(['images', 'add', guest, '--name', 'debian-base'], { env });
    assert.equal(add.exitCode, 0, add.stderr);
    const recipe = join(dir, 'web.yaml');
    await writeFile(recipe, ['name: debian-hello', 'base: debian-base', 'output: debian-hello.qcow2', 'deltas:', `  - ${delta}`,
      'customize:', '  hostname: factory-1', 'profile: kvm-virtio', 'tags: [factory]', ''].join('\n'));
    const t0 = Date.now();
    const r = await ferry(['factory', 'build', recipe, '--json'], { env });
    assert.equal(r.exitCode, 0, r.stderr);
    process.stderr.write(`# factory build: ${Date.now() - t0} ms\n`);
    const show = await ferry(['images', 'show', 'debian-hello', '--json'], { env });
    assert.equal(show.exitCode, 0, show.stderr);
    const s = json(show.stdout);
    assert.equal(s.source, join(dir, 'debian-hello.qcow2'));
    assert.deepEqual(s.tags, ['factory']);
    assert.equal(s.recipe.base, 'debian-base');
    assert.deepEqual(s.recipe.deltas, [delta]);
    assert.deepEqual(s.recipe.customize, { hostname: 'factory-1' });
    assert.equal(s.recipe.profile, 'kvm-virtio');
    const text = await ferry(['images', 'show', 'debian-hello'], { env });
    assert.match(text.stdout, /made by: ferry factory build .*web\.yaml/);
    // independently: the new image's files, on a read-only mount of the test's own export of the qcow2
    const [hostname, hello] = await withQcow2Mounted(s.source, P1, async m => [await readFile(join(m, 'etc', 'hostname'), 'utf8'), await sha256(join(m, 'usr', 'bin', 'hello'))] as const);
    const want = await withMounted(installed, P1, undefined, 'ext4', m => sha256(join(m, 'usr', 'bin', 'hello')), true);
    assert.equal(hostname.trim(), 'factory-1');
    assert.equal(hello, want);
    // a recipe naming a corrupt delta: refused before anything is written, the catalog unchanged
    const bad = join(dir, 'bad.yaml');
    const truncated = join(dir, 'short.ferrydelta');
    await writeFile(truncated, (await readFile(delta)).subarray(0, 100));
    await writeFile(bad, `name: broken\nbase: debian-base\noutput: broken.qcow2\ndeltas: [${truncated}]\n`);
    const b = await ferry(['factory', 'build', bad], { env });
    assert.equal(b.exitCode, 3, b.stderr);
    assert.match(b.stderr, /DELTA_CORRUPT/);
    assert.equal(await stat(join(dir, 'broken.qcow2')).catch(() => undefined), undefined);
    const list = json((await ferry(['images', 'list', '--json'], { env })).stdout);
    assert.deepEqual(list.images.map((i: { name: string }) => i.name), ['debian-base', 'debian-hello']);
    // once, at the end (2 GiB to hash): no diff, apply, refused apply or factory build above wrote to the fixture
    assert.equal(await sha256(guest), guestSum, 'the fixture is unchanged');
  });
});

describe('ferry diff and delta between phony Windows disks', () => {
  let w: PhonyWindows;
  const off = () => w.win2019.fileSystems.find(f => f.partition === 2)!;
  /** a value of a hive read back with hivexget (the test's judge), from a partition copied out of any image */
  async function readBack(image: string, format: string, fn: (hive: string, file: (p: string) => Promise<string>) => Promise<void>): Promise<void> {
    const raw = join(dir, 'readback.raw');
    await execa('qemu-img', ['convert', '-f', format, '-O', 'raw', image, raw]);
    const loop = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(off().start), '--sizelimit', String(off().size), raw])).stdout).trim();
    try {
      const hive = join(dir, 'SOFTWARE.hive');
      await writeFile(hive, (await execa('ntfscat', [loop, '/Windows/System32/config/SOFTWARE'], { encoding: 'buffer' })).stdout as Uint8Array);
      await fn(hive, async p => String((await execa('ntfscat', [loop, p])).stdout));
    } finally {
      await execa('losetup', ['-d', loop]);
      await execa('rm', ['-f', raw]);
    }
  }

  it('registry values and added files of one disk, applied to a third through an overlay; read back with ntfscat and hivexget; a registry conflict names the value', async () => {
    w = await buildPhonyWindows();
    const [a, b, c] = ['wa.raw', 'wb.raw', 'wc.raw'].map(n => join(dir, n));
    await Promise.all([a, b, c].map(x => cp(w.win2019.image, x)));
    await withMounted(b, off().start, off().size, 'ntfs', async m => {
      await execa('mkdir', ['-p', join(m, 'Program Files', 'Tool')]);
      await writeFile(join(m, 'Program Files', 'Tool', 'tool.txt'), 'ferry tool 1.2\n');
      const reg = join(dir, 'b.reg');
      await writeFile(reg, ['Windows Registry Editor Version 5.00', '', '[HKEY_LOCAL_MACHINE\\SOFTWARE\\Ferry]', '', '[HKEY_LOCAL_MACHINE\\SOFTWARE\\Ferry\\Tool]',
        '"Version"="1.2"', '"Enabled"=dword:00000001', '', '[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]', '"RegisteredOwner"="Ops"', '"SoftwareType"=-', '',
        '[-HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\AddressBook]', ''].join('\r\n'));
      await execa('hivexregedit', ['--merge', '--prefix', 'HKEY_LOCAL_MACHINE\\SOFTWARE', join(m, 'Windows', 'System32', 'config', 'SOFTWARE'), reg]);
    });
    // the third disk has a change of its own, which the delta must keep
    await withMounted(c, off().start, off().size, 'ntfs', async m => writeFile(join(m, 'third.txt'), 'mine\n'));
    const cSum = await sha256(c);
    const wdelta = join(dir, 'win.ferrydelta');
    const d = await ferry(['diff', a, b, '--json', '--delta', wdelta]);
    assert.equal(d.exitCode, 0, d.stderr);
    const diff = json(d.stdout);
    assert.equal(diff.osFamily, 'windows');
    assert.deepEqual(diff.files.map((f: { path: string; change: string }) => `${f.change} ${f.path}`), ['added C:/Program Files/Tool', 'added C:/Program Files/Tool/tool.txt']);
    const reg = diff.registry.find((h: { path: string }) => h.path === 'C:/Windows/System32/config/SOFTWARE');
    assert.deepEqual(reg.changes.map((x: { op: string; key: string; name?: string }) => `${x.op} ${x.key}${x.name !== undefined ? '\\' + x.name : ''}`).sort(), [
      'add-key Ferry', 'add-key Ferry\\Tool', 'remove Microsoft\\Windows NT\\CurrentVersion\\SoftwareType',
      'remove-key Microsoft\\Windows\\CurrentVersion\\Uninstall\\AddressBook',
      'set Ferry\\Tool\\Enabled', 'set Ferry\\Tool\\Version', 'set Microsoft\\Windows NT\\CurrentVersion\\RegisteredOwner'].sort());

    const overlay = join(dir, 'wc.qcow2');
    const r = await ferry(['delta', 'apply', wdelta, c, '--overlay', overlay]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(await sha256(c), cSum, 'the third disk is unchanged');
    await readBack(overlay, 'qcow2', async (hive, file) => {
      const get = async (key: string, name: string) => execa('hivexget', [hive, key, name], { reject: false });
      assert.equal(String((await get('\\Ferry\\Tool', 'Version')).stdout), '1.2');
      assert.equal(String((await get('\\Ferry\\Tool', 'Enabled')).stdout), '1');
      assert.equal(String((await get('\\Microsoft\\Windows NT\\CurrentVersion', 'RegisteredOwner')).stdout), 'Ops');
      assert.equal(String((await get('\\Microsoft\\Windows NT\\CurrentVersion', 'ProductName')).stdout), 'Windows Server 2019 Datacenter');
      const gone = await get('\\Microsoft\\Windows NT\\CurrentVersion', 'SoftwareType');
      assert.notEqual(gone.exitCode, 0, 'SoftwareType was removed');
      const key = await execa('hivexregedit', ['--export', hive, '\\Microsoft\\Windows\\CurrentVersion\\Uninstall'], { reject: false });
      assert.equal(key.exitCode, 0, key.stderr);
      assert.match(String(key.stdout), /Uninstall\\7-Zip\]/);
      assert.doesNotMatch(String(key.stdout), /AddressBook/, 'the AddressBook key was removed');
      assert.equal(await file('/Program Files/Tool/tool.txt'), 'ferry tool 1.2');
      assert.equal(await file('/third.txt'), 'mine');
    });

    // a fourth disk whose RegisteredOwner changed another way: the conflict names the value; nothing written
    const e = join(dir, 'we.raw');
    await cp(w.win2019.image, e);
    await withMounted(e, off().start, off().size, 'ntfs', async m => {
      const reg = join(dir, 'e.reg');
      await writeFile(reg, ['Windows Registry Editor Version 5.00', '', '[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]', '"RegisteredOwner"="Someone"', ''].join('\r\n'));
      await execa('hivexregedit', ['--merge', '--prefix', 'HKEY_LOCAL_MACHINE\\SOFTWARE', join(m, 'Windows', 'System32', 'config', 'SOFTWARE'), reg]);
    });
    const eSum = await sha256(e);
    const o3 = join(dir, 'we.qcow2');
    const conflict = await ferry(['delta', 'apply', wdelta, e, '--overlay', o3]);
    assert.equal(conflict.exitCode, 5, conflict.stderr);
    assert.match(conflict.stderr, /DELTA_CONFLICT: .* at 1 path\(s\): C:\/Windows\/System32\/config\/SOFTWARE:Microsoft\\Windows NT\\CurrentVersion\\RegisteredOwner;/);
    assert.equal(await stat(o3).catch(() => undefined), undefined);
    assert.equal(await sha256(e), eSum);

    // a Windows delta on the Linux guest: DELTA_WRONG_OS, nothing written
    const guestImage = await buildDebianGuest();
    const o2 = join(dir, 'wrong.qcow2');
    const wrong = await ferry(['delta', 'apply', wdelta, guestImage, '--overlay', o2]);
    assert.equal(wrong.exitCode, 5, wrong.stderr);
    assert.match(wrong.stderr, /DELTA_WRONG_OS: .*a delta for a windows system/);
    assert.equal(await stat(o2).catch(() => undefined), undefined);
  });
});
