// Windows customization (issue 15, Windows part) on copies of the phony
// Windows disks (Server 2019 x64, Server 2003 SP2 x86): computer name,
// static addresses and DHCP for the NIC bindings inspect reports, the
// domain-join answer file, --new-identity with the newest registered
// sysprep-style tool, --run through RunOnce. Nothing boots (the disks are
// phony). The results are read back by the test itself: the partition copied
// out with qemu-img, files taken out with ntfscat, hive values read with
// hivexget (a failed read fails the test) — not with Ferry's hive parser.
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { openWritable } from '../src/blockdev/disk.js';
import { openSource } from '../src/sources/open.js';
import { workDir } from '../src/blockdev/mount.js';
import { parseDomainJoin } from '../src/customize/domain-join.js';
import { parseIpOption, type Customization } from '../src/customize/identity.js';
import { parseToolRef } from '../src/customize/tools.js';
import { customizeWindowsDisk, type WindowsCustomizeResult } from '../src/customize/windows.js';
import { FerryError } from '../src/errors.js';
import { parseEndpoint } from '../src/sources/endpoint.js';
import { withScope } from '../src/util/scope.js';
import { buildPhonyWindows, type PhonyWindows, type PhonyWindowsDisk } from './support/fixtures.js';
import { FERRY, ferry, guardMachine, sha256, tempDir } from './support/harness.js';

guardMachine();
const dir = await tempDir('ferrytest-custom-win-');
const store = join(dir, 'tools');
const env = { FERRY_TOOLS: store, FERRY_HOME: join(dir, 'home') };
// the library calls below read the store from the environment too
process.env.FERRY_TOOLS = store;

const PASSWORD = 'Join-Secret-4711';
const E0 = '{3C9E1F24-8B6A-4D0E-9F12-6A7B8C9D0E21}'; // Ethernet0, static 10.1.0.25/22
const E1 = '{7D2E4A61-5C3B-4E8F-A019-2B3C4D5E6F72}'; // Ethernet1, DHCP

let w: PhonyWindows;
const sums: Record<string, string> = {};
let n = 0;

/** a sparse copy of a fixture disk, and its sha256 */
async function copyOf(d: PhonyWindowsDisk): Promise<string> {
  const p = join(dir, `copy-${++n}.raw`);
  await execa('cp', ['--sparse=always', d.image, p]);
  return p;
}

async function customize(image: string, c: Customization, dryRun = false): Promise<WindowsCustomizeResult> {
  return withScope(async s => {
    const work = await workDir(s);
    const disk = dryRun ? await openSource(s, parseEndpoint(image), work) : await openWritable(s, image, work);
    return customizeWindowsDisk(s, disk, work, c, { dryRun });
  });
}

