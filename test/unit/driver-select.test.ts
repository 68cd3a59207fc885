// The variant rule of the substitute-file cache: for the guest's release and
// patch level, the newest file of the needed kind that is not newer than the
// guest; for Linux modules, the one built for exactly the guest's kernel.
// A table of releases × patch levels × variants, 'nothing suitable' included.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chooseFile, missingDriverError, patchLevelOrder, type DriverWant, type VariantKind } from '../../src/drivers/select.js';
import { chooseGrubEfiSet, GRUB_EFI_VARIANT, grubEfiWant } from '../../src/drivers/grub-efi.js';
import type { DriverFile } from '../../src/drivers/store.js';
import type { LinuxOs } from '../../src/inspect/report.js';
import { FerryError } from '../../src/errors.js';

let nextId = 1;
function file(p: Partial<DriverFile> & Pick<DriverFile, 'component' | 'osFamily' | 'version' | 'arch'>): DriverFile {
  const id = nextId++;
  return {
    id, sha256: id.toString(16).padStart(64, '0'), size: 1000, patchLevels: [], container: `c${id}`,
    pathInContainer: p.component, pinned: false, importedAt: '2025-01-01T00:00:00.000Z', ...p,
  };
}
const hal = (osRelease: string, variant: string, version: string, patchLevels: string[], arch = 'x86') =>
  file({ component: variant.startsWith('hal') ? 'hal.dll' : 'ntoskrnl.exe', osFamily: 'windows', osRelease, variant, version, patchLevels, arch });

// Windows Server 2003 and XP media: RTM, SP1, SP2 — not every variant on every medium
const W = {
  rtmMacpi: hal('2003', 'halmacpi.dll', '5.2.3790.0', ['RTM']),
  rtmAcpi: hal('2003', 'halacpi.dll', '5.2.3790.0', ['RTM']),
  rtmHal: hal('2003', 'hal.dll', '5.2.3790.0', ['RTM']),
  sp1Macpi: hal('2003', 'halmacpi.dll', '5.2.3790.1830', ['SP1']),
  sp2Macpi: hal('2003', 'halmacpi.dll', '5.2.3790.3959', ['SP2']),
  sp2Aacpi: hal('2003', 'halaacpi.dll', '5.2.3790.3959', ['SP2']),
  sp1sp2Kernel: hal('2003', 'ntkrpamp.exe', '5.2.3790.1830', ['SP1', 'SP2']), // unchanged between SP1 and SP2
  sp2Kernel: hal('2003', 'ntkrnlmp.exe', '5.2.3790.3959', ['SP2']),
  x64Macpi: hal('2003', 'halmacpi.dll', '5.2.3790.3959', ['SP2'], 'amd64'),
  xpSp3: hal('xp', 'halmacpi.dll', '5.1.2600.5512', ['SP3']),
  win10a: hal('10', 'hal.dll', '10.0.19041.1', ['19045.2000'], 'amd64'),
  win10b: hal('10', 'hal.dll', '10.0.19041.3000', ['19045.3000'], 'amd64'),
};
const ALL = Object.values(W);

const MP_ACPI: VariantKind = { acpi: true, multiprocessor: true };
const UP_ACPI_PIC: VariantKind = { acpi: true, apic: false, multiprocessor: false };
const UP_ACPI_APIC: VariantKind = { acpi: true, apic: true, multiprocessor: false };
const NON_ACPI: VariantKind = { acpi: false, apic: false, multiprocessor: false };
const MP_PAE: VariantKind = { multiprocessor: true, pae: true };
const MP: VariantKind = { multiprocessor: true, pae: false };

