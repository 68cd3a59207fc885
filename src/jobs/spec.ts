// Job specs: YAML or JSON text → JobSpec, checked field by field so that a
// person (CLI, exit 2) or a client (HTTP 400) sees every problem at once,
// each named by its path (register.cpus, options.mode).
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { FerryError, SpecInvalidError } from '../errors.js';
import { TARGET_FORMATS, parseSize } from '../convert/options.js';
import { parseEndpoint } from '../sources/endpoint.js';
import type { FieldError, JobSpec } from './types.js';
import { customizeSpecErrors } from '../customize/spec.js';
import { DELTA_FIELDS, DELTA_KINDS, deltaSpecErrors, isDeltaKind } from '../delta/jobs.js';

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const DOMAIN_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]*$/;

const isUrl = (s: string) => /^[a-z+]+:\/\//.test(s);
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const FIELDS: Record<string, 'string' | 'object' | 'array'> = {
  kind: 'string', source: 'string', target: 'string', format: 'string', size: 'string', profile: 'string', mac: 'string', firmware: 'string',
  options: 'object', credentials: 'object', register: 'object', machine: 'string', disk: 'string', customize: 'object', requires: 'array',
  ...DELTA_FIELDS,
};
/** a worker tag (ferry worker --tag) */
export const TAG_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const KINDS = ['convert', 'deploy', 'capture', ...DELTA_KINDS];
const MACHINE_ID_RE = /^m-[0-9a-f]{4,32}$/;
const OPTION_FIELDS = { mode: 'string', verify: 'boolean', force: 'boolean', inventory: 'string', forceNtfsDirty: 'boolean' } as const;
const CREDENTIAL_FIELDS = ['chapSecretFile', 'mutualChapSecretFile', 'tlsPskFile', 'tlsCerts'] as const;
const REGISTER_FIELDS = { libvirt: 'string', name: 'string', memory: 'string', cpus: 'number', start: 'boolean' } as const;