async function refused(image: string, c: () => Customization, code: string, re?: RegExp): Promise<void> {
  const before = await sha256(image);
  await assert.rejects(async () => customize(image, c()), (e: unknown) => {
    assert.ok(e instanceof FerryError, `a typed error, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    assert.ok(!e.message.includes(PASSWORD), 'no secret in the error');
    return true;
  });
  assert.equal(await sha256(image), before, `${code}: the image is unchanged`);
}

/** a partition of a disk copied out, read with ntfscat and hivexget */
class Readback {
  private constructor(readonly part: string) {}
  static async of(image: string, disk: PhonyWindowsDisk): Promise<Readback> {
    const fs = disk.fileSystems.find(f => f.partition === disk.expect.partition)!;
    const part = join(dir, `part-${++n}.ntfs`);
    const spec = { driver: 'raw', offset: fs.start, size: fs.size, file: { driver: 'file', filename: image } };
    await execa('qemu-img', ['convert', '-O', 'raw', `json:${JSON.stringify(spec)}`, part]);
    return new Readback(part);
  }
  async text(guestPath: string): Promise<string> {
    const r = await execa('ntfscat', ['-f', this.part, guestPath], { reject: false, stripFinalNewline: false });
    assert.equal(r.exitCode, 0, `ntfscat ${guestPath}: ${r.stderr}`);
    return String(r.stdout);
  }
  /** absent only when ntfscat says the path does not exist; any other failure fails the test */
  async absent(guestPath: string): Promise<boolean> {
    const r = await execa('ntfscat', ['-f', this.part, guestPath], { reject: false });
    if (r.exitCode === 0) return false;
    assert.match(String(r.stderr), /Couldn't open inode: No such file or directory/, `ntfscat reads ${guestPath}: ${r.stderr}`);
    return true;
  }
  private hives = new Map<string, string>();
  async hive(guestPath: string): Promise<string> {
    let local = this.hives.get(guestPath);
    if (!local) {
      local = join(dir, `hive-${++n}`);
      const r = await execa('ntfscat', ['-f', this.part, guestPath], { encoding: 'buffer', reject: false });
      assert.equal(r.exitCode, 0, `ntfscat ${guestPath}`);
      await writeFile(local, r.stdout as Uint8Array);
      this.hives.set(guestPath, local);
    }
    return local;
  }
  /** hivexget's text of one value (MULTI_SZ: one string a line) */
  async value(hive: string, key: string, name: string): Promise<string> {
    const r = await execa('hivexget', [await this.hive(hive), key, name], { reject: false });
    assert.equal(r.exitCode, 0, `hivexget ${hive} ${key} ${name}: ${r.stderr}`);
    return String(r.stdout).replace(/\n+$/, '');
  }
  async hasKey(hive: string, key: string): Promise<boolean> {
    const r = await execa('hivexget', [await this.hive(hive), key], { reject: false });
    return r.exitCode === 0;
  }
}

/** a tool container: a directory, or that directory zipped */
async function toolDir(name: string, files: Record<string, string>): Promise<string> {
  const d = join(dir, 'src', name);
  await mkdir(d, { recursive: true });
  for (const [f, text] of Object.entries(files)) await writeFile(join(d, f), text);
  return d;
}
async function addTool(container: string, name: string, version?: string): Promise<void> {
  const r = await ferry(['tools', 'add', container, '--name', name, ...(version ? ['--version', version] : []), '--json'], { env });
  assert.equal(r.exitCode, 0, r.stderr);
}

let pwFile: string;
before(async () => {
  w = await buildPhonyWindows();
  for (const d of [w.win2003, w.win2019]) sums[d.image] = await sha256(d.image);
  // sysprep v1 (a directory), then v2 (a zip): customizations must use v2
  await addTool(await toolDir('sysprep-v1', { 'sysprep.exe': 'phony sysprep v1\r\n' }), 'sysprep', '1');
  const v2 = await toolDir('sysprep-v2', { 'sysprep.exe': 'phony sysprep v2\r\n', 'readme.txt': 'v2\r\n' });
  await execa('bsdtar', ['-a', '-cf', join(dir, 'sysprep-v2.zip'), '-C', v2, '.']);
  await addTool(join(dir, 'sysprep-v2.zip'), 'sysprep', '2');
  await addTool(await toolDir('hello', { 'run.cmd': '@echo off\r\necho hello from Ferry\r\n' }), 'hello');
  await addTool(await toolDir('lin', { 'run.sh': '#!/bin/sh\necho linux\n' }), 'lin');
  pwFile = join(dir, 'join.pw');
  await writeFile(pwFile, `${PASSWORD}\n`);
  await chmod(pwFile, 0o600);
});
after(async () => {
  for (const d of [w.win2003, w.win2019]) assert.equal(await sha256(d.image), sums[d.image], `${d.image} is unchanged`);
});

describe('phony Windows Server 2019: customize a copy', () => {
  let image: string;
  let r: WindowsCustomizeResult;
  let rb: Readback;
  const SYS = '/Windows/System32/config/SYSTEM';
  const SOFT = '/Windows/System32/config/SOFTWARE';
  const c = (): Customization => ({
    hostname: 'clone-07.corp.example',
    ip: [parseIpOption('Ethernet1=192.0.2.10/24,gw=192.0.2.1,dns=192.0.2.53,dns=192.0.2.54')],
    dhcp: [E0],
    newIdentity: true,
    domainJoin: parseDomainJoin(`corp.example,ou=OU=Servers,DC=corp,DC=example,user=CORP\\joiner,password-file=${pwFile}`),
    run: [parseToolRef('hello')],
  });

  before(async () => {
    image = await copyOf(w.win2019);
    const t0 = Date.now();
    r = await customize(image, c());
    process.stderr.write(`customize phony win2019: ${Date.now() - t0} ms\n`);
    rb = await Readback.of(image, w.win2019);
  });

  it('phony 2019: computer name in ComputerName and Tcpip (Hostname, NV Hostname, Domain) of the current set only', async () => {
    assert.equal(await rb.value(SYS, 'ControlSet002\\Control\\ComputerName\\ComputerName', 'ComputerName'), 'CLONE-07');
    assert.equal(await rb.value(SYS, 'ControlSet002\\Services\\Tcpip\\Parameters', 'Hostname'), 'clone-07');
    assert.equal(await rb.value(SYS, 'ControlSet002\\Services\\Tcpip\\Parameters', 'NV Hostname'), 'clone-07');
    assert.equal(await rb.value(SYS, 'ControlSet002\\Services\\Tcpip\\Parameters', 'NV Domain'), 'corp.example');
    // the stale set keeps its own name: only the sets Select names are written
    assert.equal(await rb.value(SYS, 'ControlSet001\\Control\\ComputerName\\ComputerName', 'ComputerName'), w.win2019.staleHostname);
    // ActiveComputerName is volatile: the phony hive has none, and none is made
    assert.equal(await rb.hasKey(SYS, 'ControlSet002\\Control\\ComputerName\\ActiveComputerName'), false);
  });

  it('phony 2019: Ethernet1 static (REG_MULTI_SZ addresses, REG_SZ NameServer), Ethernet0 DHCP', async () => {
    const k1 = `ControlSet002\\Services\\Tcpip\\Parameters\\Interfaces\\${E1}`;
    assert.equal(await rb.value(SYS, k1, 'EnableDHCP'), '0');
    assert.equal(await rb.value(SYS, k1, 'IPAddress'), '192.0.2.10');
    assert.equal(await rb.value(SYS, k1, 'SubnetMask'), '255.255.255.0');
    assert.equal(await rb.value(SYS, k1, 'DefaultGateway'), '192.0.2.1');
    assert.equal(await rb.value(SYS, k1, 'NameServer'), '192.0.2.53,192.0.2.54');
    const k0 = `ControlSet002\\Services\\Tcpip\\Parameters\\Interfaces\\${E0}`;
    assert.equal(await rb.value(SYS, k0, 'EnableDHCP'), '1');
    assert.equal(await rb.value(SYS, k0, 'IPAddress'), '0.0.0.0');
    assert.equal((await rb.value(SYS, k0, 'DefaultGateway')).trim(), '');
    // the type as Windows keeps it, from hivexregedit's own export
    const reg = String((await execa('hivexregedit', ['--export', await rb.hive(SYS), k1])).stdout);
    assert.match(reg, /"IPAddress"=hex\(7\):/);
    assert.match(reg, /"NameServer"=hex\(1\):/, 'NameServer is a REG_SZ');
  });

  it('phony 2019: --domain-join answer file in Panther with the join, the OU and the password (only there)', async () => {
    const xml = await rb.text('/Windows/Panther/unattend.xml');
    assert.match(xml, /<JoinDomain>corp\.example<\/JoinDomain>/);
    assert.match(xml, /<MachineObjectOU>OU=Servers,DC=corp,DC=example<\/MachineObjectOU>/);
    assert.match(xml, /<Domain>CORP<\/Domain>\s*<Username>joiner<\/Username>/);
    assert.match(xml, new RegExp(`<Password>${PASSWORD}</Password>`));
    assert.match(xml, /<ComputerName>CLONE-07<\/ComputerName>/);
    assert.ok(!JSON.stringify(r).includes(PASSWORD), 'the report holds no password');
  });

  it('phony 2019: --new-identity places sysprep v2 (the newest), the script and Setup\\CmdLine (SetupType 2)', async () => {
    assert.equal(await rb.text('/Windows/Ferry/tools/sysprep/2/sysprep.exe'), 'phony sysprep v2\r\n');
    assert.ok(await rb.absent('/Windows/Ferry/tools/sysprep/1/sysprep.exe'), 'v1 is not placed');
    const script = await rb.text('/Windows/Ferry/new-identity.cmd');
    assert.match(script, /Ferry\\tools\\sysprep\\2\\sysprep\.exe" \/generalize \/oobe \/reboot \/quiet "\/unattend:%SystemRoot%\\Panther\\unattend\.xml"/);
    // the trigger is cleared before the tool runs
    assert.ok(script.indexOf('/v CmdLine') < script.indexOf('sysprep.exe'));
    assert.equal(await rb.value(SYS, 'Setup', 'SetupType'), '2');
    assert.equal(await rb.value(SYS, 'Setup', 'CmdLine'), 'cmd.exe /c "%SystemRoot%\\Ferry\\new-identity.cmd"');
    assert.deepEqual(r.tools.find(t => t.name === 'sysprep'), { name: 'sysprep', version: '2', trigger: 'HKLM\\SYSTEM\\Setup\\CmdLine (SetupType=2)' });
  });

  it('phony 2019: --run hello puts the tool in and a RunOnce entry, recorded in the report', async () => {
    assert.equal(await rb.text('/Windows/Ferry/tools/hello/1/run.cmd'), '@echo off\r\necho hello from Ferry\r\n');
    assert.equal(await rb.value(SOFT, 'Microsoft\\Windows\\CurrentVersion\\RunOnce', 'Ferry-hello'),
      '%SystemRoot%\\System32\\cmd.exe /c "%SystemRoot%\\Ferry\\tools\\hello\\1\\run.cmd"');
    assert.ok(r.tools.some(t => t.name === 'hello' && t.version === '1' && /RunOnce\\Ferry-hello$/.test(t.trigger)));
  });

  it('phony 2019: every change is reported with file, before, after and why', () => {
    for (const ch of r.changes) for (const k of ['file', 'before', 'after', 'reason'] as const) assert.ok(ch[k] !== undefined && ch[k] !== '', `${JSON.stringify(ch)} has ${k}`);
    const files = r.changes.map(ch => ch.file);
    for (const f of ['/Windows/Panther/unattend.xml', '/Windows/Ferry/new-identity.cmd', '/Windows/Ferry/tools/hello/1/run.cmd',
      `${SYS} \\ControlSet002\\Control\\ComputerName\\ComputerName`, `${SYS} \\Setup`, `${SOFT} \\Microsoft\\Windows\\CurrentVersion\\RunOnce`]) {
      assert.ok(files.includes(f), `${f} is reported`);
    }
    const cn = r.changes.find(ch => ch.file.endsWith('ComputerName\\ComputerName'))!;
    assert.equal(cn.before, 'ComputerName=FERRY-W2K19');
    assert.equal(cn.after, 'ComputerName=CLONE-07');
  });

  it('phony 2019: an answer file the template has is merged, not replaced: its other passes, components and settings stay (read back with ntfscat, checked with xmllint)', async () => {
    const copy = await copyOf(w.win2019);
    const fs = w.win2019.fileSystems.find(f => f.partition === w.win2019.expect.partition)!;
    const own = ['<?xml version="1.0" encoding="utf-8"?>',
      '<unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">',
      '  <!-- the template\'s own answer file -->',
      '  <settings pass="windowsPE"><component name="Microsoft-Windows-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS"><UserData><AcceptEula>true</AcceptEula></UserData></component></settings>',
      '  <settings pass="specialize"><component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">',
      '    <ComputerName>TEMPLATE</ComputerName><ProductKey>AAAAA-BBBBB-CCCCC-DDDDD-EEEEE</ProductKey><TimeZone>W. Europe Standard Time</TimeZone></component></settings>',
      '  <settings pass="oobeSystem">',
      '    <component name="Microsoft-Windows-International-Core" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS"><UILanguage>de-DE</UILanguage></component>',
      '    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS"><OOBE><ProtectYourPC>3</ProtectYourPC></OOBE>',
      '      <UserAccounts><LocalAccounts><LocalAccount wcm:action="add"><Name>ops</Name><Group>Administrators</Group></LocalAccount></LocalAccounts></UserAccounts></component>',
      '  </settings>', '</unattend>', ''].join('\r\n');
    // written into the copy with ntfs-3g, not with Ferry
    const loop = String((await execa('losetup', ['-f', '--show', '-o', String(fs.start), '--sizelimit', String(fs.size), copy])).stdout).trim();
    const mnt = join(dir, `mnt-${++n}`);
    await mkdir(mnt);
    try {
      await execa('ntfs-3g', [loop, mnt]);
      try {
        await mkdir(join(mnt, 'Windows', 'Panther'), { recursive: true });
        await writeFile(join(mnt, 'Windows', 'Panther', 'unattend.xml'), own);
      } finally { await execa('umount', [mnt]); }
    } finally { await execa('losetup', ['-d', loop]); }
    const r = await customize(copy, { hostname: 'merge-01', newIdentity: true });
    assert.ok(r.changes.some(ch => /Panther\/unattend\.xml$/.test(ch.file) && /merged into the guest's own/.test(ch.after)), JSON.stringify(r.changes.map(ch => ch.file)));
    const xml = await (await Readback.of(copy, w.win2019)).text('/Windows/Panther/unattend.xml');
    const file = join(dir, `merged-${++n}.xml`);
    await writeFile(file, xml);
    const xpath = async (expr: string) => String((await execa('xmllint', ['--xpath', expr, file])).stdout).trim();
    const comp = (pass: string, name: string) => `/*[local-name()='unattend']/*[local-name()='settings'][@pass='${pass}']/*[local-name()='component'][@name='${name}']`;
    assert.equal(await xpath(`count(//*[local-name()='settings'])`), '3', 'windowsPE, specialize, oobeSystem: once each');
    assert.equal(await xpath(`string(${comp('specialize', 'Microsoft-Windows-Shell-Setup')}/*[local-name()='ComputerName'])`), 'MERGE-01');
    assert.equal(await xpath(`count(//*[local-name()='ComputerName'])`), '1');
    assert.equal(await xpath(`string(${comp('specialize', 'Microsoft-Windows-Shell-Setup')}/*[local-name()='ProductKey'])`), 'AAAAA-BBBBB-CCCCC-DDDDD-EEEEE');
    assert.equal(await xpath(`string(${comp('specialize', 'Microsoft-Windows-Shell-Setup')}/*[local-name()='TimeZone'])`), 'W. Europe Standard Time');
    assert.equal(await xpath(`string(${comp('windowsPE', 'Microsoft-Windows-Setup')}//*[local-name()='AcceptEula'])`), 'true');
    assert.equal(await xpath(`string(${comp('oobeSystem', 'Microsoft-Windows-International-Core')}/*[local-name()='UILanguage'])`), 'de-DE');
    const oobe = `${comp('oobeSystem', 'Microsoft-Windows-Shell-Setup')}/*[local-name()='OOBE']`;
    assert.equal(await xpath(`string(${oobe}/*[local-name()='ProtectYourPC'])`), '3');
    assert.equal(await xpath(`string(${oobe}/*[local-name()='HideEULAPage'])`), 'true');
    assert.equal(await xpath(`string(${comp('oobeSystem', 'Microsoft-Windows-Shell-Setup')}//*[local-name()='LocalAccount']/*[local-name()='Name'])`), 'ops');
    assert.match(xml, /the template's own answer file/);

    // an answer file that is not XML: a typed error, the image unchanged
    const broken = await copyOf(w.win2019);
    const loop2 = String((await execa('losetup', ['-f', '--show', '-o', String(fs.start), '--sizelimit', String(fs.size), broken])).stdout).trim();
    try {
      await execa('ntfs-3g', [loop2, mnt]);
      try {
        await mkdir(join(mnt, 'Windows', 'Panther'), { recursive: true });
        await writeFile(join(mnt, 'Windows', 'Panther', 'unattend.xml'), '<unattend><settings pass="specialize">');
      } finally { await execa('umount', [mnt]); }
    } finally { await execa('losetup', ['-d', loop2]); }
    await refused(broken, () => ({ hostname: 'merge-02', newIdentity: true }), 'ANSWER_FILE_UNREADABLE', /Panther\/unattend\.xml .*not well-formed XML/);
  });

  it('phony 2019: --dry-run reports the same changes and writes nothing', async () => {
    const copy = await copyOf(w.win2019);
    const sum = await sha256(copy);
    const dry = await customize(copy, c(), true);
    assert.equal(dry.dryRun, true);
    assert.deepEqual(dry.changes.map(ch => ch.file), r.changes.map(ch => ch.file));
    assert.equal(await sha256(copy), sum, 'the dry run wrote nothing');
  });
});

describe('a conversion job carries the Windows customization in its spec', () => {
  it('phony 2019: convert --detach with --domain-join and --run, run by a job worker: the answer file and the RunOnce entry are on the converted disk', async () => {
    const target = join(dir, 'job-2019.raw');
    const q = await ferry(['convert', w.win2019.image, target, '--hostname', 'job-clone-3', '--domain-join', `corp.example,user=CORP\\joiner,password-file=${pwFile}`,
      '--run', 'hello@1', '--detach', '--json'], { env });
    assert.equal(q.exitCode, 0, q.stderr);
    const job = JSON.parse(q.stdout) as { id: string; spec: { customize: Record<string, unknown> } };
    assert.deepEqual(job.spec.customize, { hostname: 'job-clone-3', domainJoin: `corp.example,user=CORP\\joiner,password-file=${pwFile}`, run: ['hello@1'] });
    const worker = execa('node', [FERRY, 'jobs', 'run-worker'], { env: { ...process.env, ...env }, reject: false, stdin: 'ignore' });
    let state = '';
    try {
      for (let i = 0; i < 600 && !['done', 'failed', 'cancelled'].includes(state); i++) {
        await new Promise(r => setTimeout(r, 500));
        const s = await ferry(['jobs', 'show', job.id, '--json'], { env });
        assert.equal(s.exitCode, 0, s.stderr);
        const j = JSON.parse(s.stdout) as { state: string; error?: unknown };
        state = j.state;
        if (state === 'failed') assert.fail(`the job failed: ${JSON.stringify(j.error)}`);
      }
    } finally {
      worker.kill('SIGTERM');
      await worker;
    }
    assert.equal(state, 'done');
    const rb = await Readback.of(target, w.win2019);
    const xml = await rb.text('/Windows/Panther/unattend.xml');
    assert.match(xml, /<JoinDomain>corp\.example<\/JoinDomain>/);
    assert.match(xml, new RegExp(`<Password>${PASSWORD}</Password>`));
    assert.match(xml, /<ComputerName>JOB-CLONE-3<\/ComputerName>/);
    assert.equal(await rb.value('/Windows/System32/config/SOFTWARE', 'Microsoft\\Windows\\CurrentVersion\\RunOnce', 'Ferry-hello'),
      '%SystemRoot%\\System32\\cmd.exe /c "%SystemRoot%\\Ferry\\tools\\hello\\1\\run.cmd"');
    const log = await ferry(['jobs', 'logs', job.id], { env });
    assert.ok(!log.stdout.includes(PASSWORD) && !log.stderr.includes(PASSWORD), 'no password in the job log');
  });
});

describe('phony Windows Server 2003 (NT 5): sysprep.inf and the sysprep folder', () => {
  it('phony 2003: --hostname --new-identity --domain-join (pre-staged account) write C:\\sysprep\\sysprep.inf and the tool beside it', async () => {
    const image = await copyOf(w.win2003);
    const r = await customize(image, { hostname: 'legacy-clone', newIdentity: true, domainJoin: parseDomainJoin('corp.example'), dhcp: ['Production'] });
    const rb = await Readback.of(image, w.win2003);
    const inf = await rb.text('/sysprep/sysprep.inf');
    assert.match(inf, /\[UserData\]\r\nComputerName=LEGACY-CLONE\r\n/);
    assert.match(inf, /\[Identification\]\r\nJoinDomain=corp\.example\r\n/);
    assert.doesNotMatch(inf, /DomainAdmin/);
    assert.equal(await rb.text('/sysprep/sysprep.exe'), 'phony sysprep v2\r\n');
    assert.match(await rb.text('/WINDOWS/Ferry/new-identity.cmd'), /sysprep\\sysprep\.exe" -reseal -mini -quiet -reboot/);
    const SYS = '/WINDOWS/system32/config/SYSTEM';
    assert.equal(await rb.value(SYS, 'ControlSet001\\Control\\ComputerName\\ComputerName', 'ComputerName'), 'LEGACY-CLONE');
    assert.equal(await rb.value(SYS, 'ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{5B7D2A48-1D2C-4E6F-9A31-0C2F6E8B7A10}', 'EnableDHCP'), '1');
    assert.equal(await rb.value(SYS, 'Setup', 'SetupType'), '2');
    assert.ok(r.changes.some(ch => ch.file === '/sysprep/sysprep.inf'));
  });
});

describe('phony Windows: bad input is refused before anything is written', () => {
  let image: string;
  before(async () => { image = await copyOf(w.win2019); });

  it('phony 2019: an unknown tool or version → TOOL_NOT_FOUND', async () => {
    await refused(image, () => ({ run: [parseToolRef('nope')] }), 'TOOL_NOT_FOUND', /no registered tool nope/);
    await refused(image, () => ({ hostname: 'x1', run: [parseToolRef('hello@9')] }), 'TOOL_NOT_FOUND', /hello version 9.*registered: hello@1/);
  });

  it('phony 2019: a Linux tool for a Windows guest → TOOL_WRONG_OS', async () => {
    await refused(image, () => ({ hostname: 'x1', run: [parseToolRef('lin')] }), 'TOOL_WRONG_OS');
  });

  it('phony 2019: an adapter the guest lacks → WINDOWS_NIC_UNKNOWN naming the ones it has', async () => {
    await refused(image, () => ({ hostname: 'x1', ip: [parseIpOption('eth7=192.0.2.1/24')] }), 'WINDOWS_NIC_UNKNOWN', /Ethernet0/);
  });

  it('phony 2019: a computer name Windows cannot carry, a bad --domain-join SPEC, an unsafe password file', async () => {
    await refused(image, () => ({ hostname: 'a-much-too-long-name' }), 'USAGE', /at most 15/);
    assert.throws(() => parseDomainJoin('corp.example,user=joiner'), /together/);
    assert.throws(() => parseDomainJoin('not a domain'), /not a domain name/);
    assert.throws(() => parseDomainJoin('corp.example,ou=A,ou=B'), /twice/);
    assert.throws(() => parseToolRef('bad name!'), /NAME\[@VERSION\]/);
    const open = join(dir, 'open.pw');
    await writeFile(open, PASSWORD);
    await chmod(open, 0o644);
    await refused(image, () => ({ domainJoin: parseDomainJoin(`corp.example,user=j,password-file=${open}`) }), 'SECRET_FILE_UNSAFE');
  });

  it('phony 2019 damaged: a truncated hive → WINDOWS_HIVE_UNREADABLE', async () => {
    const damaged = await copyOf(w.damaged);
    await refused(damaged, () => ({ hostname: 'x1' }), 'WINDOWS_HIVE_UNREADABLE');
  });

  it('phony 2019: --new-identity with no sysprep tool registered → TOOL_NOT_FOUND', async () => {
    const saved = process.env.FERRY_TOOLS;
    process.env.FERRY_TOOLS = join(dir, 'empty-store');
    try {
      await refused(image, () => ({ newIdentity: true }), 'TOOL_NOT_FOUND', /tools add CONTAINER --name sysprep/);
    } finally { process.env.FERRY_TOOLS = saved; }
  });

  it('phony 2019: the refused copy still reads as the fixture', async () => {
    const rb = await Readback.of(image, w.win2019);
    assert.equal(await rb.value('/Windows/System32/config/SYSTEM', 'ControlSet002\\Control\\ComputerName\\ComputerName', 'ComputerName'), 'FERRY-W2K19');
    assert.ok(await rb.absent('/Windows/Ferry'));
    assert.equal(await readFile(pwFile, 'utf8'), `${PASSWORD}\n`);
  });
});
