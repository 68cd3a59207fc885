// Export (issue 7): the converted Debian guest as an OVA, an OVF directory
// and a VMware .vmx + vmdk, each from the same hardware description. The OVF
// envelope is well-formed XML with the profile's hardware items, the
// manifest's digests match, the OVA holds the .ovf first, the disk is a
// streamOptimized vmdk; and the OVA is accepted back as a conversion source
// (`ferry convert OUT.ova back.qcow2`) whose file systems verify equivalent
// to the original, the OVA unchanged.
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { execa } from 'execa';
import { buildDebianGuest } from './support/fixtures.js';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { assertSameFiles } from './support/independent.js';

guardMachine();
const dir = await tempDir();
const MAC = '52:54:00:0e:0e:01';

async function exportJson(args: string[]): Promise<{ exitCode: number; result: Record<string, any>; stderr: string }> {
  const r = await ferry(['export', ...args, '--json']);
  const last = r.stdout.trim().split('\n').at(-1);
  return { exitCode: r.exitCode, result: last ? JSON.parse(last) : {}, stderr: r.stderr };
}

/** rasd:Item elements of an envelope as field maps */
function items(ovf: string): Record<string, string>[] {
  return [...ovf.matchAll(/<Item>([\s\S]*?)<\/Item>/g)].map(m =>
    Object.fromEntries([...m[1].matchAll(/<rasd:(\w+)>([^<]*)<\/rasd:\1>/g)].map(f => [f[1], f[2]])));
}

async function checkManifest(folder: string, mf: string, members: string[]): Promise<void> {
  const lines = (await readFile(join(folder, mf), 'utf8')).trim().split('\n');
  assert.deepEqual(lines.map(l => /^SHA256\((.+)\)= [0-9a-f]{64}$/.exec(l)?.[1]), members, 'one SHA256 line per member');
  for (const l of lines) {
    const [, file, digest] = /^SHA256\((.+)\)= ([0-9a-f]{64})$/.exec(l)!;
    assert.equal(await sha256(join(folder, file)), digest, `${file}'s digest matches`);
  }
}

async function qemuInfo(path: string): Promise<Record<string, any>> {
  return JSON.parse((await execa('qemu-img', ['info', '--output=json', path])).stdout);
}

let image: string;
let guestSum: string;
let imageSum: string;
before(async () => {
  const guest = await buildDebianGuest();
  guestSum = await sha256(guest);
  image = join(dir, 'debian.qcow2');
  const r = await ferry(['convert', guest, image, '--no-progress']);
  assert.equal(r.exitCode, 0, `convert failed:\n${r.stderr}`);
  imageSum = await sha256(image);
});