/** Every problem with obj as a job spec; [] when it is a valid JobSpec. Paths must be absolute. */
export function validateSpec(obj: unknown): FieldError[] {
  const errors: FieldError[] = [];
  const err = (field: string, message: string) => errors.push({ field, message });
  if (!isObject(obj)) return [{ field: '(spec)', message: 'must be a mapping (object) of fields' }];
  for (const k of Object.keys(obj)) if (!(k in FIELDS)) err(k, `unknown field; the fields are ${Object.keys(FIELDS).join(', ')}`);
  const str = (field: string, v: unknown) => {
    if (typeof v === 'string' && v.trim()) return true;
    err(field, 'must be a non-empty string');
    return false;
  };
  const absPath = (field: string, v: unknown) => {
    if (str(field, v) && !isAbsolute(v as string)) err(field, `must be an absolute path, not ${v as string}`);
  };
  if (obj.requires !== undefined && (!Array.isArray(obj.requires) || obj.requires.some(t => typeof t !== 'string' || !TAG_RE.test(t)))) {
    err('requires', 'must be a list of worker tags (letters, digits, . _ -), e.g. [nbd-rack-3]');
  }
  const kind = obj.kind ?? 'convert';
  if (!KINDS.includes(kind as string)) err('kind', `must be one of ${KINDS.join(', ')}`);
  if (isDeltaKind(kind)) {
    deltaSpecErrors(obj, kind, err);
    return errors;
  }
  for (const k of Object.keys(DELTA_FIELDS)) if (obj[k] !== undefined) err(k, 'belongs to a diff, delta-apply or factory-build job (kind)');
  if (kind === 'deploy' || kind === 'capture') {
    machineFields(obj, kind, err, str);
    // the machine's disk stands where the other end would be
    obj = kind === 'deploy' ? { ...obj, target: '/machine-disk' } : { ...obj, source: '/machine-disk' };
  } else {
    for (const k of ['machine', 'disk']) if (obj[k] !== undefined) err(k, 'belongs to a deploy or capture job (kind: deploy or capture)');
    if (obj.customize !== undefined) customizeSpecErrors(obj.customize, err);
  }

  if (!isObject(obj)) return errors;
  if (obj.source === undefined) err('source', 'is required: a disk image path or nbd://, iscsi:// URL');
  else if (str('source', obj.source)) {
    try {
      const ep = parseEndpoint(obj.source as string);
      if (ep.kind === 'file' && !isUrl(obj.source as string) && !isAbsolute(obj.source as string)) err('source', `must be an absolute path, not ${obj.source as string}`);
    } catch (e) {
      err('source', e instanceof FerryError ? e.message : String(e));
    }
  }
  if (obj.target === undefined) err('target', 'is required: the image file to write');
  else if (str('target', obj.target)) {
    try {
      const ep = parseEndpoint(obj.target as string);
      if (ep.kind !== 'file') err('target', 'network targets are not supported yet; write to a file');
      else if (!isUrl(obj.target as string) && !isAbsolute(obj.target as string)) err('target', `must be an absolute path, not ${obj.target as string}`);
    } catch (e) {
      err('target', e instanceof FerryError ? e.message : String(e));
    }
  }
  if (obj.format !== undefined && str('format', obj.format) && !(TARGET_FORMATS as readonly string[]).includes(obj.format as string)) {
    err('format', `'${obj.format as string}' is not supported; use one of ${TARGET_FORMATS.join(', ')}`);
  }
  if (obj.size !== undefined) {
    if (typeof obj.size === 'number') {
      if (!Number.isInteger(obj.size) || obj.size <= 0) err('size', 'must be a positive byte count or a size like 8G');
    } else if (str('size', obj.size)) {
      try { if (parseSize(obj.size as string) <= 0) err('size', 'must be more than 0'); } catch { err('size', `cannot read '${obj.size as string}'; write it like 8G, 512M or a byte count`); }
    }
  }
  if (obj.profile !== undefined) str('profile', obj.profile);
  if (obj.firmware !== undefined && str('firmware', obj.firmware) && !['bios', 'uefi'].includes(obj.firmware as string)) err('firmware', `must be uefi (or bios: keep the source's), not ${obj.firmware as string}`);
  if (obj.firmware === 'uefi' && ['block', 'clone'].includes((obj.options as { mode?: string } | undefined)?.mode ?? '')) err('firmware', 'uefi changes the partition table: it needs mode rebuild');
  if (obj.mac !== undefined && str('mac', obj.mac)) {
    if (!MAC_RE.test(obj.mac as string)) err('mac', `${obj.mac as string} is not a MAC address; write it like 52:54:00:12:34:56`);
    if (obj.profile === undefined) err('mac', 'is part of a re-fit; give profile too');
  }

  if (obj.options !== undefined) {
    if (!isObject(obj.options)) err('options', 'must be a mapping with mode, verify, force, inventory, forceNtfsDirty');
    else {
      const o = obj.options;
      for (const [k, v] of Object.entries(o)) {
        const want = OPTION_FIELDS[k as keyof typeof OPTION_FIELDS];
        if (!want) { err(`options.${k}`, `unknown option; the options are ${Object.keys(OPTION_FIELDS).join(', ')}`); continue; }
        if (typeof v !== want) { err(`options.${k}`, `must be a ${want}`); continue; }
      }
      if (typeof o.mode === 'string' && !['rebuild', 'clone', 'block'].includes(o.mode)) err('options.mode', `must be rebuild, clone or block, not ${o.mode}`);
      if (typeof o.inventory === 'string') absPath('options.inventory', o.inventory);
    }
  }
  if (obj.credentials !== undefined) {
    if (!isObject(obj.credentials)) err('credentials', `must be a mapping with ${CREDENTIAL_FIELDS.join(', ')} (paths of secret files)`);
    else {
      for (const [k, v] of Object.entries(obj.credentials)) {
        if (!(CREDENTIAL_FIELDS as readonly string[]).includes(k)) err(`credentials.${k}`, `unknown; use ${CREDENTIAL_FIELDS.join(', ')} (paths of secret files, never secrets)`);
        else absPath(`credentials.${k}`, v);
      }
    }
  }
  if (obj.register !== undefined) {
    if (!isObject(obj.register)) err('register', 'must be a mapping with libvirt, name, memory, cpus, start');
    else {
      const r = obj.register;
      for (const [k, v] of Object.entries(r)) {
        const want = REGISTER_FIELDS[k as keyof typeof REGISTER_FIELDS];
        if (!want) err(`register.${k}`, `unknown; the fields are ${Object.keys(REGISTER_FIELDS).join(', ')}`);
        else if (typeof v !== want) err(`register.${k}`, `must be a ${want}`);
      }
      if (r.libvirt === undefined) err('register.libvirt', 'is required: a libvirt URI such as qemu:///system');
      else if (typeof r.libvirt === 'string' && !/^[a-z][a-z0-9+]*:\/\//.test(r.libvirt)) err('register.libvirt', `'${r.libvirt}' is not a libvirt URI; write it like qemu:///system`);
      if (r.name === undefined) err('register.name', 'is required: the domain name');
      else if (typeof r.name === 'string' && !DOMAIN_NAME_RE.test(r.name)) err('register.name', 'may hold letters, digits and _ . + - only');
      if (typeof r.memory === 'string') {
        try { if (parseSize(r.memory) < 16 * 2 ** 20) err('register.memory', 'must be at least 16M'); } catch { err('register.memory', `cannot read '${r.memory}'; write it like 2G or 512M`); }
      }
      if (typeof r.cpus === 'number' && (!Number.isInteger(r.cpus) || r.cpus < 1 || r.cpus > 512)) err('register.cpus', 'must be a whole number from 1 to 512');
    }
  }
  return errors;
}

/** the fields of a deploy or capture job: the machine, the disk, the identity */
function machineFields(obj: Record<string, unknown>, kind: string, err: (f: string, m: string) => void, str: (f: string, v: unknown) => boolean): void {
  if (obj.machine === undefined) err('machine', 'is required: the id of a registered machine (ferry machines list)');
  else if (str('machine', obj.machine) && !MACHINE_ID_RE.test(obj.machine as string)) err('machine', `'${obj.machine as string}' is not a machine id (m-…; see ferry machines list)`);
  if (obj.disk !== undefined) str('disk', obj.disk);
  if (kind === 'deploy') {
    if (obj.target !== undefined) err('target', 'a deploy writes the machine\'s disk; give no target');
    for (const k of ['format', 'size', 'profile', 'mac', 'register']) if (obj[k] !== undefined) err(k, 'does not apply to a deploy (the disk is the machine\'s, the profile is its own hardware)');
    if (obj.customize !== undefined) customizeSpecErrors(obj.customize, err);
  } else {
    if (obj.source !== undefined) err('source', 'a capture reads the machine\'s disk; give no source');
    if (obj.customize !== undefined) err('customize', 'does not apply to a capture');
  }
}

/** Make the spec's relative file paths absolute against base (the spec file's directory, or the cwd). */
export function resolveSpecPaths(obj: unknown, base: string): unknown {
  if (!isObject(obj)) return obj;
  const out: Record<string, unknown> = { ...obj };
  const fix = (v: unknown) => (typeof v === 'string' && v && !isUrl(v) && !isAbsolute(v) ? resolve(base, v) : v);
  if (out.source !== undefined) out.source = fix(out.source);
  if (out.target !== undefined) out.target = fix(out.target);
  for (const k of ['changed', 'delta', 'recipe']) if (out[k] !== undefined) out[k] = fix(out[k]);
  if (isObject(out.options)) out.options = { ...out.options, inventory: fix(out.options.inventory) };
  if (isObject(out.options) && out.options.inventory === undefined) delete (out.options as Record<string, unknown>).inventory;
  if (isObject(out.credentials)) out.credentials = Object.fromEntries(Object.entries(out.credentials).map(([k, v]) => [k, fix(v)]));
  return out;
}

/** Throw SPEC_INVALID (exit 2, fieldErrors) unless obj is a valid spec. */
export function checkSpec(obj: unknown, where?: string): JobSpec {
  const errors = validateSpec(obj);
  if (errors.length) throw new SpecInvalidError(errors, where);
  return obj as JobSpec;
}

/**
 * A spec file's text (YAML, or JSON by a .json name) → a checked JobSpec.
 * Relative paths in it are taken from the spec file's directory.
 */
export function parseSpec(text: string, fileName: string): JobSpec {
  let obj: unknown;
  try {
    obj = fileName.toLowerCase().endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new SpecInvalidError([{ field: '(file)', message: `cannot be read as ${fileName.toLowerCase().endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}` }], fileName);
  }
  return checkSpec(resolveSpecPaths(obj, dirname(resolve(fileName))), fileName);
}

/** The host a spec reads from, for the per-host concurrency bound ('local' for files). */
export function sourceHostOf(spec: JobSpec): string {
  // one job at a time per machine: its agent exports one disk at a time
  if (spec.kind === 'deploy' || spec.kind === 'capture') return `machine:${spec.machine}`;
  if (isDeltaKind(spec.kind)) return 'local';
  const ep = parseEndpoint(spec.source);
  if (ep.kind === 'file') return 'local';
  if ('host' in ep && ep.host) return ep.host;
  if ('socket' in ep && ep.socket) return `unix:${ep.socket}`;
  return 'network';
}
