// Matching an image to a machine from its inventory alone: which disk, and
// whether the image's architecture and firmware can run there. These are the
// refusals a deploy makes before anything is opened for writing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkPlatform, chooseDisk, type Inventory } from '../../src/machines/fit.js';
import type { InspectReport } from '../../src/inspect/report.js';
import { FerryError } from '../../src/errors.js';

const GiB = 2 ** 30;
const inv = (o: Partial<Inventory> = {}): Inventory => ({
  ferryInventory: 1, cpu: { architecture: 'x86_64' }, firmware: { type: 'BIOS' },
  disks: [
    { name: 'sda', path: '/dev/sda', sizeBytes: 500 * GiB, model: 'Samsung SSD 870', serial: 'S5Y1' },
    { name: 'sdb', path: '/dev/sdb', sizeBytes: 16 * GiB, model: 'USB stick', removable: true },
    { name: 'sr0', path: '/dev/sr0', kind: 'rom', sizeBytes: 0 },
  ],
  ...o,
});
const image = (arch: string, firmware: 'bios' | 'uefi') => ({ operatingSystems: [{ type: 'linux', arch, firmware }] }) as unknown as InspectReport;
const code = (f: () => unknown, c: string, re: RegExp) =>
  assert.throws(f, (e: unknown) => e instanceof FerryError && e.code === c && re.test(e.message), `${c} ${re}`);

describe('does the image fit the machine', () => {
  it('an x86_64 image on an aarch64 machine: ARCH_MISMATCH naming both; i686 runs on x86_64', () => {
    code(() => checkPlatform('m-1', inv({ cpu: { architecture: 'aarch64' } }), image('x86_64', 'bios'), 'deb.qcow2'), 'ARCH_MISMATCH', /deb\.qcow2 is a x86_64 system; machine m-1 is aarch64; nothing was written/);
    code(() => checkPlatform('m-1', inv({ cpu: { architecture: 'arm64' } }), image('amd64', 'bios'), 'deb.qcow2'), 'ARCH_MISMATCH', /aarch64/);
    assert.doesNotThrow(() => checkPlatform('m-1', inv(), image('i686', 'bios'), 'old.raw'));
    assert.doesNotThrow(() => checkPlatform('m-1', inv(), image('amd64', 'bios'), 'deb.qcow2'));
  });

  it('firmware: a UEFI image on a BIOS machine and the other way round are FIRMWARE_MISMATCH', () => {
    code(() => checkPlatform('m-2', inv(), image('x86_64', 'uefi'), 'efi.qcow2'), 'FIRMWARE_MISMATCH', /efi\.qcow2 boots with UEFI but machine m-2 has BIOS firmware/);
    code(() => checkPlatform('m-2', inv({ firmware: { type: 'UEFI' } }), image('x86_64', 'bios'), 'b.qcow2'), 'FIRMWARE_MISMATCH', /BIOS but machine m-2 has UEFI/);
    assert.doesNotThrow(() => checkPlatform('m-2', inv({ firmware: { type: 'UEFI' } }), image('x86_64', 'uefi'), 'efi.qcow2'));
  });

  it('an image with no operating system is refused', () => {
    code(() => checkPlatform('m-3', inv(), { operatingSystems: [] } as unknown as InspectReport, 'blank.raw'), 'NO_OS_FOUND', /blank\.raw holds no operating system/);
  });

  it('the disk: by name, path, serial or model; two candidates without a hint are ambiguous; a CD drive never counts', () => {
    assert.equal(chooseDisk('m-4', inv(), 'sda').path, '/dev/sda');
    assert.equal(chooseDisk('m-4', inv(), '/dev/sdb').path, '/dev/sdb');
    assert.equal(chooseDisk('m-4', inv(), 'S5Y1').path, '/dev/sda');
    assert.equal(chooseDisk('m-4', inv(), 'Samsung').path, '/dev/sda');
    code(() => chooseDisk('m-4', inv()), 'DISK_AMBIGUOUS', /machine m-4 has 2 disks; choose one with --disk: \/dev\/sda \(500\.0 GiB, Samsung SSD 870, serial S5Y1\); \/dev\/sdb/);
    code(() => chooseDisk('m-4', inv(), 'sr0'), 'DISK_NOT_FOUND', /--disk sr0 matches no disk/);
    code(() => chooseDisk('m-4', inv({ disks: [] })), 'DISK_NOT_FOUND', /reported no disk/);
    assert.equal(chooseDisk('m-4', inv({ disks: inv().disks!.slice(0, 1) })).path, '/dev/sda');
  });
});
