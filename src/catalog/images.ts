// The image catalog: disk images (files or network disks) with their
// inspection reports and the facts searches filter on.
//
// A stored report belongs to the identity the image had when it was taken
// (identity.ts). `show` and `search` check every image's identity first and
// inspect the changed ones again, so no answer comes from a stale report; an
// image whose source vanished or cannot be inspected now is reported as such,
// never answered from its old report and never silently dropped.
import { basename, extname } from 'node:path';
import { FerryError, badFilter, imageNameTaken, imageNotFound, imageSourceMissing, sourceMissing, usageError } from '../errors.js';
import type { InspectReport, OperatingSystem } from '../inspect/report.js';
import { parseEndpoint, type Endpoint } from '../sources/endpoint.js';
import { networkCredentials, setNetworkCredentials, type NetworkCredentials } from '../sources/secrets.js';
import type { Db } from './db.js';
import { fileIdentity, networkIdentity, sameIdentity, type Identity } from './identity.js';
import { parseVersionFilter, type VersionFilter } from './version.js';

export type Inspector = (spec: string) => Promise<InspectReport>;

export interface Catalog {
  db: Db;
  inspect: Inspector;
  /** one line for the user (stderr): which image is being inspected again and why */
  notice?: (line: string) => void;
}

export interface OsSummary {
  type: 'linux' | 'windows';
  distro?: string;
  name?: string;
  version?: string;
  patchLevel?: string;
  arch?: string;
  firmware?: string;
  kernels: string[];
}

export interface ImageSummary {
  name: string;
  source: string;
  tags: string[];
  addedAt: string;
  inspectedAt: string;
  os: OsSummary[];
  /** how `ferry factory build` made it */
  recipe?: unknown;
}

export interface ImageFailure { name: string; source: string; code: string; message: string }

interface ImageRow {
  id: number; name: string; source: string; kind: string; credentials: string | null;
  added_at: string; identity: string; inspected_at: string; report: string; recipe?: string | null;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._+@-]{0,127}$/;

// ——— facts: what searches filter on, taken from a report ———

interface OsFacts {
  type: 'linux' | 'windows'; distro: string | null; name: string | null; version: string | null; patchLevel: string | null;
  matchVersion: string | null; arch: string | null; firmware: string | null; kernels: string[];
  drivers: { name: string; kind: 'storage' | 'network' | 'service' }[];
}

export const driverKey = (name: string) => name.toLowerCase().replace(/-/g, '_');

function osFacts(report: InspectReport, os: OperatingSystem): OsFacts {
  if (os.type === 'linux') {
    // Debian's VERSION_ID is 12 and its point release 12.7: filter on the finer one when it refines the other
    const fine = os.patchLevel && /^\d[\w.+~-]*$/.test(os.patchLevel) && (!os.version || os.patchLevel.startsWith(os.version));
    const drivers = os.kernels.flatMap(k => [
      ...k.modules.storage.map(name => ({ name: driverKey(name), kind: 'storage' as const })),
      ...k.modules.network.map(name => ({ name: driverKey(name), kind: 'network' as const })),
    ]);
    return {
      type: 'linux', distro: os.distro ?? null, name: os.name ?? null, version: os.version ?? null, patchLevel: os.patchLevel ?? null,
      matchVersion: (fine ? os.patchLevel : os.version) ?? null, arch: os.arch ?? null,
      firmware: os.firmware === 'unknown' ? null : os.firmware, kernels: os.kernels.map(k => k.version), drivers,
    };
  }
  // Windows boots a GPT disk only through UEFI and an MBR disk only through BIOS
  const label = report.partitionTable?.label;
  const firmware = label === 'gpt' ? 'uefi' : label === 'dos' ? 'bios' : null;
  // CurrentVersion 10.0 and build 19045 compare as 10.0.19045, so --version '>=10.0.19041' works
  const matchVersion = os.version ? [os.version, os.build].filter(Boolean).join('.') : null;
  const names = [...os.bootStorageDrivers.map(d => d.name), ...os.services.map(d => d.name), ...os.nics.flatMap(n => n.service ? [n.service] : [])];
  return {
    type: 'windows', distro: null, name: os.productName ?? null, version: os.version ?? null, patchLevel: os.patchLevel ?? null,
    matchVersion, arch: os.arch ?? null, firmware, kernels: [],
    drivers: names.map(n => ({ name: driverKey(n), kind: 'service' as const })),
  };
}

