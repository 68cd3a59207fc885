// The substitute-file cache (`ferry drivers`): import of real container
// formats made here with their own tools (dpkg-deb, rpmbuild, xorriso, gcab,
// bsdtar) holding real kernel modules and real PE files with version
// resources (mingw windres + ld); idempotent re-import, list/show filters,
// verify on a damaged object, gc by least recent use with pins, and the rule
// choosing among imported HALs. The store lives in a temp dir.
import assert from 'node:assert/strict';
import { describe, it, before } from 'node:test';
import { chmod, copyFile, mkdir, readdir, readFile, writeFile, open, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { ferry, guardMachine, sha256, tempDir, type FerryRun } from './support/harness.js';
import { buildPe } from './support/pe.js';
import { DriverStore, type DriverFile } from '../src/drivers/store.js';
import { chooseFile, missingDriverError } from '../src/drivers/select.js';

guardMachine();
const dir = await tempDir('ferrytest-drivers-');
const db = join(dir, 'db');
const env = { FERRY_DRIVERS_DB: db };
const drivers = (...args: string[]) => ferry(['drivers', ...args], { env });
const json = <T>(r: FerryRun): T => {
  assert.equal(r.exitCode, 0, `ferry failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};
interface Stored extends DriverFile { status: 'new' | 'present' | 'merged' }
interface Imported { kind: string; container: string; containerVersion?: string; stored: Stored[]; ignored: number; notes: string[] }
const importOne = async (...args: string[]) => json<Imported[]>(await drivers('import', ...args, '--json'))[0];
const list = async (...args: string[]) => json<DriverFile[]>(await drivers('list', ...args, '--json'));
const objectCount = async () => {
  let n = 0;
  for (const d of await readdir(join(db, 'objects'))) n += (await readdir(join(db, 'objects', d))).length;
  return n;
};


/** A real kernel module: one of the host's if it has any, else an ELF object made here. */
async function realModule(out: string): Promise<void> {
  const kernels = existsSync('/lib/modules') ? await readdir('/lib/modules') : [];
  for (const k of kernels) {
    for (const name of ['virtio_blk.ko', 'virtio_blk.ko.xz', 'virtio_blk.ko.zst']) {
      const p = join('/lib/modules', k, 'kernel/drivers/block', name);
      if (name.endsWith('.ko') && existsSync(p)) { await copyFile(p, out); return; }
    }
  }
  await writeFile(`${out}.c`, 'int virtio_blk_probe(void) { return 0; }\n');
  await execa('gcc', ['-c', '-o', out, `${out}.c`]);
}

const KVER_DEB = '6.1.0-27-cloud-amd64';
const KVER_RPM = '5.14.0-427.13.1.el9_4.x86_64';
const paths: Record<string, string> = {};

before(async () => {
  const work = join(dir, 'src');
  await mkdir(work);

  // --- a Debian kernel package: control + a module + the changelog naming bookworm
  const deb = join(work, 'deb');
  const modDir = join(deb, 'lib/modules', KVER_DEB, 'kernel/drivers/block');
  await mkdir(join(deb, 'DEBIAN'), { recursive: true });
  await mkdir(modDir, { recursive: true });
  await realModule(join(modDir, 'virtio_blk.ko'));
  await mkdir(join(deb, 'lib/modules', KVER_DEB, 'kernel/drivers/net'), { recursive: true });
  await writeFile(join(deb, 'lib/modules', KVER_DEB, 'kernel/drivers/net/virtio-net.ko'), (await readFile(join(modDir, 'virtio_blk.ko'))).subarray(0, 4096));
  await writeFile(join(deb, 'lib/modules', KVER_DEB, 'modules.order'), 'kernel/drivers/block/virtio_blk.ko\n');
  const pkg = `linux-image-${KVER_DEB}`;
  await mkdir(join(deb, 'usr/share/doc', pkg), { recursive: true });
  await writeFile(join(deb, 'usr/share/doc', pkg, 'changelog.gz'), gzipSync(`linux-signed-amd64 (6.1.115+1) bookworm-security; urgency=high\n\n  * test\n`));
  await writeFile(join(deb, 'DEBIAN/control'), `Package: ${pkg}\nVersion: 6.1.115-1\nArchitecture: amd64\nMaintainer: Ferry tests <ferry@example.invalid>\nDescription: kernel modules for Ferry tests\n`);
  paths.deb = join(work, `${pkg}_6.1.115-1_amd64.deb`);
  await execa('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', deb, paths.deb]);

  // --- an rpm kernel package built with rpmbuild, the module xz-compressed as RHEL ships it
  const rb = join(work, 'rpmbuild');
  await mkdir(join(rb, 'SOURCES'), { recursive: true });
  await mkdir(join(rb, 'SPECS'), { recursive: true });
  await copyFile(join(modDir, 'virtio_blk.ko'), join(rb, 'SOURCES', 'virtio_blk.ko'));
  await execa('xz', ['-k', join(rb, 'SOURCES', 'virtio_blk.ko')]);
  await writeFile(join(rb, 'SPECS', 'k.spec'), `Name: kernel-modules-core
Version: 5.14.0
Release: 427.13.1.el9_4
Summary: kernel modules for Ferry tests
License: GPLv2
Source0: virtio_blk.ko.xz
%description
test
%install
mkdir -p %{buildroot}/lib/modules/${KVER_RPM}/kernel/drivers/block
cp %{SOURCE0} %{buildroot}/lib/modules/${KVER_RPM}/kernel/drivers/block/
%files
/lib/modules/${KVER_RPM}/kernel/drivers/block/virtio_blk.ko.xz
`);
  await execa('rpmbuild', ['-bb', '--quiet', '--target', 'x86_64', '--define', `_topdir ${rb}`,
    '--define', 'debug_package %{nil}', '--define', '__os_install_post %{nil}', '--define', '_build_id_links none', join(rb, 'SPECS', 'k.spec')]);
  paths.rpm = join(rb, 'RPMS', 'x86_64', 'kernel-modules-core-5.14.0-427.13.1.el9_4.x86_64.rpm');

  // --- a virtio-win style ISO: <driver>/<os>/<arch>/<file>, one .inf in UTF-16 as Windows writes them
  const iso = join(work, 'iso');
  for (const [drv, os, arch, ver, utf16] of [['viostor', '2k3', 'x86', '52.3.103.18100', true], ['viostor', 'w10', 'amd64', '100.94.104.24600', false]] as const) {
    const d = join(iso, drv, os, arch);
    await mkdir(d, { recursive: true });
    await buildPe(join(d, `${drv}.sys`), `${drv}.sys`, '5.2.3790.1', arch === 'x86' ? 'i686' : 'x86_64');
    const inf = `[Version]\r\nSignature="$WINDOWS NT$"\r\nClass=SCSIAdapter\r\nDriverVer = 06/10/2020,${ver}\r\n`;
    await writeFile(join(d, `${drv}.inf`), utf16 ? Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(inf, 'utf16le')]) : inf);
    await writeFile(join(d, `${drv}.cat`), `catalog of ${drv} ${os}\n`);
  }
  await mkdir(join(iso, 'NetKVM', '2k3', 'x86'), { recursive: true });
  await buildPe(join(iso, 'NetKVM', '2k3', 'x86', 'netkvm.sys'), 'netkvm.sys', '61.77.104.10000');
  await writeFile(join(iso, 'README.txt'), 'not a driver\n');
  paths.iso = join(work, 'virtio-win-0.1.189.iso');
  await execa('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'virtio-win-0.1.189', '-o', paths.iso, iso]);

  // --- Windows Server 2003 media: RTM as a tar, SP1 as a directory of compressed *.dl_ files, SP2 as a CAB
  const pe = join(work, 'pe');
  await mkdir(pe);
  const rtm = join(pe, 'rtm', 'i386');
  await mkdir(rtm, { recursive: true });
  await buildPe(join(rtm, 'halmacpi.dll'), 'halmacpi.dll', '5.2.3790.0');
  await buildPe(join(rtm, 'halacpi.dll'), 'halacpi.dll', '5.2.3790.0');
  paths.tar = join(work, 'w2003-rtm-x86.tar.gz');
  await execa('bsdtar', ['-czf', paths.tar, '-C', join(pe, 'rtm'), 'i386']);
  paths.zip = join(work, 'w2003-rtm-x86.zip');
  await execa('bsdtar', ['-a', '-cf', paths.zip, '-C', join(pe, 'rtm'), 'i386']);

  const sp1 = join(work, 'w2003-media', 'I386');
  await mkdir(sp1, { recursive: true });
  await buildPe(join(pe, 'halmacpi.dll'), 'halmacpi.dll', '5.2.3790.1830');
  // on the medium hal.dll is stored as a one-file cabinet named *.dl_ (what makecab makes)
  await execa('gcab', ['-c', '-z', '-n', join(sp1, 'HALMACPI.DL_'), join(pe, 'halmacpi.dll')]);
  await buildPe(join(pe, 'ntkrpamp.exe'), 'ntkrpamp.exe', '5.2.3790.1830');
  await execa('gcab', ['-c', '-z', '-n', join(sp1, 'NTKRPAMP.EX_'), join(pe, 'ntkrpamp.exe')]);
  paths.dir = join(work, 'w2003-media');

  const sp2 = join(pe, 'sp2');
  await mkdir(sp2);
  await buildPe(join(sp2, 'halmacpi.dll'), 'halmacpi.dll', '5.2.3790.3959');
  // ntkrpamp.exe unchanged since SP1: the same bytes as on the SP1 medium
  await copyFile(join(pe, 'ntkrpamp.exe'), join(sp2, 'ntkrpamp.exe'));
  // a hal.dll whose version resource says it is the ACPI APIC uniprocessor HAL
  await buildPe(join(sp2, 'hal.dll'), 'halaacpi.dll', '5.2.3790.3959');
  paths.cab = join(work, 'WindowsServer2003-SP2-x86.cab');
  await execa('gcab', ['-c', '-z', '-n', paths.cab, join(sp2, 'halmacpi.dll'), join(sp2, 'ntkrpamp.exe'), join(sp2, 'hal.dll')]);
});

describe('ferry drivers import', () => {
  it('imports a Debian package: module names, kernel release, flavour, arch, release from the changelog', async () => {
    const r = await importOne(paths.deb);
    assert.equal(r.kind, 'deb');
    assert.equal(r.container, `linux-image-${KVER_DEB}`);
    assert.equal(r.containerVersion, '6.1.115-1');
    const byName = Object.fromEntries(r.stored.map(f => [f.component, f]));
    assert.deepEqual(Object.keys(byName).sort(), ['virtio_blk', 'virtio_net']);
    const m = byName.virtio_blk;
    assert.equal(m.status, 'new');
    assert.equal(m.osFamily, 'linux');
    assert.equal(m.version, KVER_DEB);
    assert.equal(m.variant, 'cloud-amd64');
    assert.equal(m.arch, 'amd64');
    assert.equal(m.osRelease, 'debian 12');
    assert.equal(m.pathInContainer, `lib/modules/${KVER_DEB}/kernel/drivers/block/virtio_blk.ko`);
    assert.equal(m.sha256, await sha256(join(dir, 'src/deb/lib/modules', KVER_DEB, 'kernel/drivers/block/virtio_blk.ko')));
    assert.ok(r.ignored >= 2, 'modules.order and the changelog are not drivers');
  });

  it('stores objects read-only under objects/<2 hex>/<sha256>', async () => {
    const [m] = await list('--component', 'virtio_blk', '--os', 'debian 12');
    const obj = join(db, 'objects', m.sha256.slice(0, 2), m.sha256);
    assert.equal((await stat(obj)).mode & 0o777, 0o444);
    assert.equal(await sha256(obj), m.sha256);
    assert.deepEqual(await readdir(join(db, 'tmp')), [], 'no scratch left in the store');
  });

  it('imports an rpm package built with rpmbuild (xz module, RHEL release from .el9_4)', async () => {
    const r = await importOne(paths.rpm);
    assert.equal(r.kind, 'rpm');
    assert.equal(r.container, 'kernel-modules-core');
    assert.equal(r.containerVersion, '5.14.0-427.13.1.el9_4');
    assert.equal(r.stored.length, 1);
    const m = r.stored[0];
    assert.deepEqual([m.component, m.version, m.variant, m.arch, m.osRelease], ['virtio_blk', KVER_RPM, 'x86_64', 'amd64', 'rhel 9.4']);
    assert.match(m.pathInContainer, /virtio_blk\.ko\.xz$/);
  });

  it('imports a virtio-win ISO: release from the folder, version from DriverVer (UTF-16 .inf too) or the PE resource', async () => {
    const r = await importOne(paths.iso);
    assert.equal(r.kind, 'iso');
    const got = r.stored.map(f => `${f.component} ${f.osRelease} ${f.arch} ${f.version}`).sort();
    assert.deepEqual(got, [
      'netkvm.sys 2003 x86 61.77.104.10000',
      'viostor.cat 10 amd64 100.94.104.24600',
      'viostor.cat 2003 x86 52.3.103.18100',
      'viostor.inf 10 amd64 100.94.104.24600',
      'viostor.inf 2003 x86 52.3.103.18100',
      'viostor.sys 10 amd64 100.94.104.24600',
      'viostor.sys 2003 x86 52.3.103.18100',
    ]);
    assert.ok(r.stored.every(f => f.osFamily === 'windows' && f.patchLevels.length === 0));
    assert.equal(r.ignored, 1);
  });

  it('imports HALs and kernels from a tar, a zip, a directory of *.dl_ cabinets and a CAB', async () => {
    const tar = await importOne(paths.tar);
    assert.equal(tar.kind, 'archive');
    assert.deepEqual(tar.stored.map(f => `${f.component} ${f.variant} ${f.version} ${f.osRelease} ${f.arch} ${f.patchLevels}`).sort(), [
      'hal.dll halacpi.dll 5.2.3790.0 2003 x86 RTM',
      'hal.dll halmacpi.dll 5.2.3790.0 2003 x86 RTM',
    ]);
    const zip = await importOne(paths.zip);
    assert.deepEqual(zip.stored.map(f => f.status), ['new', 'new'], 'another container: new rows…');
    assert.deepEqual(zip.stored.map(f => f.sha256).sort(), tar.stored.map(f => f.sha256).sort(), '…for the same bytes');

    const before = await objectCount();
    const dirImport = await importOne(paths.dir, '--patch-level', 'SP1', '--os-release', '2003');
    assert.equal(dirImport.kind, 'dir');
    assert.deepEqual(dirImport.stored.map(f => `${f.component} ${f.variant} ${f.version} ${f.patchLevels} ${f.pathInContainer}`).sort(), [
      'hal.dll halmacpi.dll 5.2.3790.1830 SP1 I386/HALMACPI.DL_/halmacpi.dll',
      'ntoskrnl.exe ntkrpamp.exe 5.2.3790.1830 SP1 I386/NTKRPAMP.EX_/ntkrpamp.exe',
    ]);
    assert.equal(await objectCount(), before + 2);

    const cab = await importOne(paths.cab);
    assert.equal(cab.kind, 'cab');
    assert.deepEqual(cab.stored.map(f => `${f.component} ${f.variant} ${f.version} ${f.patchLevels}`).sort(), [
      'hal.dll halaacpi.dll 5.2.3790.3959 SP2',   // named hal.dll, the version resource tells the variant
      'hal.dll halmacpi.dll 5.2.3790.3959 SP2',
      'ntoskrnl.exe ntkrpamp.exe 5.2.3790.1830 SP2',
    ]);
    assert.equal(await objectCount(), before + 4, 'the SP1 kernel is the same file: stored once');
  });

  it('is idempotent: importing every container again stores nothing new', async () => {
    const objects = await objectCount();
    const rows = (await list()).length;
    const r = json<Imported[]>(await drivers('import', paths.deb, paths.rpm, paths.iso, paths.tar, paths.cab, '--json'));
    assert.ok(r.flatMap(x => x.stored).every(f => f.status === 'present'));
    const again = await importOne(paths.dir, '--patch-level', 'SP1', '--os-release', '2003');
    assert.ok(again.stored.every(f => f.status === 'present'));
    assert.equal(await objectCount(), objects);
    assert.equal((await list()).length, rows);
    const text = await drivers('import', paths.rpm);
    assert.equal(text.exitCode, 0);
    assert.match(text.stdout, /0 new, 1 already present/);
    assert.match(text.stdout, /present \d+ +virtio_blk 5\.14\.0-427/);
  });

  it('a new patch level for the same file is merged into its row', async () => {
    const r = await importOne(paths.cab, '--patch-level', 'SP2a');
    assert.ok(r.stored.every(f => f.status === 'merged' && f.patchLevels.includes('SP2') && f.patchLevels.includes('SP2a')));
  });

  it('refuses what is not a container, with a typed error', async () => {
    const junk = join(dir, 'notes.txt');
    await writeFile(junk, 'hello');
    const r = await drivers('import', junk);
    assert.equal(r.exitCode, 3);
    assert.match(r.stderr, /CONTAINER_UNREADABLE: cannot import .*notes\.txt/);
    const gone = await drivers('import', join(dir, 'nope.deb'));
    assert.equal(gone.exitCode, 3);
    assert.match(gone.stderr, /does not exist/);
  });
});

describe('ferry drivers list and show', () => {
  it('filters by OS family, release, component and arch', async () => {
    const linux = await list('--os', 'linux');
    assert.deepEqual([...new Set(linux.map(f => f.component))].sort(), ['virtio_blk', 'virtio_net']);
    assert.deepEqual((await list('--os', 'rhel')).map(f => f.version), [KVER_RPM]);
    assert.deepEqual((await list('--component', 'virtio-blk', '--kernel', KVER_DEB)).map(f => f.container), [`linux-image-${KVER_DEB}`]);
    const hals = await list('--component', 'hal.dll', '--os', '2003');
    assert.equal(hals.length, 2 + 2 + 1 + 2); // tar, zip, dir, cab
    assert.deepEqual((await list('--component', 'viostor.sys', '--arch', 'x86_64')).map(f => f.osRelease), ['10']);
    assert.deepEqual(await list('--os', 'xp'), []);
    const text = await drivers('list', '--os', 'windows', '--component', 'ntoskrnl.exe');
    assert.match(text.stdout, /^ID +COMPONENT +OS +VERSION/);
    assert.match(text.stdout, /ntoskrnl\.exe +windows 2003 +5\.2\.3790\.1830 +ntkrpamp\.exe +x86/);
  });

  it('shows one file with its object path; an unknown id is a typed error', async () => {
    const [m] = await list('--os', 'rhel');
    const s = json<DriverFile & { object: string }>(await drivers('show', String(m.id), '--json'));
    assert.equal(s.sha256, m.sha256);
    assert.equal(s.object, join(db, 'objects', m.sha256.slice(0, 2), m.sha256));
    const text = await drivers('show', String(m.id));
    assert.match(text.stdout, /container: +kernel-modules-core 5\.14\.0-427\.13\.1\.el9_4/);
    const none = await drivers('show', '99999');
    assert.equal(none.exitCode, 2);
    assert.match(none.stderr, /DRIVER_NOT_FOUND/);
  });
});

describe('choosing among imported files', () => {
  it('the rule picks by patch level and kind; a missing one names what to import', () => {
    const store = DriverStore.open(db);
    try {
      const hals = store.find({ component: 'hal.dll', osFamily: 'windows' });
      const want = { component: 'hal.dll', osFamily: 'windows' as const, osRelease: '2003', arch: 'x86', variant: { acpi: true, multiprocessor: true } };
      assert.equal(chooseFile(hals, { ...want, patchLevel: 'Service Pack 1' })?.version, '5.2.3790.1830');
      assert.equal(chooseFile(hals, { ...want, patchLevel: 'SP2' })?.version, '5.2.3790.3959');
      assert.equal(chooseFile(hals, want)?.version, '5.2.3790.0');
      assert.equal(chooseFile(hals, { ...want, patchLevel: 'SP1', variant: { acpi: true, apic: true, multiprocessor: false } }), undefined);
      const mod = chooseFile(store.find({ component: 'virtio_blk' }), { component: 'virtio_blk', osFamily: 'linux', kernel: KVER_RPM, arch: 'x86_64' });
      assert.equal(mod?.container, 'kernel-modules-core');
      const e = missingDriverError({ component: 'virtio_scsi', osFamily: 'linux', kernel: '6.1.0-50-amd64', arch: 'amd64' },
        { package: 'linux-image-6.1.0-50-amd64', packageVersion: '6.1.158-1' });
      assert.equal(e.code, 'DRIVER_MISSING');
      assert.equal(e.exitCode, 5);
      assert.match(e.message, /import the Debian package linux-image-6\.1\.0-50-amd64 \(version 6\.1\.158-1\)/);
    } finally { store.close(); }
  });
});

describe('ferry drivers verify and gc', () => {
  it('verify passes on an intact store, then names the file whose object was damaged', async () => {
    const ok = json<{ files: number; damaged: unknown[] }>(await drivers('verify', '--json'));
    assert.ok(ok.files > 10);
    assert.deepEqual(ok.damaged, []);
    const [m] = await list('--os', 'rhel');
    const obj = join(db, 'objects', m.sha256.slice(0, 2), m.sha256);
    await chmod(obj, 0o644);
    const fh = await open(obj, 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 100);
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, 100);
    await fh.close();
    const bad = await drivers('verify');
    assert.equal(bad.exitCode, 6);
    assert.match(bad.stdout, new RegExp(`damaged ${m.id}: object .*${m.sha256} is damaged`));
    // re-importing does not hide damage: the object exists, so only verify tells; remove it and import again
    const store = DriverStore.open(db);
    try {
      assert.deepEqual(store.verify().map(d => d.id), [m.id]);
    } finally { store.close(); }
  });

  it('gc evicts least recently used unpinned files above the limit and keeps pinned ones', async () => {
    const store = DriverStore.open(db);
    let hals: DriverFile[], total: number;
    try {
      hals = store.find({ component: 'hal.dll', osRelease: '2003' });
      // use everything except the RTM halacpi, oldest first, so that one is the least recently used
      for (const f of store.find()) if (f.variant !== 'halacpi.dll') store.markUsed(f.id);
      total = store.totalSize();
    } finally { store.close(); }
    const rtmAcpi = hals.filter(f => f.variant === 'halacpi.dll');
    const pinned = (await list('--os', 'rhel'))[0];
    const size = rtmAcpi[0].size;
    // a limit just below the total: evicting the least recently used object is enough
    const r = json<{ evicted: DriverFile[]; size: number }>(await drivers('gc', '--max-size', String(total - 1), '--pin', String(pinned.id), '--json'));
    assert.deepEqual(r.evicted.map(f => f.id).sort(), rtmAcpi.map(f => f.id).sort(), 'both rows of the one object go');
    assert.equal(r.size, total - size);
    assert.ok(!existsSync(join(db, 'objects', rtmAcpi[0].sha256.slice(0, 2), rtmAcpi[0].sha256)));
    // a limit of zero evicts everything that is not pinned
    const all = json<{ evicted: DriverFile[]; size: number }>(await drivers('gc', '--max-size', '0', '--json'));
    assert.ok(all.evicted.length > 5);
    const left = await list();
    assert.deepEqual(left.map(f => f.id), [pinned.id], 'only the pinned file stays');
    assert.equal(all.size, pinned.size);
    const text = await drivers('gc', '--max-size', '0');
    assert.match(text.stdout, /the rest is pinned/);
    assert.equal((await drivers('gc', '--max-size', 'lots')).exitCode, 2);
  });
});

// The full Debian kernel package (70 MB, 4000 modules, ~400 MB stored, ~15 s):
// run with FERRY_TEST_KERNEL_DEB=/path/to/linux-image-….deb.
describe('a real Debian kernel package', { skip: !process.env.FERRY_TEST_KERNEL_DEB && 'set FERRY_TEST_KERNEL_DEB to a linux-image .deb' }, () => {
  it('imports every module of it with the release from its changelog', async () => {
    const deb = process.env.FERRY_TEST_KERNEL_DEB!;
    const own = { FERRY_DRIVERS_DB: join(dir, 'big') };
    const r = await ferry(['drivers', 'import', deb, '--json'], { env: own });
    assert.equal(r.exitCode, 0, r.stderr);
    const [imp] = JSON.parse(r.stdout) as Imported[];
    assert.ok(imp.stored.length > 1000);
    const blk = imp.stored.find(f => f.component === 'virtio_blk')!;
    assert.equal(blk.osRelease, 'debian 12');
    assert.equal(`linux-image-${blk.version}`, imp.container);
    assert.equal(basename(deb).split('_')[0], imp.container);
  });
});
