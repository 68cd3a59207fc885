// `ferry factory build RECIPE.yaml`: a base catalog image + deltas +
// customization + a hardware profile → a new catalog image. Everything is
// checked before the first write (the recipe, the base, every delta whole, the
// profile, the customization); the steps then write into one new qcow2 overlay
// backed by the base, each delta checked against the overlay as the earlier
// steps left it. The recipe is kept in the catalog with the image, so
// `ferry images show` says how it was made. A failed build leaves no overlay
// and no catalog entry.
import { readFile, rm, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse } from 'yaml';
import { openWritable } from '../blockdev/disk.js';
import { workDir } from '../blockdev/mount.js';
import { openDb } from '../catalog/db.js';
import { addImage, checkName, imageSource, type Catalog } from '../catalog/images.js';
import { customizeDisk } from '../customize/disk.js';
import { checkCustomization, parseIpOption, type Customization } from '../customize/identity.js';
import { FerryError, imageNameTaken, notRoot, targetExists } from '../errors.js';
import { inspect } from '../inspect/inspect.js';
import { loadProfile } from '../profiles/profiles.js';
import { createOverlay } from '../refit/reconfigure.js';
import { refitDisk } from '../refit/refit.js';
import { withScope } from '../util/scope.js';
import type { Change } from '../../converters/linux/change.js';
import { checkDeltaOn, writeDeltaInto } from './apply.js';
import { readDelta, type DeltaFile } from './format.js';

export interface Recipe {
  /** the new image's catalog name */
  name: string;
  /** a catalog image name */
  base: string;
  /** the new qcow2 (relative paths: to the recipe's directory) */
  output: string;
  deltas?: string[];
  customize?: { hostname?: string; ip?: string[]; dhcp?: string[]; newIdentity?: boolean };
  profile?: string;
  tags?: string[];
}

export const recipeInvalid = (file: string, why: string) =>
  new FerryError('RECIPE_INVALID', 2, `recipe ${file} cannot be used: ${why}`, { file });

const strings = (v: unknown) => Array.isArray(v) && v.every(x => typeof x === 'string');

export function parseRecipe(file: string, text: string): Recipe {
  let r: unknown;
  try { r = parse(text); } catch (e) { throw recipeInvalid(file, `it is not YAML (${(e as Error).message.split('\n')[0]})`); }
  if (!r || typeof r !== 'object' || Array.isArray(r)) throw recipeInvalid(file, 'it is not a mapping');
  const o = r as Record<string, unknown>;
  const known = ['name', 'base', 'output', 'deltas', 'customize', 'profile', 'tags'];
  const unknown = Object.keys(o).filter(k => !known.includes(k));
  if (unknown.length) throw recipeInvalid(file, `unknown field(s) ${unknown.join(', ')}; a recipe has ${known.join(', ')}`);
  for (const k of ['name', 'base', 'output']) if (typeof o[k] !== 'string' || !o[k]) throw recipeInvalid(file, `'${k}' must be a non-empty string`);
  if (o.deltas !== undefined && !strings(o.deltas)) throw recipeInvalid(file, "'deltas' must be a list of delta files");
  if (o.tags !== undefined && !strings(o.tags)) throw recipeInvalid(file, "'tags' must be a list of strings");
  if (o.profile !== undefined && typeof o.profile !== 'string') throw recipeInvalid(file, "'profile' must be a profile name");
  if (o.customize !== undefined) {
    const c = o.customize as Record<string, unknown>;
    if (!c || typeof c !== 'object' || Array.isArray(c)) throw recipeInvalid(file, "'customize' must be a mapping");
    const ck = ['hostname', 'ip', 'dhcp', 'newIdentity'];
    const bad = Object.keys(c).filter(k => !ck.includes(k));
    if (bad.length) throw recipeInvalid(file, `customize: unknown field(s) ${bad.join(', ')}; it has ${ck.join(', ')}`);
    if (c.hostname !== undefined && typeof c.hostname !== 'string') throw recipeInvalid(file, 'customize.hostname must be a string');
    if (c.ip !== undefined && !strings(c.ip)) throw recipeInvalid(file, 'customize.ip must be a list of IF=CIDR[,gw=G][,dns=D]');
    if (c.dhcp !== undefined && !strings(c.dhcp)) throw recipeInvalid(file, 'customize.dhcp must be a list of interfaces');
    if (c.newIdentity !== undefined && typeof c.newIdentity !== 'boolean') throw recipeInvalid(file, 'customize.newIdentity must be true or false');
  }
  return o as unknown as Recipe;
}

export interface FactoryResult { name: string; output: string; base: string; deltas: string[]; changes: Change[]; recipe: Record<string, unknown> }

export async function factoryBuild(recipeFile: string, opts: { notice?: (line: string) => void } = {}): Promise<FactoryResult> {
  if (process.getuid?.() !== 0) throw notRoot();
  const text = await readFile(recipeFile, 'utf8').catch(() => { throw new FerryError('RECIPE_MISSING', 2, `recipe ${recipeFile} does not exist`, { file: recipeFile }); });
  const recipe = parseRecipe(recipeFile, text);
  const here = dirname(resolve(recipeFile));
  const at = (p: string) => isAbsolute(p) ? p : join(here, p);
  const output = at(recipe.output);
  checkName(recipe.name);
  const customization: Customization | undefined = recipe.customize && {
    hostname: recipe.customize.hostname, ip: (recipe.customize.ip ?? []).map(parseIpOption), dhcp: recipe.customize.dhcp ?? [], newIdentity: recipe.customize.newIdentity,
  };
  if (customization) checkCustomization(customization);
  const profile = recipe.profile ? await loadProfile(recipe.profile) : undefined;
  const deltas: DeltaFile[] = [];
  for (const d of recipe.deltas ?? []) deltas.push(await readDelta(at(d)));
  if (await stat(output).catch(() => undefined)) throw targetExists(output);
  const db = openDb();
  const catalog: Catalog = { db, inspect, notice: opts.notice };
  try {
    const taken = db.prepare('SELECT source FROM images WHERE name = ?').get(recipe.name) as { source: string } | undefined;
    if (taken) throw imageNameTaken(recipe.name, taken.source);
    const base = imageSource(catalog, recipe.base);
    const changes: Change[] = [];
    const record = { ...recipe, file: resolve(recipeFile), baseSource: base, output, deltas: deltas.map(d => d.file), builtAt: new Date().toISOString() };
    let done = false;
    try {
      await createOverlay(base, output);
      for (const d of deltas) {
        opts.notice?.(`applying ${d.file}`);
        await checkDeltaOn(d, output, false);
        await writeDeltaInto(d, output, false);
      }
      if (customization) {
        opts.notice?.('customizing');
        changes.push(...await withScope(async s => customizeDisk(s, await openWritable(s, output, await workDir(s)), await workDir(s), customization)));
      }
      if (profile) {
        opts.notice?.(`re-fitting to profile ${profile.name}`);
        changes.push(...(await withScope(async s => { const work = await workDir(s); return refitDisk(s, await openWritable(s, output, work), work, profile, {}); })).changes);
      }
      await addImage(catalog, output, { name: recipe.name, tags: recipe.tags ?? [], recipe: record });
      done = true;
    } finally {
      if (!done) await rm(output, { force: true });
    }
    return { name: recipe.name, output, base: recipe.base, deltas: record.deltas, changes, recipe: record };
  } finally {
    db.close();
  }
}
