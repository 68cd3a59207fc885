// Static inspection of Windows guests, on phony disks built by
// test/fixtures/build-phony-windows.sh (NTFS by mkntfs, hives by hivex, HAL and
// kernel as resource-only PE files): Windows Server 2003 SP2 x86 (HAL
// halmacpi.dll, PAE multiprocessor kernel), Windows Server 2019 x64 (UBR,
// Select\Current = 2 over a stale ControlSet001) and a 2019 copy whose
// SOFTWARE hive is cut in half. Every expected value comes from the script's
// manifest. First the module on a read-only ntfs-3g mount, then the CLI.
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { findWindowsRoot, inspectWindows } from '../src/inspect/windows/index.js';
import type { InspectReport, WindowsOs } from '../src/inspect/report.js';
import { buildPhonyWindows, type PhonyWindows, type PhonyWindowsDisk } from './support/fixtures.js';
import { ferry, guardMachine, sha256, sha256All, tempDir } from './support/harness.js';

guardMachine();
const work = await tempDir('ferry-winspect-');
let fx: PhonyWindows;
const sums = new Map<string, string>();

before(async () => {
  fx = await buildPhonyWindows();
  for (const d of [fx.win2003, fx.win2019, fx.damaged]) {
    sums.set(d.image, await sha256(d.image));
    assert.equal(sums.get(d.image), d.sha256, `${d.image} is the image the manifest describes`);
  }
});
after(async () => {
  assert.deepEqual(await sha256All([...sums.keys()]), Object.fromEntries(sums), 'no image was ever written');
});

/** mount one partition of a disk image read-only (loop + ntfs-3g), run fn, and release both */
async function withMounted<T>(disk: PhonyWindowsDisk, partition: number, fn: (dir: string) => Promise<T>): Promise<T> {
  const fs = disk.fileSystems.find(f => f.partition === partition)!;
  const loop = String((await execa('losetup', ['--read-only', '--find', '--show',
    '--offset', String(fs.start), '--sizelimit', String(fs.size), disk.image])).stdout).trim();
  try {
    const dir = await mkdtemp(join(work, 'mnt-'));
    await execa('mount', ['-t', 'ntfs-3g', '-o', 'ro', loop, dir]);
    try {
      return await fn(dir);
    } finally {
      // ntfs-3g may still be settling right after the mount; retry briefly
      for (let i = 0; ; i++) {
        const r = await execa('umount', [dir], { reject: false });
        if (r.exitCode === 0) break;
        if (i >= 20) throw new Error(`umount ${dir}: ${r.stderr}`);
        await new Promise(res => setTimeout(res, 100));
      }
      await rmdir(dir);
    }
  } finally {
    await execa('losetup', ['-d', loop]);
  }
}

const byGuid = (a: { guid: string }, b: { guid: string }) => a.guid.localeCompare(b.guid);

/** the report compared with the manifest's expectation, NIC order aside */
function assertOs(os: WindowsOs, expect: PhonyWindowsDisk['expect'], errors: WindowsOs['errors'] = []): void {
  const { nics, ...rest } = os;
  const { nics: wantNics, ...wantRest } = expect;
  assert.deepEqual(rest, { ...wantRest, errors });
  assert.deepEqual([...nics].sort(byGuid), [...(wantNics as WindowsOs['nics'])].sort(byGuid));
}