describe('chooseFile: Windows HAL and kernel', () => {
  const table: [string, DriverWant, DriverFile | undefined][] = [
    // release × patch level, multiprocessor ACPI
    ['2003 RTM MP ACPI → RTM halmacpi', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'RTM', arch: 'x86', variant: MP_ACPI }, W.rtmMacpi],
    ['2003 without patch level counts as RTM', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', arch: 'x86', variant: MP_ACPI }, W.rtmMacpi],
    ['2003 SP1 MP ACPI → SP1 halmacpi, not the newer SP2 one', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP1', arch: 'x86', variant: MP_ACPI }, W.sp1Macpi],
    ['2003 SP2 MP ACPI → SP2 halmacpi', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'i386', variant: MP_ACPI }, W.sp2Macpi],
    ["'Service Pack 2' (CSDVersion) = SP2", { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'Service Pack 2', arch: 'x86', variant: MP_ACPI }, W.sp2Macpi],
    ['2003 SP3 (newer than any medium) → newest not newer: SP2', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP3', arch: 'x86', variant: MP_ACPI }, W.sp2Macpi],
    // variants of the same release and level
    ['2003 SP2 uniprocessor ACPI PIC → the RTM halacpi (no newer one stored)', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86', variant: UP_ACPI_PIC }, W.rtmAcpi],
    ['2003 SP2 uniprocessor ACPI APIC → SP2 halaacpi', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86', variant: UP_ACPI_APIC }, W.sp2Aacpi],
    ['2003 SP1 uniprocessor ACPI APIC → nothing (halaacpi only on SP2)', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP1', arch: 'x86', variant: UP_ACPI_APIC }, undefined],
    ['2003 SP2 non-ACPI → hal.dll', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86', variant: NON_ACPI }, W.rtmHal],
    ['exact variant name', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86', variant: 'HALMACPI.DLL' }, W.sp2Macpi],
    // kernels: a file on both SP1 and SP2 media fits both
    ['2003 SP1 MP PAE kernel → ntkrpamp of SP1/SP2', { component: 'ntoskrnl.exe', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP1', arch: 'x86', variant: MP_PAE }, W.sp1sp2Kernel],
    ['2003 SP2 MP PAE kernel → same file', { component: 'ntoskrnl.exe', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86', variant: MP_PAE }, W.sp1sp2Kernel],
    ['2003 RTM MP PAE kernel → nothing (first on SP1)', { component: 'ntoskrnl.exe', osFamily: 'windows', osRelease: '2003', patchLevel: 'RTM', arch: 'x86', variant: MP_PAE }, undefined],
    ['2003 SP1 MP kernel → nothing (ntkrnlmp only from SP2)', { component: 'ntoskrnl.exe', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP1', arch: 'x86', variant: MP }, undefined],
    // architecture and release
    ['2003 SP2 amd64 → the x64 HAL', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86_64', variant: MP_ACPI }, W.x64Macpi],
    ['2003 SP1 amd64 → nothing (only an SP2 x64 HAL)', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP1', arch: 'amd64', variant: MP_ACPI }, undefined],
    ['2003 SP2 arm64 → nothing (wrong arch)', { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'arm64', variant: MP_ACPI }, undefined],
    ['XP SP3 → the XP HAL, never a 2003 one', { component: 'hal.dll', osFamily: 'windows', osRelease: 'xp', patchLevel: 'SP3', arch: 'x86', variant: MP_ACPI }, W.xpSp3],
    ['XP SP2 → nothing (only SP3 stored)', { component: 'hal.dll', osFamily: 'windows', osRelease: 'xp', patchLevel: 'SP2', arch: 'x86', variant: MP_ACPI }, undefined],
    ['2008 → nothing (release not stored)', { component: 'hal.dll', osFamily: 'windows', osRelease: '2008', patchLevel: 'SP2', arch: 'x86', variant: MP_ACPI }, undefined],
    ['Linux want never gets a Windows file', { component: 'hal.dll', osFamily: 'linux', kernel: '5.2.3790.0', arch: 'x86' }, undefined],
    // build.UBR patch levels
    ['Windows 10 19045.2500 → the 19045.2000 file', { component: 'hal.dll', osFamily: 'windows', osRelease: '10', patchLevel: '19045.2500', arch: 'amd64' }, W.win10a],
    ['Windows 10 19045.3000 → the 19045.3000 file', { component: 'hal.dll', osFamily: 'windows', osRelease: '10', patchLevel: '19045.3000', arch: 'amd64' }, W.win10b],
    ['Windows 10 MP ACPI → hal.dll (the one HAL since NT 6)', { component: 'hal.dll', osFamily: 'windows', osRelease: '10', patchLevel: '19045.3000', arch: 'amd64', variant: MP_ACPI }, W.win10b],
    ['Windows 10 non-ACPI → nothing', { component: 'hal.dll', osFamily: 'windows', osRelease: '10', patchLevel: '19045.3000', arch: 'amd64', variant: NON_ACPI }, undefined],
    ['Windows 10 19041.1 → nothing (older than every file)', { component: 'hal.dll', osFamily: 'windows', osRelease: '10', patchLevel: '19041.1', arch: 'amd64' }, undefined],
  ];
  for (const [name, want, expected] of table) {
    it(name, () => assert.equal(chooseFile(ALL, want)?.id, expected?.id));
  }

  it('a file not tied to a patch level fits every level; the newer driver version wins', () => {
    const a = file({ component: 'viostor.sys', osFamily: 'windows', osRelease: '2003', version: '52.3.103.18100', arch: 'x86' });
    const b = file({ component: 'viostor.sys', osFamily: 'windows', osRelease: '2003', version: '52.74.104.20000', arch: 'x86' });
    const want: DriverWant = { component: 'viostor.sys', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86' };
    assert.equal(chooseFile([b, a], want)?.id, b.id);
    assert.equal(chooseFile([a, b], { ...want, patchLevel: undefined })?.id, b.id);
    assert.equal(chooseFile([a, b], { ...want, osRelease: '2k8' }), undefined);
  });

  it('an empty candidate list chooses nothing', () => {
    assert.equal(chooseFile([], { component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86' }), undefined);
  });
});

describe('chooseFile: Linux modules', () => {
  const mod = (version: string, variant: string, arch: string, extra: Partial<DriverFile> = {}) =>
    file({ component: 'virtio_blk', osFamily: 'linux', version, variant, arch, ...extra });
  const deb27 = mod('6.1.0-27-amd64', 'amd64', 'amd64', { osRelease: 'debian 12', containerVersion: '6.1.115-1' });
  const deb27b = mod('6.1.0-27-amd64', 'amd64', 'amd64', { osRelease: 'debian 12', containerVersion: '6.1.115-1+b1' });
  const deb28 = mod('6.1.0-28-amd64', 'amd64', 'amd64', { osRelease: 'debian 12' });
  const cloud = mod('6.1.0-27-cloud-amd64', 'cloud-amd64', 'amd64', { osRelease: 'debian 12' });
  const rhel = mod('5.14.0-427.13.1.el9_4.x86_64', 'x86_64', 'amd64', { osRelease: 'rhel 9.4' });
  const mods = [deb27, deb28, cloud, rhel, deb27b];
  const table: [string, DriverWant, DriverFile | undefined][] = [
    ['exact kernel release', { component: 'virtio_blk', osFamily: 'linux', kernel: '6.1.0-27-amd64', arch: 'amd64' }, deb27b],
    ['the cloud flavour is its own kernel', { component: 'virtio_blk', osFamily: 'linux', kernel: '6.1.0-27-cloud-amd64', arch: 'amd64' }, cloud],
    ['module names given with a dash', { component: 'virtio_blk', osFamily: 'linux', kernel: '6.1.0-28-amd64', arch: 'x86_64', osRelease: 'debian 12' }, deb28],
    ['RHEL kernel, x86_64 = amd64', { component: 'virtio_blk', osFamily: 'linux', kernel: '5.14.0-427.13.1.el9_4.x86_64', arch: 'x86_64' }, rhel],
    ['never a module of a newer or older kernel', { component: 'virtio_blk', osFamily: 'linux', kernel: '6.1.0-26-amd64', arch: 'amd64' }, undefined],
    ['wrong arch', { component: 'virtio_blk', osFamily: 'linux', kernel: '6.1.0-27-amd64', arch: 'i386' }, undefined],
    ['a known, different release', { component: 'virtio_blk', osFamily: 'linux', kernel: '6.1.0-27-amd64', arch: 'amd64', osRelease: 'debian 11' }, undefined],
    ['wrong variant', { component: 'virtio_blk', osFamily: 'linux', kernel: '6.1.0-27-amd64', arch: 'amd64', variant: 'cloud-amd64' }, undefined],
    ['no kernel given', { component: 'virtio_blk', osFamily: 'linux', arch: 'amd64' }, undefined],
    ['another module', { component: 'virtio_net', osFamily: 'linux', kernel: '6.1.0-27-amd64', arch: 'amd64' }, undefined],
  ];
  for (const [name, want, expected] of table) {
    it(name, () => assert.equal(chooseFile(mods, want)?.id, expected?.id));
  }
});

describe('patchLevelOrder', () => {
  const sorted = (xs: string[]) => [...xs].sort(patchLevelOrder);
  it('orders service packs, builds and package versions', () => {
    assert.deepEqual(sorted(['SP2', 'RTM', 'SP3', 'SP1']), ['RTM', 'SP1', 'SP2', 'SP3']);
    assert.equal(patchLevelOrder('Service Pack 2', 'SP2'), 0);
    assert.equal(patchLevelOrder('', 'RTM'), 0);
    assert.ok(patchLevelOrder('17763.5000', '17763.999') > 0);
    assert.ok(patchLevelOrder('19045.1', '17763.5000') > 0);
    assert.ok(patchLevelOrder('6.1.115-1', '6.1.115-1+deb12u1') < 0);
    assert.ok(patchLevelOrder('6.1.0-27', '6.1.0-100') < 0);
  });
});

describe('missingDriverError', () => {
  it('names the Debian package and version to import (exit 5)', () => {
    const e = missingDriverError({ component: 'virtio_blk', osFamily: 'linux', kernel: '6.1.0-50-amd64', arch: 'amd64' },
      { package: 'linux-image-6.1.0-50-amd64', packageVersion: '6.1.158-1' });
    assert.ok(e instanceof FerryError);
    assert.equal(e.code, 'DRIVER_MISSING');
    assert.equal(e.exitCode, 5);
    assert.match(e.message, /kernel module virtio_blk for kernel 6\.1\.0-50-amd64/);
    assert.match(e.message, /import the Debian package linux-image-6\.1\.0-50-amd64 \(version 6\.1\.158-1\)/);
    assert.match(e.message, /nothing was written/);
    assert.equal(e.details.import, 'the Debian package linux-image-6.1.0-50-amd64 (version 6.1.158-1)');
  });
  it('guesses an rpm kernel package from an el9 kernel', () => {
    const e = missingDriverError({ component: 'virtio_scsi', osFamily: 'linux', kernel: '5.14.0-427.13.1.el9_4.x86_64', arch: 'x86_64' });
    assert.match(e.message, /import the rpm package kernel-core-5\.14\.0-427\.13\.1\.el9_4\.x86_64 with/);
  });
  it('names the Windows medium and service pack', () => {
    const e = missingDriverError({ component: 'hal.dll', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP1', arch: 'x86', variant: MP_ACPI },
      { medium: 'the Windows Server 2003 Service Pack 1 CD' });
    assert.equal(e.exitCode, 5);
    assert.match(e.message, /no hal\.dll variant acpi multiprocessor for Windows 2003 SP1 \(x86\)/);
    assert.match(e.message, /import the Windows Server 2003 Service Pack 1 CD \(SP1, x86\) with --os-release 2003 --patch-level SP1/);
    const plain = missingDriverError({ component: 'viostor.sys', osFamily: 'windows', osRelease: '2003', patchLevel: 'SP2', arch: 'x86' });
    assert.match(plain.message, /import the Windows 2003 service pack medium \(SP2, x86\)/);
  });
});

describe('GRUB x86_64-efi sets: exactly the guest\'s GRUB version', () => {
  const grub = (component: string, version: string) => file({ component, osFamily: 'linux', version, variant: GRUB_EFI_VARIANT, arch: 'amd64', container: 'grub-efi-amd64-bin' });
  const u1 = ['kernel.img', 'moddep.lst', 'normal.mod'].map(c => grub(c, '2.06-13+deb12u1'));
  const u2 = ['kernel.img', 'moddep.lst', 'normal.mod'].map(c => grub(c, '2.06-13+deb12u2'));
  const u2again = grub('normal.mod', '2.06-13+deb12u2');
  const partial = grub('normal.mod', '2.12-1');
  const kernelModule = file({ component: 'normal.mod', osFamily: 'linux', version: '2.12-1', variant: 'amd64', arch: 'amd64' });

  it('picks the set of that version, the later import of a file; an incomplete set or another version is none', () => {
    const all = [...u1, ...u2, u2again, partial, kernelModule];
    assert.deepEqual(chooseGrubEfiSet(all, '2.06-13+deb12u2').map(f => f.id).sort(), [u2[0].id, u2[1].id, u2again.id].sort());
    assert.deepEqual(chooseGrubEfiSet(all, '2.06-13+deb12u1').map(f => f.id).sort(), u1.map(f => f.id).sort());
    assert.deepEqual(chooseGrubEfiSet(all, '2.12-1'), [], 'no kernel.img/moddep.lst of 2.12-1');
    assert.deepEqual(chooseGrubEfiSet(all, '2.06-13'), []);
  });

  it('the guest\'s GRUB version and package: grub-common (dpkg), grub2-common without its epoch (rpm), none without GRUB', () => {
    const os = (manager: 'dpkg' | 'rpm', list: { name: string; version: string }[]) => ({ packages: { manager, list } }) as unknown as LinuxOs;
    assert.deepEqual(grubEfiWant(os('dpkg', [{ name: 'grub-pc', version: '2.06-13+deb12u2' }, { name: 'grub-common', version: '2.06-13+deb12u2' }])),
      { version: '2.06-13+deb12u2', package: 'grub-efi-amd64-bin', packageKind: 'Debian' });
    assert.deepEqual(grubEfiWant(os('rpm', [{ name: 'grub2-common', version: '1:2.06-80.el9' }])), { version: '2.06-80.el9', package: 'grub2-efi-x64-modules', packageKind: 'rpm' });
    assert.equal(grubEfiWant(os('dpkg', [{ name: 'bash', version: '5.2.15-2+b2' }])).version, undefined);
  });
});
