// Re-fit a Windows guest to new hardware (issue "Re-fit the guest", Windows
// part), on the phony Windows disks (Server 2003 SP2 x86 with halmacpi and
// ntkrpamp, Server 2019 x64): a virtio-win-like ISO and Windows 2003 service
// pack cabinets made here with real PE files are imported into a temp
// drivers-db; `ferry reconfigure --overlay` and `ferry convert --profile` then
// re-fit the guest, and the result is read back without mounting anything:
// the overlay's partition is copied out with qemu-img, files taken out with
// ntfscat and the hives read with hivexget (not Ferry's hive parser). Templates and sources keep
// their sha256; a missing driver stops everything before a byte is written.
import assert from 'node:assert/strict';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { parseReg } from '../src/inspect/windows/hive.js';
import { normalizePatchLevel, storeReleases } from '../converters/windows/release.js';
import { regText } from '../converters/windows/registry.js';
import { toolServices } from '../converters/windows/tools.js';
import { buildPhonyWindows, type PhonyWindows, type PhonyWindowsDisk } from './support/fixtures.js';
import { ferry, guardMachine, sha256, sha256All, tempDir } from './support/harness.js';
import { buildPe } from './support/pe.js';

guardMachine();
const dir = await tempDir('ferrytest-refit-win-');
const SCSI = '{4D36E97B-E325-11CE-BFC1-08002BE10318}';


interface Stored { id: number; sha256: string; component: string; osRelease?: string; variant?: string; version: string; arch: string; patchLevels: string[]; pathInContainer: string }

