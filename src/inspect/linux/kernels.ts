// Installed kernels: their images in /boot, their modules in /lib/modules,
// and which storage and network drivers each has as a module.
import { posix } from 'node:path';
import type { GuestFs } from '../guest-fs.js';
import type { KernelModuleSet, LinuxKernel } from '../report.js';
import { moduleName, readInitramfs } from './initramfs.js';

/** module paths below kernel/ that hold disk-controller and network drivers */
const STORAGE_DIRS = /^kernel\/drivers\/(block|scsi|ata|nvme|message\/fusion|virtio|md|mmc)\//;
const NETWORK_DIRS = /^kernel\/drivers\/net\/(?!wireless\/|can\/|wwan\/|ieee802154\/)/;

export async function findKernels(fs: GuestFs): Promise<LinuxKernel[]> {
  const kernels: LinuxKernel[] = [];
  for (const name of await fs.list('/boot')) {
    const m = /^(?:vmlinuz|vmlinux|bzImage|kernel)-(.+)$/.exec(name);
    if (!m || /rescue/.test(m[1]) || m[1].endsWith('.old')) continue;
    const version = m[1];
    const modules = await kernelModules(fs, version);
    const initramfs = await findInitramfs(fs, version);
    const missing = initramfs && !initramfs.error ? missingFrom(modules, new Set(initramfs.modules)) : { storage: [], network: [] };
    kernels.push({ version, flavour: flavourOf(version), path: `/boot/${name}`, default: false, initramfs, modules, missingFromInitramfs: missing });
  }
  return kernels.sort((a, b) => b.version.localeCompare(a.version, undefined, { numeric: true }));
}

/** 6.1.0-27-cloud-amd64 → cloud-amd64; 5.14.0-427.13.1.el9_4.x86_64 → x86_64; 5.14.0-…x86_64+debug → x86_64+debug */
export function flavourOf(version: string): string | undefined {
  const deb = /^\d+\.\d+(?:\.\d+)?-\d+-(.+)$/.exec(version);
  if (deb) return deb[1];
  const rh = /\.(x86_64|aarch64|i686|ppc64le|s390x)(\+\w+)?$/.exec(version);
  if (rh) return rh[1] + (rh[2] ?? '');
  return undefined;
}

async function kernelModules(fs: GuestFs, version: string): Promise<KernelModuleSet> {
  const dir = `/lib/modules/${version}`;
  const real = await fs.realpath(dir);
  const set: KernelModuleSet = { storage: [], network: [] };
  if (!real) return set;
  for (const path of await fs.walk(`${dir}/kernel`)) {
    const rel = posix.relative(real, path);
    const name = moduleName(rel);
    if (!name) continue;
    if (STORAGE_DIRS.test(rel)) set.storage.push(name);
    else if (NETWORK_DIRS.test(rel)) set.network.push(name);
  }
  set.storage.sort(); set.network.sort();
  return set;
}

async function findInitramfs(fs: GuestFs, version: string) {
  for (const guestPath of [`/boot/initrd.img-${version}`, `/boot/initramfs-${version}.img`, `/boot/initrd-${version}`, `/boot/initramfs-${version}`]) {
    const host = await fs.resolve(guestPath);
    if (host) return readInitramfs(host, guestPath);
  }
  return undefined;
}

function missingFrom(modules: KernelModuleSet, inInitramfs: Set<string>): KernelModuleSet {
  return { storage: modules.storage.filter(m => !inInitramfs.has(m)), network: modules.network.filter(m => !inInitramfs.has(m)) };
}
