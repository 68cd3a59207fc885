// `ferry export IMAGE --ova OUT.ova | --ovf DIR | --vmx DIR`: a finished
// target packaged for another hypervisor, its descriptor generated from the
// same hardware description libvirt registration uses.
//
// Everything is written into a staging directory next to the output and
// moved into place only when complete (the scope removes the staging
// directory whatever happens), so a failed export leaves no half package.
// Disk cost: the vmdk once in staging; for an OVA the tar copies it once
// more, then the staged vmdk goes.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { compareImages } from '../blockdev/qemu-img.js';
import { canWriteDir } from '../blockdev/disk.js';
import { targetExists, targetNotWritable, usageError, verifyFailed } from '../errors.js';
import { loadProfile } from '../profiles/profiles.js';
import { run } from '../util/exec.js';
import { withScope } from '../util/scope.js';
import { describeHardware, NAME_RE, parseMemory, type VirtualHardware } from './hardware.js';
import { readGuest, readyImage } from './image.js';
import { ovfEnvelope } from './ovf.js';
import { writeOva } from './ova.js';
import { vmdkAdapterType, vmxFile } from './vmx.js';

export const DEFAULT_EXPORT_PROFILE = 'vmware';

export interface ExportRequest {
  image: string;
  ova?: string;
  ovf?: string;
  vmx?: string;
  /** default vmware */
  profile?: string;
  /** the virtual machine's name; default: the image's file name without extension */
  name?: string;
  memory?: string | number;
  cpus?: number;
  mac?: string;
  /** replace existing output files */
  force?: boolean;
}

export interface ExportResult {
  kind: 'ova' | 'ovf' | 'vmx';
  image: string;
  /** the files written, descriptor first */
  files: string[];
  name: string;
  profile: string;
  disk: { file: string; subformat: 'streamOptimized' | 'monolithicSparse'; bytes: number };
  hardware: VirtualHardware;
  seconds: number;
}

const sha256 = async (path: string) => {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 22 })) h.update(c as Buffer);
  return h.digest('hex');
};

export async function exportImage(req: ExportRequest): Promise<ExportResult> {
  const started = Date.now();
  const given = (['ova', 'ovf', 'vmx'] as const).filter(k => req[k] !== undefined);
  if (given.length !== 1) throw usageError('give exactly one of --ova OUT.ova, --ovf DIR or --vmx DIR');
  const kind = given[0];
  const out = resolve(req[kind]!);
  const image = await readyImage(req.image);
  const name = req.name ?? basename(image.path, extname(image.path));
  if (!NAME_RE.test(name)) throw usageError(`the virtual machine name '${name}' must be 1-63 letters, digits, '.', '_' or '-'; give --name`);
  const profile = await loadProfile(req.profile ?? DEFAULT_EXPORT_PROFILE);
  const memoryMiB = req.memory === undefined ? undefined : parseMemory(req.memory);

  // where each file goes, checked before anything is written
  const outDir = kind === 'ova' ? dirname(out) : out;
  const diskName = kind === 'vmx' ? `${name}.vmdk` : `${name}-disk1.vmdk`;
  const names = kind === 'vmx' ? [`${name}.vmx`, diskName] : [`${name}.ovf`, `${name}.mf`, diskName];
  const finals = kind === 'ova' ? [out] : names.map(n => join(out, n));
  if (kind === 'ova' && extname(out).toLowerCase() !== '.ova') throw usageError(`--ova ${out} should end in .ova`);
  if (kind !== 'ova' && (await stat(out).catch(() => undefined))?.isFile()) throw usageError(`--${kind} ${out} is a file; give a directory (it is created if missing)`);
  // --ovf/--vmx DIR may be new: it is made (from a writable parent) only once the export starts, and goes again if it fails
  const makeDir = kind !== 'ova' && !(await stat(out).catch(() => undefined));
  const mustExist = makeDir ? dirname(out) : outDir;
  if (!(await stat(mustExist).catch(() => undefined))?.isDirectory()) throw targetNotWritable(mustExist, 'the directory does not exist');
  if (!(await canWriteDir(mustExist))) throw targetNotWritable(mustExist, 'permission denied');
  for (const f of finals) if (!req.force && await stat(f).catch(() => undefined)) throw targetExists(f);

  const guest = await readGuest(image.path, req.mac === undefined);
  const hardware = describeHardware(profile, { name, memoryMiB, cpus: req.cpus, mac: req.mac },
    { path: image.path, format: image.format, virtualSize: image.virtualSize }, guest);
  if (kind === 'vmx') vmxFile(hardware, diskName); // refuses hardware VMware lacks before the long copy

  return withScope(async scope => {
    if (makeDir) {
      await mkdir(out);
      scope.defer(`new directory ${out}`, () => rm(out, { recursive: true, force: true }));
    }
    const staging = join(outDir, `.${name}.${kind}.ferry-partial`);
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging);
    scope.defer(`staging ${staging}`, () => rm(staging, { recursive: true, force: true }));

    const subformat = kind === 'vmx' ? 'monolithicSparse' : 'streamOptimized';
    const vmdk = join(staging, diskName);
    await run('qemu-img', ['convert', '-f', image.format, '-O', 'vmdk',
      '-o', `subformat=${subformat},adapter_type=${vmdkAdapterType(hardware.disk.bus)}`, image.path, vmdk]);
    // the vmdk is a block copy of a verified target: prove it reads back the same before it is packaged
    const differences = await compareImages(image.path, image.format, vmdk, 'vmdk');
    if (differences.length) throw verifyFailed(differences);
    const vmdkBytes = (await stat(vmdk)).size;

    if (kind === 'vmx') {
      await writeFile(join(staging, names[0]), vmxFile(hardware, diskName));
    } else {
      const ovf = ovfEnvelope(hardware, { href: diskName, fileSize: vmdkBytes, capacity: image.virtualSize, populatedSize: image.actualSize || undefined });
      await writeFile(join(staging, names[0]), ovf);
      const mf = [];
      for (const n of [names[0], diskName]) mf.push(`SHA256(${n})= ${await sha256(join(staging, n))}\n`);
      await writeFile(join(staging, names[1]), mf.join(''));
    }
    // every file complete: now move it into place
    if (kind === 'ova') {
      const partial = join(staging, basename(out));
      await writeOva(partial, staging, names);
      await rename(partial, out);
    } else {
      for (const n of names) await rename(join(staging, n), join(out, n));
    }
    scope.disown(`new directory ${out}`);
    return {
      kind, image: image.path, files: finals, name, profile: profile.name,
      disk: { file: kind === 'ova' ? `${out}:${diskName}` : join(out, diskName), subformat, bytes: vmdkBytes },
      hardware, seconds: (Date.now() - started) / 1000,
    };
  });
}
