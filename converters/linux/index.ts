// Re-fit a Linux guest to the hardware a profile describes, on the target
// only and without running guest code: plan first (so a missing driver stops
// everything before a byte is written), then apply and report each change.
import type { GuestFs } from '../../src/inspect/guest-fs.js';
import type { FileSystemEntry, LinuxOs } from '../../src/inspect/report.js';
import type { Profile } from '../../src/profiles/profiles.js';
import type { Change } from './change.js';
import { rewriteBootConfig } from './boot-config.js';
import { rewriteFstab } from './device-names.js';
import { refitInitramfs, type ModuleFile } from './initramfs.js';
import { closure, modulesForModalias, readModuleIndex } from './modules.js';
import { rebindMacs } from './net-bindings.js';
import { setGuestTools } from './services.js';

export interface KernelPlan {
  kver: string;
  initramfs?: { guestPath: string; hostPath: string };
  /** module files (with dependencies) the initramfs must hold */
  modules: ModuleFile[];
  /** module names to load at boot */
  load: string[];
  /** drivers the guest's kernel does not have (filled from drivers-db, or DRIVER_MISSING) */
  missing: string[];
  /** PCI modaliases (physical profile) that no module of this kernel, loadable or built in, claims */
  unclaimed?: string[];
  /** of the modules, those taken from drivers-db */
  fromDriversDb?: string[];
}

export interface LinuxPlan { drivers: string[]; kernels: KernelPlan[] }

/** hardware ids (PCI modalias strings) of a physical machine, from a P2V inventory */
export type Modaliases = string[];

export async function planLinuxRefit(fs: GuestFs, os: LinuxOs, profile: Profile, modaliases: Modaliases = []): Promise<LinuxPlan> {
  const kernels: KernelPlan[] = [];
  const all = new Set<string>();
  for (const k of os.kernels) {
    const drivers = [...profile.linux.bootDrivers, ...profile.linux.netDrivers];
    const unclaimed: string[] = [];
    for (const alias of modaliases) {
      const found = await modulesForModalias(fs, k.version, alias);
      drivers.push(...found);
      if (!found.length && !(await modulesForModalias(fs, k.version, alias, true)).length) unclaimed.push(alias);
    }
    const unique = [...new Set(drivers)];
    unique.forEach(d => all.add(d));
    const index = await readModuleIndex(fs, k.version);
    const { needed, unknown } = closure(index, unique);
    const modules: ModuleFile[] = [];
    for (const m of needed) {
      const hostFile = await fs.resolve(`/lib/modules/${k.version}/${m.relPath}`);
      if (hostFile) modules.push({ ...m, hostFile });
      else unknown.push(m.name);
    }
    const hostPath = k.initramfs ? await fs.resolve(k.initramfs.path) : undefined;
    kernels.push({
      kver: k.version, initramfs: k.initramfs && hostPath ? { guestPath: k.initramfs.path, hostPath } : undefined,
      modules, load: unique.filter(d => index.modules.has(d)), missing: unknown, ...(unclaimed.length ? { unclaimed } : {}),
    });
  }
  return { drivers: [...all], kernels };
}

export interface LinuxRefitOptions { fs: GuestFs; os: LinuxOs; fileSystems: FileSystemEntry[]; profile: Profile; plan: LinuxPlan; mac?: string; work: string }

export async function applyLinuxRefit(o: LinuxRefitOptions): Promise<Change[]> {
  const changes: Change[] = [];
  for (const k of o.plan.kernels) {
    if (!k.initramfs) continue;
    const from = o.mac ? [...new Set(o.os.network.macBindings.map(b => b.mac).filter(m => m !== o.mac))] : [];
    const c = await refitInitramfs({ ...k.initramfs, kver: k.kver, modules: k.modules, load: k.load, work: o.work, rebind: from.length ? { from, to: o.mac! } : undefined });
    if (c) changes.push(c);
  }
  changes.push(...await rewriteFstab(o.fs, o.fileSystems));
  changes.push(...await rewriteBootConfig(o.fs, o.fileSystems, o.profile.serialConsole));
  changes.push(...await rebindMacs(o.fs, o.os.network.macBindings, o.mac));
  changes.push(...await setGuestTools(o.fs, o.os.guestTools, o.profile.guestTools));
  return changes;
}
