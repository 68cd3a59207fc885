// The slow fixtures: built once per machine by scripts/, cached under a path
// keyed by the building script's hash.
import { execa } from 'execa';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from './harness.js';

async function lastLines(script: string): Promise<string[]> {
  const r = await execa('bash', [join(ROOT, 'scripts', script)], { stdin: 'ignore', stderr: 'inherit' });
  return String(r.stdout).trim().split('\n');
}

export interface DataDisks { gpt: string; mbr: string; manifest: Manifest }
export interface Manifest { disks: Record<'gpt' | 'mbr', { sha256: string; partitions: ManifestPartition[]; regions?: unknown }> }
export interface ManifestPartition { number: number; fs?: { type: string; uuid?: string; label?: string }; notable?: Record<string, unknown> }

let dataDisks: Promise<DataDisks> | undefined;
export function buildDataDisks(): Promise<DataDisks> {
  dataDisks ??= (async () => {
    const [gpt, mbr, manifest] = await lastLines('build-data-disks.sh');
    return { gpt, mbr, manifest: JSON.parse(await readFile(manifest, 'utf8')) as Manifest };
  })();
  return dataDisks;
}

let guest: Promise<string> | undefined;
/** The bootable Debian 12 guest (raw). */
export function buildDebianGuest(): Promise<string> {
  guest ??= lastLines('build-debian-guest.sh').then(l => l.at(-1)!);
  return guest;
}

export interface LegacyGuest { disk: string; manifest: LegacyManifest }
export interface LegacyManifest {
  rootUuid: string; rootLabel: string; distro: string; version: string; codename: string; patchLevel: string;
  hostname: string; machineId: string; kernel: string; flavour: string; cmdlineHas: string;
  initramfs: { compression: string; modules: string[] }; firmware: string; bootloader: string;
  fstab: { spec: string; by: string; mountpoint: string }[];
  interface: { name: string; source: string; method: string; addresses: string[]; gateway: string };
  macBinding: { name: string; mac: string; source: string };
  package: { name: string; version: string }; packageCount: number; guestTools: string[];
}
let legacy: Promise<LegacyGuest> | undefined;
/** The Debian guest bound to old hardware: IDE/SATA-only initramfs, /dev/sda names, a MAC-bound eth0, open-vm-tools. */
export function buildLegacyGuest(): Promise<LegacyGuest> {
  legacy ??= (async () => {
    const [disk, manifest] = await lastLines('build-legacy-guest.sh');
    return { disk, manifest: JSON.parse(await readFile(manifest, 'utf8')) as LegacyManifest };
  })();
  return legacy;
}
