// The hardware description and its three generators (libvirt XML, OVF,
// vmx) and the OVA tar reader, without daemons or images: fast checks of
// each profile's mapping, the MAC rule and the refusals.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { execa } from 'execa';
import { FerryError } from '../src/errors.js';
import { describeHardware, guestFacts, parseMemory, type GuestFacts } from '../src/register/hardware.js';
import { domainXml } from '../src/register/libvirt-xml.js';
import { ovfEnvelope } from '../src/register/ovf.js';
import { firstDiskHref, ovaDisk, tarMembers } from '../src/sources/ova.js';
import { writeOva } from '../src/register/ova.js';
import { vmxFile } from '../src/register/vmx.js';
import { loadProfile } from '../src/profiles/profiles.js';
import { tempDir } from './support/harness.js';

const dir = await tempDir();
const disk = { path: '/images/it\'s & <weird>.qcow2', format: 'qcow2', virtualSize: 8 * 2 ** 30 };
const debian: GuestFacts = { family: 'linux', distro: 'debian', version: '12', bits: 64, name: 'Debian GNU/Linux 12 (bookworm)', firmware: 'bios', macs: ['00:0c:29:aa:bb:cc'] };
const xmlOk = async (xml: string) => { await execa('xmllint', ['--noout', '-'], { input: xml }); };
const code = (fn: () => unknown) => { try { fn(); } catch (e) { return (e as FerryError).code; } return 'no error'; };

describe('hardware description', () => {
  it('takes the profile, then overrides; the MAC: given, else the guest binding, else generated 52:54:00', async () => {
    const p = await loadProfile('kvm-virtio');
    const hw = describeHardware(p, { name: 'vm1' }, disk, debian);
    assert.deepEqual([hw.machine, hw.firmware, hw.cpus, hw.memoryMiB, hw.disk.bus, hw.nic.model], ['q35', 'bios', 2, 2048, 'virtio-blk', 'virtio-net-pci']);
    assert.deepEqual([hw.nic.mac, hw.nic.macSource], ['00:0c:29:aa:bb:cc', 'guest']);
    const given = describeHardware(p, { name: 'vm1', mac: '52:54:00:AA:00:01', cpus: 4, memoryMiB: parseMemory('3G') }, disk, debian);
    assert.deepEqual([given.nic.mac, given.nic.macSource, given.cpus, given.memoryMiB], ['52:54:00:aa:00:01', 'given', 4, 3072]);
    const gen = describeHardware(p, { name: 'vm1' }, disk, { ...debian, macs: [] });
    assert.equal(gen.nic.macSource, 'generated');
    assert.match(gen.nic.mac, /^52:54:00(:[0-9a-f]{2}){3}$/);
  });

  it("a UEFI guest gets UEFI firmware whatever the profile says", async () => {
    const hw = describeHardware(await loadProfile('kvm-virtio'), { name: 'u' }, disk, { ...debian, firmware: 'uefi' });
    assert.equal(hw.firmware, 'uefi');
    assert.match(domainXml(hw, { serialLog: '/tmp/s.log' }), /<os firmware='efi'>/);
  });

  it('refuses a physical profile, bad names, MACs, CPUs and memory', async () => {
    const p = await loadProfile('kvm-legacy');
    assert.equal(code(() => describeHardware(p, { name: 'bad name' }, disk, debian)), 'USAGE');
    assert.equal(code(() => describeHardware(p, { name: 'ok', mac: '52:54:00:zz:00:01' }, disk, debian)), 'USAGE');
    assert.equal(code(() => describeHardware(p, { name: 'ok', cpus: 0 }, disk, debian)), 'USAGE');
    assert.equal(code(() => describeHardware(p, { name: 'ok', memoryMiB: 16 }, disk, debian)), 'USAGE');
    assert.equal(code(() => parseMemory('lots')), 'USAGE');
    assert.equal(parseMemory('512M'), 512);
    assert.equal(parseMemory('2GiB'), 2048);
    const physical = await loadProfile('physical');
    assert.equal(code(() => describeHardware(physical, { name: 'ok' }, disk, debian)), 'USAGE');
  });

  it('reads guest facts from an inspection report (none: generic)', () => {
    assert.deepEqual(guestFacts(undefined), { family: 'unknown', bits: 64, name: 'unknown operating system', macs: [] });
  });
});

