// The image catalog (`ferry images`): add, list, show, rm and search against
// the real Debian 12 guest, with FERRY_HOME in a temp dir. The staleness test
// changes a file inside a copy of the guest and expects the next search to
// answer from the changed disk without being told to refresh.
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import { access, lstat, mkdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { ferry, guardMachine, sha256, tempDir, type FerryRun } from './support/harness.js';
import { buildDebianGuest } from './support/fixtures.js';
import { startNbdkit, stopAllServers } from './support/servers.js';

guardMachine();
const dir = await tempDir('ferrytest-catalog-');
const home = join(dir, 'home');

const images = (...args: string[]) => ferry(['images', ...args], { env: { FERRY_HOME: home } });
const json = <T = Record<string, unknown>>(r: FerryRun): T => {
  assert.equal(r.exitCode, 0, `ferry failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};

interface Os { type: string; distro?: string; version?: string; patchLevel?: string; firmware?: string; kernels: string[] }
interface Summary { name: string; source: string; tags: string[]; os: Os[]; state?: string }
interface Search { images: Summary[]; refreshed: string[]; missing: { name: string }[]; failed: { name: string }[] }

/** names of the images a search finds (asserting exit 0) */
async function found(...filters: string[]): Promise<string[]> {
  return json<Search>(await images('search', ...filters, '--json')).images.map(i => i.name);
}

/** A guest path's host path inside a mounted root, following a link the guest way (never out to the host). */
async function guestFile(root: string, path: string): Promise<string> {
  const host = join(root, path);
  const st = await lstat(host);
  if (!st.isSymbolicLink()) return host;
  const target = await readlink(host);
  return target.startsWith('/') ? join(root, target) : join(root, path, '..', target);
}

/** Mount partition 1 (ext4 at 1 MiB) of a raw disk read-write, run fn on its root, then unmount and detach. */
async function editGuest(disk: string, fn: (root: string) => Promise<void>): Promise<void> {
  const dev = (await execa('losetup', ['--find', '--show', '--offset', String(2 ** 20), disk])).stdout.trim();
  const mnt = join(dir, 'mnt');
  await mkdir(mnt, { recursive: true });
  try {
    await execa('mount', ['-t', 'ext4', dev, mnt]);
    try { await fn(mnt); } finally { await execa('umount', [mnt]); }
  } finally {
    await execa('losetup', ['-d', dev]);
  }
}

describe('ferry images', () => {
  let debian: string, debianSum: string, copy: string;

  before(async () => {
    debian = await buildDebianGuest();
    debianSum = await sha256(debian);
    copy = join(dir, 'bookworm.raw');
    await execa('cp', ['--sparse=always', debian, copy]);
  });

  after(async () => { assert.equal(await sha256(debian), debianSum, 'the catalogued image is byte-for-byte unchanged'); });

  it('add: inspects the image and keeps it with its tags; FERRY_HOME is created private; the source is unchanged', async () => {
    const r = json<Summary>(await images('add', debian, '--name', 'deb12', '--tag', 'web', '--tag', 'prod', '--json'));
    assert.equal(r.name, 'deb12');
    assert.equal(r.source, debian);
    assert.deepEqual(r.tags, ['prod', 'web']);
    assert.equal(r.os.length, 1);
    assert.equal(r.os[0].type, 'linux');
    assert.equal(r.os[0].distro, 'debian');
    assert.equal(r.os[0].version, '12');
    assert.equal(r.os[0].firmware, 'bios');
    assert.ok(r.os[0].kernels.some(k => /^6\.1\.0-\d+-amd64$/.test(k)), `kernels: ${r.os[0].kernels.join(', ')}`);
    assert.equal(await sha256(debian), debianSum, 'images add wrote nothing to the source');
    assert.equal((await stat(home)).mode & 0o777, 0o700);
    await access(join(home, 'ferry.db'));
  });

  it('add: NAME defaults to the base name without extension; text output names it', async () => {
    const r = await images('add', copy);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.match(r.stdout, /^added bookworm \(.*bookworm\.raw\): debian 12/);
  });

  it('list: every image, current, in text and JSON', async () => {
    const l = json<{ images: Summary[] }>(await images('list', '--json'));
    assert.deepEqual(l.images.map(i => [i.name, i.state]), [['bookworm', 'current'], ['deb12', 'current']]);
    const t = await images('list');
    assert.equal(t.exitCode, 0);
    assert.match(t.stdout, /^NAME\s+STATE/);
    assert.match(t.stdout, /\ndeb12\s+current\s+debian 12\S* .*prod,web/);
  });

  it('show: the full report, not inspected again while nothing changed', async () => {
    const s = json<Summary & { refreshed: boolean; report: { operatingSystems: { distro: string }[]; format: string } }>(await images('show', 'deb12', '--json'));
    assert.equal(s.refreshed, false);
    assert.equal(s.report.format, 'raw');
    assert.equal(s.report.operatingSystems[0].distro, 'debian');
    const t = await images('show', 'deb12');
    assert.equal(t.exitCode, 0, t.stderr);
    assert.match(t.stdout, /^deb12: /);
    assert.match(t.stdout, /kernel 6\.1\.0-/);
    assert.doesNotMatch(t.stderr, /inspecting it again/);
  });

  it('search: each filter alone', async () => {
    const both = ['bookworm', 'deb12'];
    const cases: [string[], string[]][] = [
      [[], both],
      [['--os', 'linux'], both], [['--os', 'windows'], []],
      [['--distro', 'debian'], both], [['--distro', 'Debian'], both], [['--distro', 'ubuntu'], []],
      [['--version', '>=12'], both], [['--version', '12'], both], [['--version', '=12'], both],
      [['--version', '<=12'], both], [['--version', '<13'], both], [['--version', '>11'], both],
      [['--version', '<12'], []], [['--version', '>12'], []], [['--version', '>=13'], []], [['--version', '=1'], []],
      [['--version', '!=12'], []], [['--version', '!=11'], both],
      [['--kernel', '>=6.1'], both], [['--kernel', '=6.1'], both], [['--kernel', '<6.2'], both], [['--kernel', '>=6'], both],
      [['--kernel', '>6.1'], []], [['--kernel', '<6.1'], []], [['--kernel', '>=6.2'], []],
      [['--has-driver', 'virtio_blk'], both], [['--has-driver', 'virtio-net'], both], [['--has-driver', 'e1000'], both],
      [['--has-driver', 'no_such_driver'], []],
      [['--firmware', 'bios'], both], [['--firmware', 'uefi'], []],
      [['--tag', 'web'], ['deb12']], [['--tag', 'nope'], []],
    ];
    for (const [filters, want] of cases) assert.deepEqual(await found(...filters), want, `search ${filters.join(' ')}`);
  });

  it('search: filters combine with AND', async () => {
    const all = ['--os', 'linux', '--distro', 'debian', '--version', '>=12', '--kernel', '>=6.1', '--has-driver', 'virtio_blk', '--firmware', 'bios', '--tag', 'web'];
    assert.deepEqual(await found(...all), ['deb12']);
    // each one filter that fails spoils the whole search
    assert.deepEqual(await found(...all, '--tag', 'nope'), []);
    assert.deepEqual(await found('--distro', 'debian', '--firmware', 'uefi'), []);
    assert.deepEqual(await found('--os', 'linux', '--version', '>=13'), []);
    assert.deepEqual(await found('--has-driver', 'virtio_blk', '--has-driver', 'no_such_driver'), []);
    assert.deepEqual(await found('--tag', 'web', '--tag', 'prod'), ['deb12']);
    // a range: both comparisons must hold
    assert.deepEqual(await found('--version', '>=12', '--version', '<13'), ['bookworm', 'deb12']);
    assert.deepEqual(await found('--version', '>=11', '--version', '<12'), []);
    assert.deepEqual(await found('--kernel', '>=6.1', '--kernel', '<6.1'), []);
  });

  it('search: nothing found is exit 0 with empty output', async () => {
    const t = await images('search', '--distro', 'rhel');
    assert.equal(t.exitCode, 0, t.stderr);
    assert.equal(t.stdout, '');
    const j = json<Search>(await images('search', '--distro', 'rhel', '--json'));
    assert.deepEqual(j, { images: [], refreshed: [], missing: [], failed: [] });
  });

  it('a search with nothing changed inspects nothing again', async () => {
    const j = json<Search>(await images('search', '--json'));
    assert.deepEqual(j.refreshed, []);
    assert.deepEqual(j.images.map(i => i.name), ['bookworm', 'deb12']);
  });

  it('staleness: a file changed inside the image shows in the next search, with no refresh asked for', async () => {
    assert.deepEqual(await found('--version', '>=13'), []);
    await editGuest(copy, async root => {
      const osRelease = await guestFile(root, '/etc/os-release');
      const text = await readFile(osRelease, 'utf8');
      assert.match(text, /^VERSION_ID="?12"?$/m);
      await writeFile(osRelease, text.replace(/^VERSION_ID=.*$/m, 'VERSION_ID="13"'));
      await writeFile(await guestFile(root, '/etc/debian_version'), '13.1\n');
    });
    // list only looks: it says the report is out of date
    const l = json<{ images: Summary[] }>(await images('list', '--json'));
    assert.deepEqual(l.images.map(i => [i.name, i.state]), [['bookworm', 'changed'], ['deb12', 'current']]);

    const r = await images('search', '--version', '>=13', '--json');
    const j = json<Search>(r);
    assert.deepEqual(j.images.map(i => i.name), ['bookworm']);
    assert.equal(j.images[0].os[0].version, '13');
    assert.deepEqual(j.refreshed, ['bookworm'], 'only the changed image was inspected again');
    assert.match(r.stderr, /image 'bookworm' changed .*inspecting it again/);
    assert.deepEqual(await found('--version', '<13'), ['deb12']);
    assert.deepEqual(await found('--version', '=13.1'), ['bookworm']);
    // and now it is current again: nothing more to inspect
    assert.deepEqual(json<Search>(await images('search', '--json')).refreshed, []);
    const s = json<{ os: Os[]; refreshed: boolean }>(await images('show', 'bookworm', '--json'));
    assert.equal(s.refreshed, false);
    assert.equal(s.os[0].patchLevel, '13.1');
  });

  it('show inspects a changed image again first', async () => {
    await editGuest(copy, async root => {
      await writeFile(await guestFile(root, '/etc/debian_version'), '13.2\n');
    });
    const r = await images('show', 'bookworm', '--json');
    const s = json<{ os: Os[]; refreshed: boolean }>(r);
    assert.equal(s.refreshed, true);
    assert.equal(s.os[0].patchLevel, '13.2');
    assert.match(r.stderr, /inspecting it again/);
  });

  it('an image whose file vanished is reported missing, not answered from its old report', async () => {
    await rm(copy);
    const r = await images('search', '--json');
    const j = json<Search>(r);
    assert.deepEqual(j.images.map(i => i.name), ['deb12']);
    assert.deepEqual(j.missing.map(m => m.name), ['bookworm']);
    assert.match(r.stderr, /bookworm.*missing/);
    // a filter the old report would have matched finds nothing, and still reports the missing one
    const k = json<Search>(await images('search', '--version', '>=13', '--json'));
    assert.deepEqual(k.images, []);
    assert.deepEqual(k.missing.map(m => m.name), ['bookworm']);
    const s = await images('show', 'bookworm');
    assert.equal(s.exitCode, 3);
    assert.match(s.stderr, /IMAGE_SOURCE_MISSING.*bookworm\.raw/);
    const l = json<{ images: Summary[] }>(await images('list', '--json'));
    assert.deepEqual(l.images.map(i => [i.name, i.state]), [['bookworm', 'missing'], ['deb12', 'current']]);
  });

  it('rm forgets the image and leaves its file alone', async () => {
    const r = json<{ removed: string }>(await images('rm', 'bookworm', '--json'));
    assert.equal(r.removed, 'bookworm');
    const t = await images('rm', 'deb12');
    assert.equal(t.exitCode, 0, t.stderr);
    assert.match(t.stdout, /removed deb12/);
    assert.deepEqual(json<{ images: Summary[] }>(await images('list', '--json')).images, []);
    assert.equal(await sha256(debian), debianSum);
    // the name is free again
    assert.equal((await images('add', debian, '--name', 'deb12')).exitCode, 0);
  });

  describe('errors', () => {
    it('unknown name: IMAGE_NOT_FOUND, exit 3, with the names there are', async () => {
      for (const cmd of ['show', 'rm']) {
        const r = await images(cmd, 'nope');
        assert.equal(r.exitCode, 3, `${cmd}: ${r.stderr}`);
        assert.match(r.stderr, /IMAGE_NOT_FOUND: .*'nope'.*deb12/);
      }
      const j = await images('show', 'nope', '--json');
      assert.equal(JSON.parse(j.stdout).code, 'IMAGE_NOT_FOUND');
      assert.deepEqual(JSON.parse(j.stdout).known, ['deb12']);
    });

    it('duplicate name: IMAGE_NAME_TAKEN, exit 2, and the catalog is unchanged', async () => {
      const r = await images('add', debian, '--name', 'deb12', '--tag', 'other');
      assert.equal(r.exitCode, 2);
      assert.match(r.stderr, /IMAGE_NAME_TAKEN: .*'deb12'/);
      const l = json<{ images: Summary[] }>(await images('list', '--json'));
      assert.deepEqual(l.images.map(i => [i.name, i.tags]), [['deb12', []]]);
    });

    it('bad filters: BAD_FILTER, exit 2, before anything is inspected', async () => {
      for (const f of [['--version', '>>1'], ['--kernel', '<='], ['--version', '=<12'], ['--os', 'solaris'], ['--firmware', 'coreboot']]) {
        const r = await images('search', ...f);
        assert.equal(r.exitCode, 2, `${f.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`BAD_FILTER: ${f[0]}`));
        assert.equal(r.stdout, '');
      }
    });

    it('a missing source: SOURCE_MISSING, exit 3, nothing added', async () => {
      const r = await images('add', join(dir, 'nope.raw'));
      assert.equal(r.exitCode, 3);
      assert.match(r.stderr, /SOURCE_MISSING/);
      assert.deepEqual(json<{ images: Summary[] }>(await images('list', '--json')).images.map(i => i.name), ['deb12']);
    });

    it('FERRY_HOME not writable: FERRY_HOME_NOT_WRITABLE, exit 8', async () => {
      // root writes through mode bits: a read-only file system and a path through a file are what stop it
      const ro = join(dir, 'ro');
      await mkdir(ro);
      await execa('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'ferrytest-ro', ro]);
      try {
        for (const h of [ro, join(ro, 'ferry')]) {
          const r = await ferry(['images', 'list'], { env: { FERRY_HOME: h } });
          assert.equal(r.exitCode, 8, `${h}: ${r.stderr}`);
          assert.match(r.stderr, new RegExp(`FERRY_HOME_NOT_WRITABLE: cannot keep the image catalog in ${h}`));
        }
      } finally {
        await execa('umount', [ro]);
      }
      const file = join(dir, 'a-file');
      await writeFile(file, 'x');
      const r = await ferry(['images', 'search', '--json'], { env: { FERRY_HOME: join(file, 'home') } });
      assert.equal(r.exitCode, 8, r.stderr);
      assert.equal(JSON.parse(r.stdout).code, 'FERRY_HOME_NOT_WRITABLE');
    });
  });

  describe('a network disk (nbd://)', () => {
    let served: string;
    before(async () => {
      served = join(dir, 'served.raw');
      await execa('cp', ['--sparse=always', debian, served]);
    });
    after(stopAllServers);

    it('is added, searched, seen to change through its identity, and reported when unreachable', async () => {
      const server = await startNbdkit({ file: served, exportName: 'netdeb' });
      const a = json<Summary>(await images('add', server.url, '--tag', 'net', '--json'));
      assert.equal(a.name, 'netdeb', 'NAME defaults to the export name');
      assert.equal(a.os[0].distro, 'debian');
      // unchanged: its identity (size, first MiB of the disk and of each partition) still matches
      const same = json<Search>(await images('search', '--tag', 'net', '--json'));
      assert.deepEqual(same.images.map(i => i.name), ['netdeb']);
      assert.deepEqual(same.refreshed, []);

      await editGuest(served, async root => {
        const osRelease = await guestFile(root, '/etc/os-release');
        await writeFile(osRelease, (await readFile(osRelease, 'utf8')).replace(/^VERSION_ID=.*$/m, 'VERSION_ID="13"'));
        await writeFile(await guestFile(root, '/etc/debian_version'), '13.1\n');
      });
      const changed = json<Search>(await images('search', '--tag', 'net', '--version', '>=13', '--json'));
      assert.deepEqual(changed.images.map(i => i.name), ['netdeb']);
      assert.deepEqual(changed.refreshed, ['netdeb']);

      await server.stop();
      const r = await images('search', '--tag', 'net', '--json');
      const gone = json<Search>(r);
      assert.deepEqual(gone.images, [], 'an unreachable disk is not answered from its old report');
      assert.deepEqual(gone.failed.map(f => f.name), ['netdeb']);
      assert.match(r.stderr, /netdeb' cannot be inspected now: SOURCE_UNREACHABLE/);
      assert.equal((await images('rm', 'netdeb')).exitCode, 0);
    });
  });
});