/** the containers, built once: a virtio-win-like ISO and Windows Server 2003 SP1 / SP2 / "SP3" cabinets */
const media: Record<string, string> = {};
async function buildMedia(): Promise<void> {
  const src = join(dir, 'media');
  const iso = join(src, 'iso');
  const drivers: [string, string, string, string, 'i686' | 'x86_64'][] = [
    ['viostor', '2k3', 'x86', '52.3.103.18100', 'i686'],
    ['viostor', '2k19', 'amd64', '100.94.104.24600', 'x86_64'],
    ['viostor', 'w10', 'amd64', '100.94.104.24500', 'x86_64'],
    ['NetKVM', '2k3', 'x86', '52.77.104.10000', 'i686'],
    ['NetKVM', '2k19', 'amd64', '100.94.104.24600', 'x86_64'],
  ];
  for (const [drv, os, arch, ver, pe] of drivers) {
    const d = join(iso, drv, os, arch);
    const file = drv.toLowerCase();
    await mkdir(d, { recursive: true });
    await buildPe(join(d, `${file}.sys`), `${file}.sys`, ver, pe);
    await writeFile(join(d, `${file}.inf`), `[Version]\r\nSignature="$WINDOWS NT$"\r\nClass=SCSIAdapter\r\nDriverVer = 06/10/2023,${ver}\r\n`);
    await writeFile(join(d, `${file}.cat`), `catalog of ${file} ${os} ${arch}\n`);
  }
  media.iso = join(src, 'virtio-win-0.1.240.iso');
  await execa('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'virtio-win-0.1.240', '-o', media.iso, iso]);
  // only the NetKVM half, for the case where the boot driver is missing
  media.netOnly = join(src, 'virtio-win-netkvm-only.iso');
  await execa('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'netkvm', '-o', media.netOnly, join(iso, 'NetKVM')]);

  // service pack cabinets: the same variants in three service packs; the rule must take SP2's for an SP2 guest
  const cab = async (name: string, version: string, variants: string[]) => {
    const d = join(src, name);
    await mkdir(d, { recursive: true });
    for (const v of variants) await buildPe(join(d, v), v, version);
    media[name] = join(src, `WindowsServer2003-${name}-x86.cab`);
    await execa('gcab', ['-c', '-z', '-n', media[name], ...variants.map(v => join(d, v))]);
  };
  await cab('SP1', '5.2.3790.1830', ['halaacpi.dll', 'ntkrnlpa.exe', 'ntoskrnl.exe']);
  await cab('SP2', '5.2.3790.3959', ['halaacpi.dll', 'halacpi.dll', 'halmacpi.dll', 'ntkrnlpa.exe', 'ntoskrnl.exe', 'ntkrpamp.exe', 'ntkrnlmp.exe']);
  await cab('SP3', '5.2.3790.9999', ['halaacpi.dll', 'ntkrnlpa.exe', 'ntoskrnl.exe']);
}

/** a fresh drivers-db with these containers imported; returns its env and what was stored */
async function driversDb(name: string, containers: string[]): Promise<{ env: Record<string, string>; stored: Stored[] }> {
  const home = join(dir, `home-${name}`);
  const env = { FERRY_HOME: home, FERRY_DRIVERS_DB: join(home, 'drivers-db') };
  if (!containers.length) return { env, stored: [] };
  const r = await ferry(['drivers', 'import', ...containers, '--json'], { env });
  assert.equal(r.exitCode, 0, r.stderr);
  return { env, stored: (JSON.parse(r.stdout) as { stored: Stored[] }[]).flatMap(c => c.stored) };
}
const objectOf = (env: Record<string, string>, f: Stored) => join(env.FERRY_DRIVERS_DB, 'objects', f.sha256.slice(0, 2), f.sha256);

/** One partition of a disk image (any format) copied out as a plain file, read with ntfscat and hivexget: nothing is mounted. */
class Readback {
  private constructor(readonly part: string) {}
  static async of(image: string, disk: PhonyWindowsDisk, name: string): Promise<Readback> {
    const fs = disk.fileSystems.find(f => f.partition === disk.expect.partition)!;
    const format = (JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', image])).stdout) as { format: string }).format;
    const part = join(dir, `${name}.ntfs`);
    const spec = { driver: 'raw', offset: fs.start, size: fs.size, file: { driver: format, file: { driver: 'file', filename: image, locking: 'off' } } };
    await execa('qemu-img', ['convert', '-O', 'raw', `json:${JSON.stringify(spec)}`, part]);
    return new Readback(part);
  }
  /** a file's bytes, undefined only when ntfscat says the path does not exist; any other failure fails the test */
  async file(guestPath: string): Promise<Buffer | undefined> {
    const r = await execa('ntfscat', ['-f', this.part, guestPath], { encoding: 'buffer', stripFinalNewline: false, reject: false });
    if (r.exitCode === 0) return Buffer.from(r.stdout as Uint8Array);
    const why = Buffer.from(r.stderr as Uint8Array).toString();
    assert.match(why, /Couldn't open inode: No such file or directory/, `ntfscat reads ${guestPath}: ${why}`);
    return undefined;
  }
  async sha(guestPath: string): Promise<string | undefined> {
    const b = await this.file(guestPath);
    return b && (await import('node:crypto')).createHash('sha256').update(b).digest('hex');
  }
  /** a key of a hive read with hivexget (undefined when the key does not exist); any other failure fails the test */
  async key(hivePath: string, key: string): Promise<HiveKey | undefined> {
    const local = join(dir, `hive-${Math.random().toString(36).slice(2)}`);
    const data = await this.file(hivePath);
    assert.ok(data, `${hivePath} exists`);
    await writeFile(local, data);
    const list = await execa('hivexget', [local, key], { reject: false });
    if (list.exitCode !== 0) {
      assert.match(String(list.stderr), /subkey '[^']*' not found/, `hivexget reads ${hivePath} ${key}: ${list.stderr}`);
      return undefined;
    }
    // lsval's lines are "NAME"=…; each value is then read by name, as hivexget prints it (strings as text, a dword in decimal, a multi-string one per line)
    // and its type from the listing: "x" REG_SZ, str(N):"x", hex(N):…, hex:… REG_BINARY, dword:… REG_DWORD, qword:… REG_QWORD
    const values = new Map<string, { type: number; text: string }>();
    for (const line of String(list.stdout).split('\n')) {
      const m = /^"((?:[^"\\]|\\.)*)"=(?:(")|str\((\d+)\):|hex\((\d+)\):|(hex):|(dword):|(qword):)/.exec(line);
      if (!m) continue;
      const name = m[1].replace(/\\(.)/g, '$1');
      const type = m[2] ? 1 : m[3] ? Number(m[3]) : m[4] ? Number(m[4]) : m[5] ? 3 : m[6] ? 4 : 11;
      values.set(name.toLowerCase(), { type, text: String((await execa('hivexget', [local, key, name])).stdout) });
    }
    return new HiveKey(values);
  }
}

