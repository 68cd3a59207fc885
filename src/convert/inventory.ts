// The hardware inventory a P2V agent collected on the physical machine
// (scripts/p2v-agent). `ferry convert --inventory FILE` checks it before
// anything is touched and keeps a copy beside the target, TARGET.inventory.json,
// where re-fitting and registration find the source hardware later.
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FerryError } from '../errors.js';
import type { Scope } from '../util/scope.js';

export const INVENTORY_SCHEMA = 1;
const MAX_BYTES = 16 * 2 ** 20;

export const inventoryInvalid = (path: string, why: string) =>
  new FerryError('INVENTORY_INVALID', 2, `inventory ${path} ${why}; give the inventory.json the P2V agent wrote`, { path });

/** The inventory as text, checked: JSON, an object, `ferryInventory: 1`. */
export async function readInventory(path: string): Promise<string> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) throw inventoryInvalid(path, 'does not exist or is not a file');
  if (st.size > MAX_BYTES) throw inventoryInvalid(path, `is ${st.size} bytes, more than an inventory ever is`);
  const text = await readFile(path, 'utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw inventoryInvalid(path, `is not JSON (${(e as Error).message})`);
  }
  const why = inventoryProblem(doc);
  if (why) throw inventoryInvalid(path, why);
  return text;
}

/** What makes a parsed document no inventory (an object with `ferryInventory: 1`), or undefined; the registry checks more. */
export function inventoryProblem(doc: unknown): string | undefined {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return 'is not a JSON object';
  const schema = (doc as Record<string, unknown>).ferryInventory;
  if (schema === undefined) return "has no 'ferryInventory' field";
  if (schema !== INVENTORY_SCHEMA) return `has schema ${JSON.stringify(schema)}; this Ferry reads schema ${INVENTORY_SCHEMA}`;
  // the lists Ferry reads devices from (a fuzzed `"nics": "x"` once crashed the re-fit)
  for (const list of ['disks', 'nics', 'storageControllers'] as const) {
    const v = (doc as Record<string, unknown>)[list];
    if (v === undefined || v === null) continue;
    if (!Array.isArray(v)) return `has '${list}' that is not a list`;
    const bad = v.findIndex(x => typeof x !== 'object' || x === null || Array.isArray(x));
    if (bad >= 0) return `has '${list}[${bad}]' that is not an object`;
  }
  return undefined;
}

export const inventoryPathFor = (targetPath: string) => `${targetPath}.inventory.json`;

/**
 * Write the inventory under a partial name beside the target (removed by
 * `owner` unless committed); the returned function gives it its real name
 * once the target has its own, or removes a stale copy left by a conversion
 * that --force replaced when there is no inventory this time.
 */
export async function stageInventory(owner: Scope, targetPath: string, text: string | undefined): Promise<() => Promise<string | undefined>> {
  const final = inventoryPathFor(targetPath);
  if (text === undefined) return async () => { await rm(final, { force: true }); return undefined; };
  const partial = join(dirname(final), `.${basename(final)}.ferry-partial`);
  owner.defer(`partial inventory ${partial}`, () => rm(partial, { force: true }));
  await writeFile(partial, text, { mode: 0o644 });
  return async () => { await rename(partial, final); return final; };
}

/** the PCI modalias of every storage controller and NIC in a (checked) inventory: what a physical profile's drivers are looked up by */
export function inventoryModaliases(text: string): string[] {
  return modaliasesOf(JSON.parse(text) as InventoryDevices);
}

interface InventoryDevices { storageControllers?: { modalias?: string | null }[]; nics?: { pci?: { modalias?: string | null } | null }[] }

/** the same, of an inventory already parsed (the machine registry keeps it as an object) */
export function modaliasesOf(doc: InventoryDevices): string[] {
  const all = [...(doc.storageControllers ?? []).map(c => c.modalias), ...(doc.nics ?? []).map(n => n.pci?.modalias)];
  return [...new Set(all.filter((m): m is string => typeof m === 'string' && m.length > 0))];
}