describe('libvirt domain XML', () => {
  it('kvm-legacy: TCG domain, pc machine, IDE disk, e1000, serial + console to the log file; escaped paths', async () => {
    const hw = describeHardware(await loadProfile('kvm-legacy'), { name: 'legacy' }, disk, debian);
    const xml = domainXml(hw, { serialLog: '/var/log/x & y.log' });
    await xmlOk(xml);
    assert.match(xml, /^<domain type='qemu'>/);
    assert.match(xml, /<type arch='x86_64' machine='pc'>hvm<\/type>/);
    assert.match(xml, /<target dev='hda' bus='ide'\/>/);
    assert.match(xml, /<source file='\/images\/it&apos;s &amp; &lt;weird&gt;.qcow2'\/>/);
    assert.match(xml, /<interface type='user'>\s*<mac address='00:0c:29:aa:bb:cc'\/>\s*<model type='e1000'\/>/);
    assert.match(xml, /<serial type='file'>\s*<source path='\/var\/log\/x &amp; y.log' append='on'\/>/);
    assert.match(xml, /<console type='file'>[\s\S]*<target type='serial' port='0'\/>/);
    assert.match(xml, /<memory unit='MiB'>1024<\/memory>/);
    assert.match(domainXml(hw, { serialLog: '/s', domainType: 'kvm', network: 'default' }), /^<domain type='kvm'>[\s\S]*<interface type='network'>\s*<source network='default'\/>/);
  });

  it('vmware profile on libvirt: pc machine, pvscsi controller, vmxnet3; hyperv refused (storvsc)', async () => {
    const xml = domainXml(describeHardware(await loadProfile('vmware'), { name: 'vmw' }, disk, debian), { serialLog: '/s' });
    await xmlOk(xml);
    assert.match(xml, /<controller type='scsi' index='0' model='vmpvscsi'\/>/);
    assert.match(xml, /<target dev='sda' bus='scsi'\/>/);
    assert.match(xml, /<model type='vmxnet3'\/>/);
    const hv = describeHardware(await loadProfile('hyperv'), { name: 'hv' }, disk, debian);
    assert.equal(code(() => domainXml(hv, { serialLog: '/s' })), 'UNSUPPORTED_HARDWARE');
  });
});

describe('OVF envelope and vmx', () => {
  it('the envelope is well-formed, its items sorted, and names its disk for the reader', async () => {
    for (const name of ['vmware', 'kvm-virtio', 'kvm-legacy', 'hyperv']) {
      const hw = describeHardware(await loadProfile(name), { name: 'vm' }, disk, debian);
      const ovf = ovfEnvelope(hw, { href: 'vm & co-disk1.vmdk', fileSize: 123, capacity: disk.virtualSize });
      await xmlOk(ovf);
      assert.deepEqual(firstDiskHref(ovf), { href: 'vm & co-disk1.vmdk', format: 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized' });
    }
  });

  it('the reader takes other writers\' prefixes (ovf: on every element)', () => {
    const foreign = `<ovf:Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"><ovf:References><ovf:File ovf:href="other.vmdk" ovf:id="f0"/><ovf:File ovf:href="disk.vmdk" ovf:id="f1"/></ovf:References>
      <ovf:DiskSection><ovf:Info>x</ovf:Info><ovf:Disk ovf:capacity="1" ovf:diskId="d1" ovf:fileRef="f1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></ovf:DiskSection></ovf:Envelope>`;
    assert.equal(firstDiskHref(foreign)?.href, 'disk.vmdk');
  });

  it('vmx: lsilogic/e1000/ide from kvm-legacy, quotes escaped, virtio refused', async () => {
    const legacy = vmxFile(describeHardware(await loadProfile('kvm-legacy'), { name: 'leg' }, disk, { ...debian, name: 'say "hi" | x' }), 'leg.vmdk');
    assert.match(legacy, /^ide0:0.fileName = "leg.vmdk"$/m);
    assert.match(legacy, /^ethernet0.virtualDev = "e1000"$/m);
    assert.match(legacy, /^serial0.fileType = "file"$/m);
    assert.match(legacy, /annotation = "[^"\n]*\|22hi\|22 \|7C x"/);
    const virtio = describeHardware(await loadProfile('kvm-virtio'), { name: 'v' }, disk, debian);
    assert.equal(code(() => vmxFile(virtio, 'v.vmdk')), 'UNSUPPORTED_HARDWARE');
  });
});

describe('OVA tar reader', () => {
  it('finds members in ustar, GNU long-name and pax archives, the .ovf first', async () => {
    const src = join(dir, 'members');
    await mkdir(src);
    const longName = `${'n'.repeat(120)}.vmdk`;
    const hw = describeHardware(await loadProfile('vmware'), { name: 'vm' }, disk, debian);
    await writeFile(join(src, 'vm.ovf'), ovfEnvelope(hw, { href: longName, fileSize: 4, capacity: 1 }));
    await writeFile(join(src, longName), 'KDMV');
    for (const format of ['gnu', 'posix']) {
      const tar = join(dir, `${format}.ova`);
      await execa('tar', [`--format=${format}`, '-cf', tar, '-C', src, 'vm.ovf', longName]);
      const members = (await tarMembers(tar))!.map(m => m.name);
      assert.deepEqual(members, ['vm.ovf', longName], format);
      const d = await ovaDisk(tar);
      assert.deepEqual([d.member.name, d.member.size, d.format], [longName, 4, 'vmdk']);
    }
    await writeOva(join(dir, 'ours.ova'), src, ['vm.ovf']);
    assert.deepEqual((await tarMembers(join(dir, 'ours.ova')))!.map(m => m.name), ['vm.ovf']);
    assert.equal(await tarMembers(join(src, 'vm.ovf')), undefined, 'not a tar');
  });
});