/** A registry key's values as hivexget printed them (names case-insensitive, as Windows reads them). */
class HiveKey {
  constructor(private readonly values: Map<string, { type: number; text: string }>) {}
  value(name: string): { type: number; text: string } | undefined { return this.values.get(name.toLowerCase()); }
  str(name: string): string | undefined { return this.value(name)?.text; }
  num(name: string): number | undefined {
    const v = this.str(name);
    if (v === undefined) return undefined;
    assert.match(v, /^\d+$/, `${name} is a number: ${v}`);
    return Number(v);
  }
  strings(name: string): string[] | undefined { return this.str(name)?.split('\n').filter(Boolean); }
}

interface Change { file: string; before: string; after: string; reason: string }
interface RefitJson { profile: string; systems: { type: string; name: string; partition: number }[]; changes: Change[]; warnings?: string[]; overlay?: string }

let w: PhonyWindows;
const sums: Record<string, string> = {};
before(async () => {
  w = await buildPhonyWindows();
  for (const d of [w.win2003, w.win2019, w.damaged]) sums[d.image] = await sha256(d.image);
  await buildMedia();
});
after(async () => {
  assert.deepEqual(await sha256All(Object.keys(sums)), sums, 'every source image is unchanged');
});

async function reconfigure(image: string, profile: string, overlay: string, env: Record<string, string>): Promise<RefitJson> {
  const r = await ferry(['reconfigure', image, '--profile', profile, '--overlay', overlay, '--json'], { env });
  assert.equal(r.exitCode, 0, `reconfigure failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as RefitJson;
}

describe('phony Windows re-fit: names and registry text (no disks)', () => {
  it('phony Windows: inspected product names map to the release names drivers-db uses', () => {
    assert.deepEqual(storeReleases({ productName: 'Microsoft Windows Server 2003', version: '5.2', build: '3790', arch: 'i386' }), ['2003']);
    assert.deepEqual(storeReleases({ productName: 'Microsoft Windows Server 2003 R2', version: '5.2', arch: 'x86_64' }), ['2003']);
    assert.deepEqual(storeReleases({ productName: 'Windows Server 2019 Datacenter', version: '10.0', build: '17763', arch: 'x86_64' }), ['2019', '10']);
    assert.deepEqual(storeReleases({ productName: 'Windows Server 2008 R2 Standard', version: '6.1', arch: 'x86_64' }), ['2008r2', '7']);
    assert.deepEqual(storeReleases({ productName: 'Windows Server 2012 R2 Datacenter', version: '6.3' }), ['2012r2', '8.1']);
    assert.deepEqual(storeReleases({ productName: 'Microsoft Windows XP', version: '5.1', arch: 'i386' }), ['xp']);
    assert.deepEqual(storeReleases({ productName: 'Microsoft Windows XP', version: '5.2', arch: 'x86_64' }), ['2003'], 'XP x64 is NT 5.2');
    assert.deepEqual(storeReleases({ productName: 'Windows 7 Professional', version: '6.1' }), ['7', '2008r2']);
    assert.deepEqual(storeReleases({ productName: 'Windows 10 Pro', version: '10.0', build: '19045' }), ['10']);
    assert.deepEqual(storeReleases({ productName: 'Windows 10 Pro', version: '10.0', build: '22631' }), ['11', '10'], 'Windows 11 calls itself 10');
    // no usable name: the kernel version (and build for servers)
    assert.deepEqual(storeReleases({ productName: 'Windows Server Datacenter', version: '10.0', build: '20348' }), ['2022', '10']);
    assert.deepEqual(storeReleases({ version: '5.2' }), ['2003']);
    assert.deepEqual(storeReleases({ productName: 'OS/2 Warp', version: '4.5' }), []);
    assert.equal(normalizePatchLevel('Service Pack 2'), 'SP2');
    assert.equal(normalizePatchLevel('sp1a'), 'SP1a');
    assert.equal(normalizePatchLevel(undefined), 'RTM');
    assert.equal(normalizePatchLevel('17763.5830'), '17763.5830');
  });

  it('phony Windows: .reg text lists parents first and writes every value as typed bytes', () => {
    const text = regText('HKEY_LOCAL_MACHINE\\SYSTEM', [
      { key: 'ControlSet001\\Services\\viostor', values: { Start: { dword: 0 }, ImagePath: { expand: 'system32\\drivers\\viostor.sys' } } },
      { key: 'ControlSet001\\Services\\viostor\\Parameters\\PnpInterface', values: { '5': { dword: 1 } } },
      { key: 'ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001', values: { Service: { sz: 'viostor' } } },
    ]);
    const lines = text.split('\r\n');
    const keys = lines.filter(l => l.startsWith('['));
    assert.deepEqual(keys.slice(0, 4), ['[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001]', '[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services]',
      '[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor]', '[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor\\Parameters]']);
    assert.equal(keys.length, new Set(keys).size, 'each key once');
    assert.ok(lines.includes('"Start"=dword:00000000'));
    assert.ok(lines.includes(`"ImagePath"=hex(2):${[...Buffer.from('system32\\drivers\\viostor.sys\0', 'utf16le')].map(b => b.toString(16).padStart(2, '0')).join(',')}`));
    // what Ferry's own .reg reader makes of it (the disks below are read back with hivexget)
    const parsed = parseReg(text, 'HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor');
    assert.equal(parsed?.str('ImagePath'), 'system32\\drivers\\viostor.sys');
    assert.equal(parsed?.num('Start'), 0);
    assert.equal(parsed?.sub('Parameters\\PnpInterface')?.num('5'), 1);
  });

  it('phony Windows: guest tools map to their Windows services, case-insensitively', () => {
    const services = [{ name: 'VMTools', start: 2 }, { name: 'vmvss', start: 3 }, { name: 'vmicheartbeat', start: 3 }, { name: 'Tcpip', start: 1 }];
    assert.deepEqual(toolServices(['vmware-tools'], services).map(s => s.service), ['VMTools', 'vmvss']);
    assert.deepEqual(toolServices(['open-vm-tools', 'hyperv-daemons', 'vmware-tools'], services).map(s => [s.service, s.tool]), [['vmicheartbeat', 'hyperv-daemons'], ['VMTools', 'vmware-tools'], ['vmvss', 'vmware-tools']]);
    assert.deepEqual(toolServices(['qemu-guest-agent'], services), []);
  });
});

describe('phony Windows Server 2003 SP2 re-fitted through overlays', () => {
  let env: Record<string, string>;
  let stored: Stored[];
  let template: string;
  let templateSum: string;
  let virtio: RefitJson;
  let legacy: RefitJson;
  let rbVirtio: Readback;
  let rbLegacy: Readback;
  const root = () => w.win2003.expect.systemRoot; // /WINDOWS
  const SYS = () => `${root()}/system32/config/SYSTEM`;
  const SOFT = () => `${root()}/system32/config/SOFTWARE`;
  const find = (component: string, pred: (f: Stored) => boolean = () => true) => stored.find(f => f.component === component && pred(f))!;

  before(async () => {
    ({ env, stored } = await driversDb('w2003', [media.iso, media.SP1, media.SP2, media.SP3]));
    template = join(dir, 'w2003-template.raw');
    await execa('cp', ['--sparse=always', w.win2003.image, template]);
    templateSum = await sha256(template);
    // two re-fits of one template at once
    [virtio, legacy] = await Promise.all([
      reconfigure(template, 'kvm-virtio', join(dir, 'w2003-virtio.qcow2'), env),
      reconfigure(template, 'kvm-legacy', join(dir, 'w2003-legacy.qcow2'), env),
    ]);
    rbVirtio = await Readback.of(join(dir, 'w2003-virtio.qcow2'), w.win2003, 'w2003-virtio');
    rbLegacy = await Readback.of(join(dir, 'w2003-legacy.qcow2'), w.win2003, 'w2003-legacy');
  });

  it('phony Windows 2003: the template keeps its sha256; each overlay is backed by it', async () => {
    assert.equal(await sha256(template), templateSum);
    for (const o of ['w2003-virtio.qcow2', 'w2003-legacy.qcow2']) {
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', join(dir, o)])).stdout);
      assert.equal(info['backing-filename'], template);
    }
    assert.deepEqual(virtio.systems, [{ type: 'windows', name: 'Microsoft Windows Server 2003', partition: 1 }]);
  });

  it('phony Windows 2003 kvm-virtio: viostor.sys in system32\\drivers is the cached object for 2003 x86', async () => {
    const viostor = find('viostor.sys', f => f.osRelease === '2003');
    assert.equal(viostor.arch, 'x86');
    assert.equal(await rbVirtio.sha(`${root()}/system32/drivers/viostor.sys`), viostor.sha256);
    assert.equal(await sha256(objectOf(env, viostor)), viostor.sha256);
    assert.equal(await rbLegacy.file(`${root()}/system32/drivers/viostor.sys`), undefined, 'kvm-legacy has no viostor');
    const c = virtio.changes.find(x => x.file === `${root()}/system32/drivers/viostor.sys`);
    assert.ok(c, JSON.stringify(virtio.changes.map(x => x.file)));
    assert.equal(c.before, 'absent');
    assert.match(c.after, /viostor\.sys 52\.3\.103\.18100 from drivers-db \(virtio-win-0\.1\.240.*viostor\/2k3\/x86\/viostor\.sys\)/);
  });

  it('phony Windows 2003 kvm-virtio: viostor service is a boot-start SCSI miniport; CriticalDeviceDatabase binds its PCI ids', async () => {
    const svc = await rbVirtio.key(SYS(), '\\ControlSet001\\Services\\viostor');
    assert.ok(svc, 'service key exists');
    assert.equal(svc.num('Start'), 0);
    assert.equal(svc.num('Type'), 1);
    assert.equal(svc.num('ErrorControl'), 1);
    assert.equal(svc.str('Group'), 'SCSI miniport');
    assert.equal(svc.str('ImagePath'), 'system32\\drivers\\viostor.sys');
    assert.equal(svc.value('ImagePath')?.type, 2, 'REG_EXPAND_SZ');
    assert.equal((await rbVirtio.key(SYS(), '\\ControlSet001\\Services\\viostor\\Parameters\\PnpInterface'))?.num('5'), 1);
    for (const id of ['pci#ven_1af4&dev_1001&subsys_00021af4', 'pci#ven_1af4&dev_1042&subsys_11001af4']) {
      const cdd = await rbVirtio.key(SYS(), `\\ControlSet001\\Control\\CriticalDeviceDatabase\\${id}`);
      assert.equal(cdd?.str('Service'), 'viostor', id);
      assert.equal(cdd?.str('ClassGUID'), SCSI, id);
    }
    // what was there stays
    const old = await rbVirtio.key(SYS(), '\\ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_8086&dev_7111');
    assert.equal(old?.str('Service'), 'intelide');
    assert.equal((await rbVirtio.key(SYS(), '\\ControlSet001\\Services\\atapi'))?.num('Start'), 0);
    const change = virtio.changes.find(c => c.file === `${SYS()} \\ControlSet001\\Services\\viostor`);
    assert.equal(change?.before, 'absent');
    assert.match(change!.after, /Type=1 Start=0 ErrorControl=1 Group=SCSI miniport ImagePath=system32\\drivers\\viostor\.sys/);
  });

  it('phony Windows 2003: VMware Tools disabled on both profiles (Start=4), reported with before and after', async () => {
    for (const [rb, r] of [[rbVirtio, virtio], [rbLegacy, legacy]] as const) {
      assert.equal((await rb.key(SYS(), '\\ControlSet001\\Services\\VMTools'))?.num('Start'), 4);
      const c = r.changes.find(x => x.file === `${SYS()} \\ControlSet001\\Services\\VMTools`);
      assert.deepEqual([c?.before, c?.after], ['Start=2', 'Start=4']);
    }
    assert.equal((await rbVirtio.key(SYS(), '\\ControlSet001\\Services\\Eventlog'))?.num('Start'), 2, 'other services untouched');
  });

  it('phony Windows 2003 kvm-virtio: netkvm staged with its .inf, a first-boot script run from RunOnce, DevicePath extended', async () => {
    const netkvm = find('netkvm.sys', f => f.osRelease === '2003');
    assert.equal(await rbVirtio.sha(`${root()}/Ferry/drivers/netkvm/netkvm.sys`), netkvm.sha256);
    assert.equal(await rbVirtio.sha(`${root()}/Ferry/drivers/netkvm/netkvm.inf`), find('netkvm.inf', f => f.osRelease === '2003').sha256);
    assert.equal(await rbVirtio.sha(`${root()}/Ferry/drivers/viostor/viostor.inf`), find('viostor.inf', f => f.osRelease === '2003').sha256);
    const script = (await rbVirtio.file(`${root()}/Ferry/firstboot.cmd`))?.toString('latin1');
    assert.ok(script, 'first-boot script exists');
    assert.match(script, /\r\n/, 'CRLF line ends');
    assert.match(script, /netkvm\.inf/);
    const runOnce = await rbVirtio.key(SOFT(), '\\Microsoft\\Windows\\CurrentVersion\\RunOnce');
    assert.equal(runOnce?.str('FerryFirstBoot'), '%SystemRoot%\\system32\\cmd.exe /c "%SystemRoot%\\Ferry\\firstboot.cmd"');
    const cv = await rbVirtio.key(SOFT(), '\\Microsoft\\Windows\\CurrentVersion');
    assert.match(cv?.str('DevicePath') ?? '', /%SystemRoot%\\Ferry\\drivers\\netkvm/);
    assert.equal(virtio.warnings, undefined, 'every driver was in the cache');
    // the legacy profile's drivers ship with Windows: nothing queued
    assert.equal(await rbLegacy.file(`${root()}/Ferry/firstboot.cmd`), undefined);
    assert.equal(await rbLegacy.key(SOFT(), '\\Microsoft\\Windows\\CurrentVersion\\RunOnce'), undefined);
  });

  it('phony Windows 2003: kvm-virtio (2 CPUs) keeps halmacpi/ntkrpamp; kvm-legacy (1 CPU) gets the SP2 uniprocessor HAL and kernels, not SP1 or SP3', async () => {
    const halPath = `${root()}/system32/hal.dll`;
    const orig = await Readback.of(w.win2003.image, w.win2003, 'w2003-orig');
    assert.equal(await rbVirtio.sha(halPath), await orig.sha(halPath), 'kvm-virtio: HAL unchanged');
    assert.ok(!virtio.changes.some(c => /hal\.dll|ntkrnlpa|ntoskrnl/.test(c.file)));
    const sp2 = (component: string, variant: string) => find(component, f => f.variant === variant && f.patchLevels.includes('SP2'));
    assert.equal(await rbLegacy.sha(halPath), sp2('hal.dll', 'halaacpi.dll').sha256, 'ACPI uniprocessor APIC HAL of SP2');
    assert.equal(await rbLegacy.sha(`${root()}/system32/ntkrnlpa.exe`), sp2('ntoskrnl.exe', 'ntkrnlpa.exe').sha256, 'PAE kernel boot.ini uses: uniprocessor PAE');
    assert.equal(await rbLegacy.sha(`${root()}/system32/ntoskrnl.exe`), sp2('ntoskrnl.exe', 'ntoskrnl.exe').sha256, 'the non-PAE kernel follows');
    const hal = legacy.changes.find(c => c.file === halPath);
    assert.deepEqual([hal?.before, hal?.after.split(' from ')[0]], ['halmacpi.dll 5.2.3790.3959', 'halaacpi.dll 5.2.3790.3959 (halaacpi.dll)']);
    const kernel = legacy.changes.find(c => c.file === `${root()}/system32/ntkrnlpa.exe`);
    assert.equal(kernel?.before, 'ntkrpamp.exe 5.2.3790.4354');
    // Plug and Play's record of the HAL and the kernel type follow
    assert.deepEqual((await rbLegacy.key(SYS(), '\\ControlSet001\\Enum\\Root\\ACPI_HAL\\0000'))?.strings('HardwareID'), ['acpiapic_up']);
    assert.equal((await rbLegacy.key(SOFT(), '\\Microsoft\\Windows NT\\CurrentVersion'))?.str('CurrentType'), 'Uniprocessor Free');
    // inbox IDE drivers: the missing CDD id is added, the present one left
    const cdd = await rbLegacy.key(SYS(), '\\ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_8086&dev_7010');
    assert.equal(cdd?.str('Service'), 'intelide', 'the controller driver, listed last in the profile, owns the controller id');
    const both = await rbLegacy.key(SYS(), '\\ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_8086&dev_7111');
    assert.equal(both?.str('Service'), 'intelide', 'an entry that is right stays');
    assert.ok(!legacy.changes.some(c => /dev_7111/.test(c.file)));
    // ferry inspect reads the swapped files back as the new variants
    const r = await ferry(['inspect', join(dir, 'w2003-legacy.qcow2'), '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const os = JSON.parse(r.stdout).operatingSystems[0];
    assert.deepEqual([os.hal.variant, os.hal.multiprocessor, os.kernel.variant, os.kernel.multiprocessor, os.kernel.pae], ['halaacpi.dll', false, 'ntkrnlpa.exe', false, true]);
  });

  it('phony Windows 2003: a second re-fit of a re-fitted image changes nothing that is already right', async () => {
    const again = join(dir, 'w2003-virtio-again.qcow2');
    const r = await reconfigure(join(dir, 'w2003-virtio.qcow2'), 'kvm-virtio', again, env);
    assert.deepEqual(r.changes.map(c => c.file), [], JSON.stringify(r.changes, null, 1));
  });
});

describe('phony Windows Server 2019 re-fitted to kvm-virtio', () => {
  it('phony Windows 2019: viostor for 2k19 (not w10), Select\\Current\'s control set, no CriticalDeviceDatabase, no HAL swap, pnputil at first boot', async () => {
    const { env, stored } = await driversDb('w2019', [media.iso, media.SP2]);
    const overlay = join(dir, 'w2019-virtio.qcow2');
    const r = await reconfigure(w.win2019.image, 'kvm-virtio', overlay, env);
    const rb = await Readback.of(overlay, w.win2019, 'w2019-virtio');
    const viostor = stored.find(f => f.component === 'viostor.sys' && f.osRelease === '2019')!;
    assert.equal(await rb.sha('/Windows/System32/drivers/viostor.sys'), viostor.sha256);
    const SYS = '/Windows/System32/config/SYSTEM';
    // Select\Current = 2 on this disk; ControlSet001 is stale
    const svc = await rb.key(SYS, '\\ControlSet002\\Services\\viostor');
    assert.deepEqual([svc?.num('Start'), svc?.num('Type'), svc?.str('Group')], [0, 1, 'SCSI miniport']);
    assert.equal(await rb.key(SYS, '\\ControlSet002\\Services\\viostor\\Parameters'), undefined, 'no NT 5 PnpInterface key');
    assert.equal(await rb.key(SYS, '\\ControlSet001\\Services\\viostor'), undefined, 'the stale set is left alone');
    assert.equal(await rb.key(SYS, '\\ControlSet002\\Control\\CriticalDeviceDatabase'), undefined, 'Windows 8 and later have none');
    assert.equal((await rb.key(SYS, '\\ControlSet002\\Services\\VMTools'))?.num('Start'), 4);
    assert.ok(!r.changes.some(c => /hal\.dll|ntoskrnl/i.test(c.file)), 'one HAL and kernel for all hardware');
    const script = (await rb.file('/Windows/Ferry/firstboot.cmd'))?.toString('latin1') ?? '';
    assert.match(script, /pnputil -i -a "%FERRY%\\drivers\\netkvm\\netkvm\.inf"/);
    assert.match(script, /pnputil -i -a "%FERRY%\\drivers\\viostor\\viostor\.inf"/);
    assert.equal(await rb.sha('/Windows/Ferry/drivers/netkvm/netkvm.sys'), stored.find(f => f.component === 'netkvm.sys' && f.osRelease === '2019')!.sha256);
    const runOnce = await rb.key('/Windows/System32/config/SOFTWARE', '\\Microsoft\\Windows\\CurrentVersion\\RunOnce');
    assert.match(runOnce?.str('FerryFirstBoot') ?? '', /firstboot\.cmd/);
  });

  it('phony Windows 2019: without netkvm in the cache the re-fit still succeeds and warns about the NIC driver', async () => {
    // an ISO holding only the viostor folder
    const iso = join(dir, 'media', 'viostor-only.iso');
    await execa('xorriso', ['-as', 'mkisofs', '-quiet', '-R', '-J', '-V', 'viostor', '-o', iso, join(dir, 'media', 'iso', 'viostor')]);
    const only = await driversDb('w2019-viostor-only', [iso]);
    const r = await reconfigure(w.win2019.image, 'kvm-virtio', join(dir, 'w2019-nonet.qcow2'), only.env);
    assert.equal(r.warnings?.length, 1, JSON.stringify(r.warnings));
    assert.match(r.warnings![0], /netkvm\.sys.*virtio-net-pci.*virtio-win driver ISO/);
    assert.ok(r.changes.some(c => /viostor\.sys$/.test(c.file)));
  });
});

describe('phony Windows: what stops a re-fit before anything is written', () => {
  it('phony Windows 2003 without viostor in the cache: DRIVER_MISSING (exit 5) naming the medium and service pack; no overlay', async () => {
    const { env } = await driversDb('no-viostor', [media.netOnly, media.SP2]);
    const overlay = join(dir, 'w2003-missing.qcow2');
    const r = await ferry(['reconfigure', w.win2003.image, '--profile', 'kvm-virtio', '--overlay', overlay, '--json'], { env });
    assert.equal(r.exitCode, 5, r.stderr);
    assert.match(r.stderr, /DRIVER_MISSING/);
    assert.match(r.stderr, /viostor\.sys for Windows 2003 SP2 \(x86\)/);
    assert.match(r.stderr, /virtio-win driver ISO \(it holds viostor\/2k3\/x86\/viostor\.sys\) \(SP2, x86\) with --os-release 2003 --patch-level SP2/);
    assert.equal(await stat(overlay).catch(() => undefined), undefined, 'no overlay left behind');
  });

  it('phony Windows 2003 to kvm-legacy without a uniprocessor HAL: DRIVER_MISSING names the Server 2003 SP2 medium; convert leaves no target', async () => {
    const { env } = await driversDb('no-hal', [media.iso]);
    const target = join(dir, 'w2003-nohal.qcow2');
    const r = await ferry(['convert', w.win2003.image, target, '--profile', 'kvm-legacy'], { env });
    assert.equal(r.exitCode, 5, r.stderr);
    assert.match(r.stderr, /hal\.dll variant acpi non-multiprocessor for Windows 2003 SP2 \(x86\)/);
    assert.match(r.stderr, /Microsoft Windows Server 2003 SP2 medium \(SP2, x86\) with --os-release 2003 --patch-level SP2/);
    assert.equal(await stat(target).catch(() => undefined), undefined, 'no target');
  });

  it('phony Windows 2019 with a damaged SOFTWARE hive: WINDOWS_HIVE_UNREADABLE names the hive; no overlay', async () => {
    const { env } = await driversDb('damaged', [media.iso]);
    const overlay = join(dir, 'damaged.qcow2');
    const r = await ferry(['reconfigure', w.damaged.image, '--profile', 'kvm-virtio', '--overlay', overlay], { env });
    assert.equal(r.exitCode, 3, r.stderr);
    assert.match(r.stderr, /WINDOWS_HIVE_UNREADABLE.*\/Windows\/System32\/config\/SOFTWARE.*nothing was written/);
    assert.equal(await stat(overlay).catch(() => undefined), undefined);
  });
});

describe('phony Windows converted end to end', () => {
  it('phony Windows 2003: convert --profile kvm-virtio copies the NTFS partition and re-fits the target; the source is unchanged', async () => {
    const { env, stored } = await driversDb('convert', [media.iso, media.SP2]);
    const target = join(dir, 'w2003-converted.qcow2');
    const r = await ferry(['convert', w.win2003.image, target, '--profile', 'kvm-virtio', '--json'], { env });
    assert.equal(r.exitCode, 0, r.stderr);
    const result = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { refit: RefitJson; verified: boolean; layout?: { partitions?: { method: string }[] } };
    assert.equal(result.verified, true);
    // NTFS is rebuilt from its used clusters (ntfsclone), verified file by file, then re-fitted in place
    assert.deepEqual(result.layout?.partitions?.map(p => p.method), ['rebuild']);
    assert.ok(result.refit.changes.some(c => /viostor\.sys$/.test(c.file)));
    const rb = await Readback.of(target, w.win2003, 'w2003-converted');
    assert.equal(await rb.sha('/WINDOWS/system32/drivers/viostor.sys'), stored.find(f => f.component === 'viostor.sys' && f.osRelease === '2003')!.sha256);
    assert.equal((await rb.key('/WINDOWS/system32/config/SYSTEM', '\\ControlSet001\\Services\\viostor'))?.num('Start'), 0);
    // the rest of the file system came across: a file the re-fit does not touch
    assert.equal(await rb.sha('/WINDOWS/system.ini'), await (await Readback.of(w.win2003.image, w.win2003, 'w2003-src')).sha('/WINDOWS/system.ini'));
    assert.equal(await sha256(w.win2003.image), sums[w.win2003.image]);
  });
});