describe('phony Windows: the inspection module on a read-only mount', () => {
  it('phony Windows Server 2003 SP2: version, HAL halmacpi.dll, PAE MP kernel, drivers, CriticalDeviceDatabase, NICs, apps', async () => {
    const d = fx.win2003;
    await withMounted(d, d.expect.partition, async dir => {
      const root = await findWindowsRoot(dir);
      assert.equal(root, d.expect.systemRoot, 'found case-insensitively as the guest spells it');
      const os = await inspectWindows(dir, root!, d.expect.partition, work);
      assertOs(os, d.expect);
      // the points this disk exists for, spelled out
      assert.equal(os.patchLevel, 'Service Pack 2');
      assert.equal(os.hal?.variant, 'halmacpi.dll');
      assert.equal(os.hal?.how, 'version-resource');
      assert.deepEqual([os.kernel?.variant, os.kernel?.pae, os.kernel?.multiprocessor], ['ntkrpamp.exe', true, true]);
      assert.ok(os.criticalDevices.some(c => c.id === 'pci#ven_8086&dev_7111' && c.service === 'intelide'));
      assert.ok(!os.bootStorageDrivers.some(s => s.name === 'vmscsi'), 'vmscsi has Start 3: not a boot driver');
    });
  });

  it('phony Windows Server 2019: UBR patch level, 10.0, the control set Select\\Current names, both Uninstall views', async () => {
    const d = fx.win2019;
    await withMounted(d, d.expect.partition, async dir => {
      const root = await findWindowsRoot(dir);
      assert.equal(root, d.expect.systemRoot);
      const os = await inspectWindows(dir, root!, d.expect.partition, work);
      assertOs(os, d.expect);
      assert.equal(os.patchLevel, '17763.5830');
      assert.notEqual(os.hostname, d.staleHostname, 'ControlSet001 is stale; Select\\Current is 2');
      assert.ok(os.applications.some(a => a.name.startsWith('Notepad++')), 'the 32-bit view (Wow6432Node) is read');
      assert.equal(os.kernel?.pae, undefined, 'no PAE question for a 64-bit kernel');
    });
  });

  it('phony Windows System Reserved partition holds no system root', async () => {
    const d = fx.win2019;
    await withMounted(d, 1, async dir => assert.equal(await findWindowsRoot(dir), undefined));
  });

  it('phony Windows with SOFTWARE cut in half: HIVE_CORRUPT, and everything from SYSTEM and the PE files still read', async () => {
    const d = fx.damaged;
    await withMounted(d, d.expect.partition, async dir => {
      const os = await inspectWindows(dir, (await findWindowsRoot(dir))!, d.expect.partition, work);
      assert.equal(os.errors.length, 1, JSON.stringify(os.errors));
      assert.equal(os.errors[0].code, 'HIVE_CORRUPT');
      assert.match(os.errors[0].message, new RegExp(d.damagedHive!));
      assertOs(os, d.expect, os.errors);
      assert.equal(os.productName, undefined);
    });
  });

  it('phony Windows without a SYSTEM hive: HIVE_MISSING, and SOFTWARE, HAL and kernel still read', async () => {
    const d = fx.win2003;
    // a copy of the guest's tree with SOFTWARE, HAL and kernels but no SYSTEM
    const tree = await mkdtemp(join(work, 'nosystem-'));
    await withMounted(d, d.expect.partition, async dir => {
      const sys32 = join('WINDOWS', 'system32');
      await mkdir(join(tree, sys32, 'config'), { recursive: true });
      for (const f of ['config/SOFTWARE', 'hal.dll', 'ntoskrnl.exe', 'ntkrnlpa.exe']) await copyFile(join(dir, sys32, f), join(tree, sys32, f));
      await copyFile(join(dir, 'boot.ini'), join(tree, 'boot.ini'));
    });
    assert.equal(await findWindowsRoot(tree), undefined, 'no SYSTEM hive: not a Windows root');
    const os = await inspectWindows(tree, '/WINDOWS', 1, work);
    assert.deepEqual(os.errors.map(e => e.code), ['HIVE_MISSING']);
    assert.match(os.errors[0].message, /SYSTEM/);
    assert.equal(os.productName, d.expect.productName);
    assert.equal(os.hostname, undefined);
    assert.deepEqual(os.services, []);
    assert.deepEqual(os.hal, d.expect.hal);
    assert.deepEqual(os.kernel, d.expect.kernel);
    assert.deepEqual(os.applications, d.expect.applications);
  });
});

describe('phony Windows through `ferry inspect`', () => {
  const inspectJson = async (d: PhonyWindowsDisk): Promise<InspectReport> => {
    const r = await ferry(['inspect', d.image, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    return JSON.parse(r.stdout) as InspectReport;
  };
  const checkFileSystems = (report: InspectReport, d: PhonyWindowsDisk) => {
    for (const want of d.fileSystems) {
      const got = report.fileSystems.find(f => f.partition === want.partition);
      assert.ok(got, `partition ${want.partition} reported`);
      assert.deepEqual({ type: got.type, label: got.label, uuid: got.uuid, start: got.start, size: got.size },
        { type: want.type, label: want.label, uuid: want.uuid, start: want.start, size: want.size });
    }
  };

  for (const name of ['win2003', 'win2019'] as const) {
    it(`phony Windows ${name}: --json reports the one Windows with every manifest value`, async () => {
      const d = fx[name];
      const report = await inspectJson(d);
      checkFileSystems(report, d);
      assert.equal(report.operatingSystems.length, 1);
      const os = report.operatingSystems[0];
      assert.equal(os.type, 'windows');
      assertOs(os as WindowsOs, d.expect);
    });
  }

  it('phony Windows: the text form names product and host name', async () => {
    for (const d of [fx.win2003, fx.win2019]) {
      const r = await ferry(['inspect', d.image]);
      assert.equal(r.exitCode, 0, r.stderr);
      assert.ok(r.stdout.includes(d.expect.productName), `product in:\n${r.stdout}`);
      assert.ok(r.stdout.includes(d.expect.hostname), `host name in:\n${r.stdout}`);
    }
  });

  it('phony Windows damaged disk: the report still comes, with a HIVE_CORRUPT entry for SOFTWARE', async () => {
    const d = fx.damaged;
    const report = await inspectJson(d);
    checkFileSystems(report, d);
    assert.equal(report.operatingSystems.length, 1);
    const os = report.operatingSystems[0] as WindowsOs;
    assert.equal(os.type, 'windows');
    assert.deepEqual(os.errors.map(e => e.code), ['HIVE_CORRUPT']);
    assert.match(os.errors[0].message, new RegExp(d.damagedHive!));
    assertOs(os, d.expect, os.errors);
  });
});