function storeReport(db: Db, id: number, identity: Identity, report: InspectReport): void {
  db.transaction(() => {
    db.prepare('UPDATE images SET identity = ?, inspected_at = ?, report = ? WHERE id = ?')
      .run(JSON.stringify(identity), report.inspectedAt ?? new Date().toISOString(), JSON.stringify(report), id);
    for (const t of ['image_os', 'image_kernels', 'image_drivers']) db.prepare(`DELETE FROM ${t} WHERE image_id = ?`).run(id);
    const insOs = db.prepare(`INSERT INTO image_os (image_id, idx, type, distro, name, version, patch_level, match_version, arch, firmware)
                              VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    const insKernel = db.prepare('INSERT INTO image_kernels (image_id, os_idx, version) VALUES (?, ?, ?)');
    const insDriver = db.prepare('INSERT OR IGNORE INTO image_drivers (image_id, os_idx, name, kind) VALUES (?, ?, ?, ?)');
    report.operatingSystems.forEach((os, idx) => {
      const f = osFacts(report, os);
      insOs.run(id, idx, f.type, f.distro, f.name, f.version, f.patchLevel, f.matchVersion, f.arch, f.firmware);
      for (const k of f.kernels) insKernel.run(id, idx, k);
      for (const d of f.drivers) insDriver.run(id, idx, d.name, d.kind);
    });
  })();
}

function summary(db: Db, row: ImageRow): ImageSummary {
  const tags = (db.prepare('SELECT tag FROM image_tags WHERE image_id = ? ORDER BY tag').all(row.id) as { tag: string }[]).map(t => t.tag);
  const oses = db.prepare('SELECT * FROM image_os WHERE image_id = ? ORDER BY idx').all(row.id) as
    { idx: number; type: 'linux' | 'windows'; distro: string | null; name: string | null; version: string | null; patch_level: string | null; arch: string | null; firmware: string | null }[];
  const kernels = db.prepare('SELECT version FROM image_kernels WHERE image_id = ? AND os_idx = ? ORDER BY rowid');
  const os = oses.map(o => {
    const s: OsSummary = { type: o.type, kernels: (kernels.all(row.id, o.idx) as { version: string }[]).map(k => k.version) };
    if (o.distro) s.distro = o.distro;
    if (o.name) s.name = o.name;
    if (o.version) s.version = o.version;
    if (o.patch_level) s.patchLevel = o.patch_level;
    if (o.arch) s.arch = o.arch;
    if (o.firmware) s.firmware = o.firmware;
    return s;
  });
  return { name: row.name, source: row.source, tags, addedAt: row.added_at, inspectedAt: row.inspected_at, os, ...(row.recipe ? { recipe: JSON.parse(row.recipe) as unknown } : {}) };
}

// ——— identity and refresh ———

type Check =
  | { state: 'same'; row: ImageRow }
  | { state: 'changed'; row: ImageRow; identity: Identity }
  | { state: 'missing'; row: ImageRow }
  | { state: 'failed'; row: ImageRow; error: FerryError };

const asFerryError = (e: unknown) => e instanceof FerryError ? e : new FerryError('INTERNAL', 70, (e as Error).message);

async function identityOf(ep: Endpoint, credentials: NetworkCredentials): Promise<Identity | undefined> {
  return ep.kind === 'file' ? fileIdentity(ep.path) : networkIdentity(ep, credentials);
}

const storedCredentials = (row: ImageRow): NetworkCredentials => row.credentials ? JSON.parse(row.credentials) as NetworkCredentials : {};

async function check(row: ImageRow): Promise<Check> {
  try {
    const identity = await identityOf(parseEndpoint(row.source), storedCredentials(row));
    if (!identity) return { state: 'missing', row };
    return sameIdentity(identity, row.identity) ? { state: 'same', row } : { state: 'changed', row, identity };
  } catch (e) {
    return { state: 'failed', row, error: asFerryError(e) };
  }
}

/** Inspect with the credentials the image was added with (secret file paths; the secrets stay in their files). */
async function inspectWith(c: Catalog, source: string, credentials: NetworkCredentials): Promise<InspectReport> {
  const before = networkCredentials();
  setNetworkCredentials(credentials);
  try {
    return await c.inspect(source);
  } finally {
    setNetworkCredentials(before);
  }
}

/** Re-inspect a changed image. The identity was taken before inspecting, so a change made meanwhile shows next time. */
async function refresh(c: Catalog, ch: Extract<Check, { state: 'changed' }>): Promise<Check> {
  c.notice?.(`image '${ch.row.name}' changed since it was inspected at ${ch.row.inspected_at}; inspecting it again`);
  try {
    const report = await inspectWith(c, ch.row.source, storedCredentials(ch.row));
    storeReport(c.db, ch.row.id, ch.identity, report);
    return ch;
  } catch (e) {
    const error = asFerryError(e);
    return error.code === 'SOURCE_MISSING' ? { state: 'missing', row: ch.row } : { state: 'failed', row: ch.row, error };
  }
}

interface Fresh { current: ImageRow[]; refreshed: string[]; missing: ImageFailure[]; failed: ImageFailure[] }

/** Bring every given image up to date; returns those whose stored report now describes them. */
async function freshen(c: Catalog, rows: ImageRow[]): Promise<Fresh> {
  const out: Fresh = { current: [], refreshed: [], missing: [], failed: [] };
  for (const row of rows) {
    let ch = await check(row);
    if (ch.state === 'changed') {
      ch = await refresh(c, ch);
      if (ch.state === 'changed') out.refreshed.push(row.name);
    }
    if (ch.state === 'same' || ch.state === 'changed') out.current.push(row);
    else if (ch.state === 'missing') {
      c.notice?.(`image '${row.name}': its source ${row.source} is missing`);
      out.missing.push({ name: row.name, source: row.source, code: 'SOURCE_MISSING', message: `${row.source} does not exist` });
    } else {
      c.notice?.(`image '${row.name}' cannot be inspected now: ${ch.error.code}: ${ch.error.message}`);
      out.failed.push({ name: row.name, source: row.source, code: ch.error.code, message: ch.error.message });
    }
  }
  return out;
}

// ——— the commands ———

function allNames(db: Db): string[] {
  return (db.prepare('SELECT name FROM images ORDER BY name').all() as { name: string }[]).map(r => r.name);
}

function rowNamed(db: Db, name: string): ImageRow {
  const row = db.prepare('SELECT * FROM images WHERE name = ?').get(name) as ImageRow | undefined;
  if (!row) throw imageNotFound(name, allNames(db));
  return row;
}

/** NAME when none is given: the file's base name without its extension; for a URL, the export or the target's last word and LUN. */
export function defaultName(ep: Endpoint): string {
  const raw = ep.kind === 'file' ? basename(ep.path, extname(ep.path))
    : ep.kind === 'nbd' ? ep.export || ep.host || 'nbd'
      : `${ep.iqn.split(':').pop()}-lun${ep.lun}`;
  return raw.replace(/[^A-Za-z0-9._+@-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'image';
}

export function checkName(name: string): void {
  if (!NAME.test(name)) throw usageError(`image name '${name}' is not usable; use letters, digits and . _ + @ - (starting with a letter or digit, at most 128)`);
}

export interface AddOptions { name?: string; tags?: string[]; credentials?: NetworkCredentials; recipe?: unknown }

export async function addImage(c: Catalog, source: string, opts: AddOptions = {}): Promise<ImageSummary & { report: InspectReport }> {
  const ep = parseEndpoint(source);
  const spec = ep.kind === 'file' ? ep.path : ep.url;
  const name = opts.name ?? defaultName(ep);
  checkName(name);
  const tags = [...new Set(opts.tags ?? [])];
  for (const t of tags) if (!t.trim()) throw usageError('--tag needs a non-empty value');
  const taken = () => c.db.prepare('SELECT source FROM images WHERE name = ?').get(name) as { source: string } | undefined;
  const early = taken();
  if (early) throw imageNameTaken(name, early.source);
  const credentials = ep.kind === 'file' ? {} : opts.credentials ?? networkCredentials();
  // identity first: a change made while inspecting makes the next check see a difference
  const identity = await identityOf(ep, credentials);
  if (!identity) throw sourceMissing(spec);
  const report = await inspectWith(c, spec, credentials);
  let id: number;
  try {
    id = c.db.transaction(() => {
      const r = c.db.prepare(`INSERT INTO images (name, source, kind, credentials, added_at, identity, inspected_at, report, recipe)
                              VALUES (?, ?, ?, ?, ?, '', '', '', ?)`)
        .run(name, spec, ep.kind, ep.kind === 'file' ? null : JSON.stringify(credentials), new Date().toISOString(), opts.recipe === undefined ? null : JSON.stringify(opts.recipe));
      const newId = Number(r.lastInsertRowid);
      const insTag = c.db.prepare('INSERT INTO image_tags (image_id, tag) VALUES (?, ?)');
      for (const t of tags) insTag.run(newId, t);
      storeReport(c.db, newId, identity, report);
      return newId;
    })();
  } catch (e) {
    // another `images add` took the name while this one was inspecting
    if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw imageNameTaken(name, taken()?.source ?? '?');
    throw e;
  }
  const row = c.db.prepare('SELECT * FROM images WHERE id = ?').get(id) as ImageRow;
  return { ...summary(c.db, row), report };
}

export type ImageState = 'current' | 'changed' | 'missing' | 'unreadable';

/** Every image with the state of its stored report; cheap (identities only, nothing re-inspected). */
export async function listImages(c: Catalog): Promise<(ImageSummary & { state: ImageState })[]> {
  const rows = c.db.prepare('SELECT * FROM images ORDER BY name').all() as ImageRow[];
  const out: (ImageSummary & { state: ImageState })[] = [];
  for (const row of rows) {
    const ch = await check(row);
    const state: ImageState = ch.state === 'same' ? 'current' : ch.state === 'failed' ? 'unreadable' : ch.state;
    out.push({ ...summary(c.db, row), state });
  }
  return out;
}

/** One image with its full report, inspected again first if it changed. */
export async function showImage(c: Catalog, name: string): Promise<ImageSummary & { refreshed: boolean; report: InspectReport }> {
  const row = rowNamed(c.db, name);
  let ch = await check(row);
  const changed = ch.state === 'changed';
  if (ch.state === 'changed') ch = await refresh(c, ch);
  if (ch.state === 'missing') throw imageSourceMissing(name, row.source);
  // the typed reason itself (unreachable host, corrupt image, …) with its own exit status
  if (ch.state === 'failed') throw ch.error;
  const now = rowNamed(c.db, name);
  return { ...summary(c.db, now), refreshed: changed, report: JSON.parse(now.report) as InspectReport };
}

/** The source of a catalog image (IMAGE_NOT_FOUND when there is none by that name). */
export function imageSource(c: Catalog, name: string): string {
  return rowNamed(c.db, name).source;
}

/** Forget an image; its file is never touched. */
export function removeImage(c: Catalog, name: string): { name: string; source: string } {
  const row = rowNamed(c.db, name);
  c.db.prepare('DELETE FROM images WHERE id = ?').run(row.id);
  return { name: row.name, source: row.source };
}

export interface SearchFilters {
  os?: string;
  distro?: string;
  /** each a comparison such as >=12; all must hold */
  version?: string[];
  kernel?: string[];
  hasDriver?: string[];
  firmware?: string;
  tag?: string[];
}

export interface SearchResult { images: ImageSummary[]; refreshed: string[]; missing: ImageFailure[]; failed: ImageFailure[] }

const OS_TYPES = ['linux', 'windows'];
const FIRMWARES = ['bios', 'uefi'];

/** Validate every filter before anything is inspected; a bad one is BAD_FILTER (exit 2). */
function compile(f: SearchFilters): { where: string; params: unknown[] } {
  if (f.os !== undefined && !OS_TYPES.includes(f.os)) throw badFilter('--os', f.os, `is not one of ${OS_TYPES.join(', ')}`);
  if (f.firmware !== undefined && !FIRMWARES.includes(f.firmware)) throw badFilter('--firmware', f.firmware, `is not one of ${FIRMWARES.join(', ')}`);
  if (f.distro !== undefined && !f.distro.trim()) throw badFilter('--distro', f.distro, 'is empty');
  for (const d of f.hasDriver ?? []) if (!d.trim()) throw badFilter('--has-driver', d, 'is empty');
  for (const t of f.tag ?? []) if (!t.trim()) throw badFilter('--tag', t, 'is empty');
  const versions: VersionFilter[] = (f.version ?? []).map(v => parseVersionFilter(v, '--version'));
  const kernels: VersionFilter[] = (f.kernel ?? []).map(v => parseVersionFilter(v, '--kernel'));

  const where: string[] = [];
  const params: unknown[] = [];
  for (const t of f.tag ?? []) {
    where.push('EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = i.id AND t.tag = ?)');
    params.push(t);
  }
  // the OS filters hold together for one operating system of the image (a dual-boot disk is two)
  const os: string[] = [];
  const osParams: unknown[] = [];
  if (f.os !== undefined) { os.push('o.type = ?'); osParams.push(f.os); }
  if (f.distro !== undefined) { os.push('lower(o.distro) = lower(?)'); osParams.push(f.distro.trim()); }
  for (const v of versions) { os.push('version_matches(o.match_version, ?)'); osParams.push(JSON.stringify(v)); }
  if (f.firmware !== undefined) { os.push('o.firmware = ?'); osParams.push(f.firmware); }
  if (kernels.length) {
    // …and the kernel filters for one kernel of it
    os.push(`EXISTS (SELECT 1 FROM image_kernels k WHERE k.image_id = o.image_id AND k.os_idx = o.idx AND ${kernels.map(() => 'kernel_matches(k.version, ?)').join(' AND ')})`);
    osParams.push(...kernels.map(k => JSON.stringify(k)));
  }
  for (const d of f.hasDriver ?? []) {
    os.push('EXISTS (SELECT 1 FROM image_drivers d WHERE d.image_id = o.image_id AND d.os_idx = o.idx AND d.name = ?)');
    osParams.push(driverKey(d.trim()));
  }
  if (os.length) {
    where.push(`EXISTS (SELECT 1 FROM image_os o WHERE o.image_id = i.id AND ${os.join(' AND ')})`);
    params.push(...osParams);
  }
  return { where: where.length ? where.join(' AND ') : '1', params };
}

/** Images matching every filter, after bringing each image's report up to date. */
export async function searchImages(c: Catalog, filters: SearchFilters): Promise<SearchResult> {
  const q = compile(filters);
  const rows = c.db.prepare('SELECT * FROM images ORDER BY name').all() as ImageRow[];
  const f = await freshen(c, rows);
  const current = new Set(f.current.map(r => r.id));
  const hits = (c.db.prepare(`SELECT * FROM images i WHERE ${q.where} ORDER BY i.name`).all(...q.params) as ImageRow[])
    .filter(r => current.has(r.id));
  return { images: hits.map(r => summary(c.db, r)), refreshed: f.refreshed, missing: f.missing, failed: f.failed };
}
