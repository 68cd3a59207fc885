// What a conversion is asked to do, checked before anything is touched.
import { stat, statfs } from 'node:fs/promises';
import { dirname, extname } from 'node:path';
import { notRoot, targetExists, targetNotWritable, targetNoSpace, unsupportedFormat, usageError } from '../errors.js';
import { canWriteDir } from '../blockdev/disk.js';
import { parseEndpoint, type Endpoint } from '../sources/endpoint.js';
import { unsupportedEndpoint } from '../errors.js';
import { inventoryModaliases, readInventory } from './inventory.js';
import { loadProfile, type Profile } from '../profiles/profiles.js';
import { checkCustomization, isEmptyCustomization, type Customization } from '../customize/identity.js';
import { checkRefitRequest } from '../refit/refit.js';
import type { FirmwareChoice } from './to-uefi.js';

export const TARGET_FORMATS = ['qcow2', 'raw', 'vmdk', 'vhdx', 'vdi'] as const;
export type TargetFormat = typeof TARGET_FORMATS[number];
export type Mode = 'rebuild' | 'clone' | 'block';
export const MODES: readonly Mode[] = ['rebuild', 'clone', 'block'];

export interface ConvertRequest {
  source: string;
  target: string;
  format?: string;
  size?: string | number;
  mode?: Mode;
  force?: boolean;
  verify?: boolean;
  /** a P2V agent's inventory.json, kept beside the target */
  inventory?: string;
  /** re-fit the guest to this hardware profile (drivers-db/profiles) */
  profile?: string;
  /** the new NIC's MAC address */
  mac?: string;
  /** copy NTFS volumes Windows left dirty or hibernated as they are */
  forceNtfsDirty?: boolean;
  /** 'uefi': a BIOS guest becomes a GPT/UEFI guest (convert/to-uefi.ts) */
  firmware?: string;
  /** identity given to the target on the way (ferry customize's options) */
  customize?: Customization;
}

export interface ConvertPlan {
  source: Endpoint;
  targetPath: string;
  format: TargetFormat;
  /** bytes; undefined = same as the source */
  size?: number;
  mode: Mode;
  force: boolean;
  verify: boolean;
  /** the inventory's text, checked */
  inventory?: string;
  profile?: Profile;
  mac?: string;
  /** PCI modalias strings of the inventory's storage controllers and NICs (profile `physical`) */
  modaliases: string[];
  firmware?: FirmwareChoice;
  /** copy NTFS volumes Windows left dirty or hibernated as they are */
  forceNtfsDirty?: boolean;
  customize?: Customization;
}

/** --firmware: only 'uefi' changes anything ('bios' keeps what the source has) */
export function parseFirmware(f: string | undefined): FirmwareChoice | undefined {
  if (f === undefined || f === 'bios') return undefined;
  if (f !== 'uefi') throw usageError(`--firmware must be uefi (or bios: keep the source's), not ${f}`);
  return f;
}


/** "8G", "512M", "1T", "1048576" → bytes (binary units, as qemu-img reads them). */
export function parseSize(s: string | number): number {
  if (typeof s === 'number') return s;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(i?[bB])?$/.exec(s.trim());
  if (!m) throw usageError(`cannot read size '${s}'; write it like 8G, 512M or a byte count`);
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * mult);
}

export function formatFor(target: string, format?: string): TargetFormat {
  const f = format ?? extname(target).slice(1).toLowerCase();
  const aliases: Record<string, TargetFormat> = { img: 'raw' };
  const chosen = aliases[f] ?? f;
  if ((TARGET_FORMATS as readonly string[]).includes(chosen)) return chosen as TargetFormat;
  if (format) throw unsupportedFormat(format, TARGET_FORMATS);
  return 'qcow2';
}

export async function checkRequest(r: ConvertRequest): Promise<ConvertPlan> {
  if (process.getuid?.() !== 0) throw notRoot();
  const source = parseEndpoint(r.source);
  const target = parseEndpoint(r.target);
  if (target.kind !== 'file') throw unsupportedEndpoint(r.target, 'network targets are not supported yet; write to a file');
  // unset: the used-block path wherever it can serve (choosePath decides per file system), unless the table changes
  const mode = r.mode ?? (parseFirmware(r.firmware) ? 'rebuild' : 'clone');
  if (!MODES.includes(mode)) throw usageError(`--mode must be rebuild, clone or block, not ${mode}`);
  if (r.firmware === 'uefi' && mode === 'clone') throw usageError('--firmware uefi changes the partition table: it needs --mode rebuild');
  const plan: ConvertPlan = {
    source, targetPath: target.path, format: formatFor(target.path, r.format),
    size: r.size === undefined ? undefined : parseSize(r.size), mode, force: !!r.force, verify: r.verify !== false,
    inventory: r.inventory === undefined ? undefined : await readInventory(r.inventory),
    profile: r.profile === undefined ? undefined : await loadProfile(r.profile),
    mac: r.mac?.toLowerCase(), modaliases: [], firmware: parseFirmware(r.firmware), forceNtfsDirty: !!r.forceNtfsDirty,
    customize: isEmptyCustomization(r.customize) ? undefined : r.customize,
  };
  if (plan.customize) checkCustomization(plan.customize);
  if (plan.firmware && mode === 'block') throw usageError('--firmware uefi changes the partition table: it needs --mode rebuild');
  if (plan.mac && !plan.profile) throw usageError('--mac is part of a re-fit; give --profile too');
  if (plan.profile) checkRefitRequest(plan.profile, r.mac, !!plan.inventory);
  if (plan.inventory) plan.modaliases = inventoryModaliases(plan.inventory);
  if (source.kind === 'file' && source.path === plan.targetPath) throw usageError('source and target are the same file');
  if (await stat(plan.targetPath).catch(() => undefined)) {
    if (!plan.force) throw targetExists(plan.targetPath);
  }
  const dir = dirname(plan.targetPath);
  if (!(await stat(dir).catch(() => undefined))?.isDirectory()) throw targetNotWritable(dir, 'the directory does not exist');
  if (!(await canWriteDir(dir))) throw targetNotWritable(dir, 'permission denied');
  return plan;
}

/** Refuse to start when the target directory cannot hold the estimated output. */
export async function checkSpace(targetPath: string, estimate: number): Promise<void> {
  const dir = dirname(targetPath);
  const s = await statfs(dir);
  const free = s.bavail * s.bsize;
  const needed = Math.ceil(estimate * 1.05) + 16 * 2 ** 20;
  if (free < needed) throw targetNoSpace(dir, needed, free);
}
