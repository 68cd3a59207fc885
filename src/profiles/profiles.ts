// Hardware profiles: one declarative file per destination in
// drivers-db/profiles/, saying what the guest will find there (machine,
// firmware, disk bus, NIC model) and which drivers it needs at boot.
import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { invalidProfile, unknownProfile } from '../errors.js';

export interface WindowsDriverSpec { file: string; service: string; group?: string; pciIds: string[]; classGuid?: string; inbox?: boolean }

export interface Profile {
  name: string;
  description: string;
  platform: 'kvm' | 'vmware' | 'hyperv' | 'physical';
  machine: string;
  firmware: 'bios' | 'uefi' | 'from-inventory';
  diskBus: string;
  nicModel: string;
  cpus: number;
  memoryMiB: number;
  /** add console=ttyS0 to the kernel command line */
  serialConsole: boolean;
  /** the drivers are looked up from a P2V inventory's PCI ids */
  fromInventory?: boolean;
  linux: { bootDrivers: string[]; netDrivers: string[] };
  windows: { hal: { acpi: boolean; multiprocessor: boolean }; bootDrivers: WindowsDriverSpec[]; netDrivers: WindowsDriverSpec[] };
  guestTools: { enable: string[]; disable: string[] };
}

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..'); // dist/src/profiles → repo
/** FERRY_PROFILES adds a directory of site profiles in front of the shipped ones */
const profileDirs = () => [process.env.FERRY_PROFILES, join(REPO, 'drivers-db', 'profiles')].filter((d): d is string => !!d);

export async function listProfiles(): Promise<Profile[]> {
  const byName = new Map<string, Profile>();
  for (const dir of profileDirs()) {
    for (const f of (await readdir(dir).catch(() => [])).filter(f => f.endsWith('.json')).sort()) {
      const p = await readProfile(join(dir, f));
      if (!byName.has(p.name)) byName.set(p.name, p);
    }
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The names of the known profiles, read synchronously: submitting a job checks
 * its profile at once (a 400, like the CLI's preflight) rather than failing later.
 */
export function profileNames(): string[] {
  const names = new Set<string>();
  for (const dir of profileDirs()) {
    let files: string[] = [];
    try { files = readdirSync(dir).filter(f => f.endsWith('.json')); } catch { continue; }
    for (const f of files) {
      try { names.add(String((JSON.parse(readFileSync(join(dir, f), 'utf8')) as Profile).name)); } catch { /* an invalid file is reported by loadProfile */ }
    }
  }
  return [...names].sort();
}

export async function loadProfile(name: string): Promise<Profile> {
  const all = await listProfiles();
  const p = all.find(x => x.name === name);
  if (!p) throw unknownProfile(name, all.map(x => x.name));
  return p;
}

async function readProfile(file: string): Promise<Profile> {
  let p: Profile;
  try { p = JSON.parse(await readFile(file, 'utf8')) as Profile; } catch (e) { throw invalidProfile(file, (e as Error).message); }
  const need: [keyof Profile, string][] = [['name', 'string'], ['machine', 'string'], ['diskBus', 'string'], ['nicModel', 'string'], ['serialConsole', 'boolean'], ['linux', 'object'], ['windows', 'object'], ['guestTools', 'object']];
  for (const [k, t] of need) if (typeof p[k] !== t) throw invalidProfile(file, `field '${k}' must be a ${t}`);
  if (!Array.isArray(p.linux.bootDrivers) || !Array.isArray(p.linux.netDrivers)) throw invalidProfile(file, 'linux.bootDrivers and linux.netDrivers must be lists of module names');
  return p;
}