describe('ferry export', () => {
  const ova = join(dir, 'out', 'debian.ova');
  let ovaSum: string;

  it('--ova: OVF 2.0 envelope first, then the manifest, then a streamOptimized vmdk; hardware from profile vmware', async () => {
    await mkdir(join(dir, 'out'));
    const t0 = Date.now();
    const r = await exportJson([image, '--ova', ova, '--mac', MAC]);
    assert.equal(r.exitCode, 0, r.stderr);
    process.stderr.write(`# export --ova took ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    assert.deepEqual(r.result.files, [ova]);
    assert.deepEqual(await readdir(join(dir, 'out')), ['debian.ova'], 'no staging file is left next to it');

    // member order and tar format, read straight from the archive
    assert.deepEqual((await execa('tar', ['-tf', ova])).stdout.split('\n'), ['debian.ovf', 'debian.mf', 'debian-disk1.vmdk']);
    const head = Buffer.alloc(512);
    const fh = await (await import('node:fs/promises')).open(ova, 'r');
    await fh.read(head, 0, 512, 0);
    await fh.close();
    assert.equal(head.subarray(257, 263).toString('latin1'), 'ustar\0', 'POSIX ustar, as OVF wants');

    const x = join(dir, 'ova-x');
    await mkdir(x);
    await execa('tar', ['-xf', ova, '-C', x]);
    const ovfPath = join(x, 'debian.ovf');
    await execa('xmllint', ['--noout', ovfPath]);
    const ovf = await readFile(ovfPath, 'utf8');
    assert.match(ovf, /<Envelope ovf:version="2.0"[^>]* xmlns="http:\/\/schemas.dmtf.org\/ovf\/envelope\/2"/);
    const vmdkSize = (await stat(join(x, 'debian-disk1.vmdk'))).size;
    assert.match(ovf, new RegExp(`<File ovf:id="file1" ovf:href="debian-disk1.vmdk" ovf:size="${vmdkSize}"/>`));
    assert.match(ovf, /<Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="2147483648"[\s\S]*?vmdk.html#streamOptimized"/);
    assert.match(ovf, /<NetworkSection>[\s\S]*<Network ovf:name="VM Network">/);
    assert.match(ovf, /<OperatingSystemSection ovf:id="96" vmw:osType="debian12_64Guest">/);
    assert.match(ovf, /<vssd:VirtualSystemType>vmx-14<\/vssd:VirtualSystemType>/);
    const all = items(ovf);
    const byType = (t: number) => all.filter(i => i.ResourceType === String(t));
    assert.equal(byType(3)[0].VirtualQuantity, '2', 'CPUs from the profile');
    assert.equal(byType(4)[0].VirtualQuantity, '2048');
    assert.equal(byType(4)[0].AllocationUnits, 'byte * 2^20');
    const ctl = byType(6)[0];
    assert.equal(ctl.ResourceSubType, 'VirtualSCSI', 'pvscsi controller');
    const disk = byType(17)[0];
    assert.equal(disk.Parent, ctl.InstanceID, 'the disk hangs on that controller');
    assert.equal(disk.HostResource, 'ovf:/disk/vmdisk1');
    const nic = byType(10)[0];
    assert.deepEqual([nic.ResourceSubType, nic.Address, nic.Connection], ['VmxNet3', MAC, 'VM Network']);
    for (const i of all) {
      const keys = Object.keys(i);
      assert.deepEqual(keys, [...keys].sort(), 'rasd elements in schema (alphabetical) order');
    }

    await checkManifest(x, 'debian.mf', ['debian.ovf', 'debian-disk1.vmdk']);
    const info = await qemuInfo(join(x, 'debian-disk1.vmdk'));
    assert.equal(info.format, 'vmdk');
    assert.equal(info['format-specific'].data['create-type'], 'streamOptimized');
    assert.equal(info['virtual-size'], 2147483648);
    ovaSum = await sha256(ova);
  });

  it('the OVA is a conversion source: info, convert back to qcow2, verify equivalent to the original; the OVA unchanged', async () => {
    const i = await ferry(['info', ova, '--json']);
    assert.equal(i.exitCode, 0, i.stderr);
    const info = JSON.parse(i.stdout);
    assert.equal(info.format, 'ova');
    assert.equal(info.virtualSize, 2147483648);
    assert.ok(info.partitions.some((p: { fs?: string }) => p.fs === 'ext4'));

    const back = join(dir, 'back.qcow2');
    const c = await ferry(['convert', ova, back, '--no-progress']);
    assert.equal(c.exitCode, 0, c.stderr);
    await assertSameFiles(image, back);
    const v = await ferry(['verify', image, back, '--json']);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    assert.equal(JSON.parse(v.stdout).equivalent, true);
    // block mode copies the disk inside the OVA, not the tar around it
    const blocks = join(dir, 'back-block.qcow2');
    const b = await ferry(['convert', ova, blocks, '--mode', 'block', '--no-progress']);
    assert.equal(b.exitCode, 0, b.stderr);
    const same = await execa('qemu-img', ['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', image, blocks], { reject: false });
    assert.equal(same.exitCode, 0, 'the block copy holds the same disk as the exported image');
    assert.equal(await sha256(ova), ovaSum, 'the OVA is byte for byte unchanged');
  });

  it('--ovf DIR with profile kvm-legacy: IDE controller (PIIX4), E1000, the given memory and CPUs', async () => {
    const out = join(dir, 'ovf-dir');
    const r = await exportJson([image, '--ovf', out, '--profile', 'kvm-legacy', '--memory', '1536M', '--cpus', '3', '--name', 'legacy-vm']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((await readdir(out)).sort(), ['legacy-vm-disk1.vmdk', 'legacy-vm.mf', 'legacy-vm.ovf']);
    await execa('xmllint', ['--noout', join(out, 'legacy-vm.ovf')]);
    const ovf = await readFile(join(out, 'legacy-vm.ovf'), 'utf8');
    const all = items(ovf);
    const byType = (t: number) => all.filter(i => i.ResourceType === String(t));
    assert.equal(byType(3)[0].VirtualQuantity, '3');
    assert.equal(byType(4)[0].VirtualQuantity, '1536');
    assert.equal(byType(5)[0].ResourceSubType, 'PIIX4');
    assert.equal(byType(6).length, 0, 'no SCSI controller');
    assert.equal(byType(17)[0].Parent, byType(5)[0].InstanceID);
    assert.equal(byType(10)[0].ResourceSubType, 'E1000');
    assert.equal(byType(21).length, 1, 'kvm-legacy has a serial console: a serial port item');
    assert.match(ovf, /<vssd:VirtualSystemType>qemu-pc<\/vssd:VirtualSystemType>/);
    await checkManifest(out, 'legacy-vm.mf', ['legacy-vm.ovf', 'legacy-vm-disk1.vmdk']);
    assert.equal((await qemuInfo(join(out, 'legacy-vm-disk1.vmdk')))['format-specific'].data['create-type'], 'streamOptimized');
  });

  it('--vmx DIR: a .vmx for pvscsi + vmxnet3 and a monolithicSparse vmdk', async () => {
    const out = join(dir, 'vmx-dir');
    const r = await exportJson([image, '--vmx', out, '--mac', MAC]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((await readdir(out)).sort(), ['debian.vmdk', 'debian.vmx']);
    const vmx = Object.fromEntries((await readFile(join(out, 'debian.vmx'), 'utf8')).trim().split('\n')
      .map(l => /^(\S+) = "(.*)"$/.exec(l)!).map(m => [m[1], m[2]]));
    assert.equal(vmx['scsi0.virtualDev'], 'pvscsi');
    assert.equal(vmx['scsi0:0.fileName'], 'debian.vmdk');
    assert.equal(vmx['ethernet0.virtualDev'], 'vmxnet3');
    assert.equal(vmx['ethernet0.address'], MAC);
    assert.equal(vmx['ethernet0.checkMACAddress'], 'FALSE', 'a kept MAC outside VMware\'s range');
    assert.equal(vmx.guestOS, 'debian12-64');
    assert.equal(vmx.memsize, '2048');
    assert.equal(vmx.numvcpus, '2');
    const info = await qemuInfo(join(out, 'debian.vmdk'));
    assert.equal(info['format-specific'].data['create-type'], 'monolithicSparse');
    const vl = (await execa('qemu-img', ['compare', '-f', 'qcow2', '-F', 'vmdk', image, join(out, 'debian.vmdk')])).exitCode;
    assert.equal(vl, 0, 'the vmdk holds the same blocks');
  });

  describe('bad input: typed errors, nothing written', () => {
    it('--vmx with a virtio profile: UNSUPPORTED_HARDWARE, and the directory is not created', async () => {
      const out = join(dir, 'vmx-virtio');
      const r = await exportJson([image, '--vmx', out, '--profile', 'kvm-virtio']);
      assert.equal(r.exitCode, 2, r.stderr);
      assert.equal(r.result.code, 'UNSUPPORTED_HARDWARE');
      assert.equal(await stat(out).catch(() => 'absent'), 'absent');
    });

    it('an existing --ova target: TARGET_EXISTS, exit 4, the file untouched', async () => {
      const r = await exportJson([image, '--ova', ova]);
      assert.equal(r.exitCode, 4, r.stderr);
      assert.equal(r.result.code, 'TARGET_EXISTS');
      assert.equal(await sha256(ova), ovaSum);
    });

    it('no output or two outputs: USAGE', async () => {
      for (const args of [[image], [image, '--ova', join(dir, 'a.ova'), '--vmx', join(dir, 'v')]]) {
        const r = await exportJson(args);
        assert.equal(r.exitCode, 2, r.stderr);
      }
    });

    it('a tar without an envelope, or naming a missing disk: OVA_INVALID when read as a source', async () => {
      const bad = join(dir, 'bad');
      await mkdir(bad);
      await writeFile(join(bad, 'readme.txt'), 'not a virtual machine\n');
      await execa('tar', ['--format=ustar', '-cf', join(dir, 'noenvelope.ova'), '-C', bad, 'readme.txt']);
      const ovf = (await readFile(join(dir, 'ova-x', 'debian.ovf'), 'utf8')).replace('debian-disk1.vmdk', 'elsewhere.vmdk');
      await writeFile(join(bad, 'vm.ovf'), ovf);
      await execa('tar', ['--format=ustar', '-cf', join(dir, 'nodisk.ova'), '-C', bad, 'vm.ovf', 'readme.txt']);
      for (const [file, why] of [['noenvelope.ova', /no \.ovf envelope/], ['nodisk.ova', /elsewhere\.vmdk/]] as const) {
        const r = await ferry(['info', join(dir, file), '--json']);
        assert.equal(r.exitCode, 3, r.stderr);
        assert.equal(JSON.parse(r.stdout.trim().split('\n').at(-1)!).code, 'OVA_INVALID');
        assert.match(r.stderr, why);
      }
    });
  });
});

// last in the file, while the temp dir still holds the image
it('the converted source and the exported image are byte for byte unchanged', async () => {
  assert.equal(await sha256(await buildDebianGuest()), guestSum, 'the converted source is unchanged');
  assert.equal(await sha256(image), imageSum, 'export read its image without changing it');
});
