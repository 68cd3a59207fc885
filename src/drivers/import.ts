// `ferry drivers import`: unpack a container with its own tool into the
// store's scratch space, classify its files, store the driver files once by
// hash and remove the scratch. Importing the same container again stores
// nothing new.
import { mkdtemp } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { classify, type ImportOptions } from './classify.js';
import type { AddStatus, DriverFile, DriverStore } from './store.js';
import { listEntries, removeTree, unpack, type ContainerKind } from './unpack.js';

export type { ImportOptions } from './classify.js';

export interface ImportResult {
  path: string;
  kind: ContainerKind;
  container: string;
  containerVersion?: string;
  stored: (DriverFile & { status: AddStatus })[];
  /** files of the container that are no driver, HAL or kernel file */
  ignored: number;
  notes: string[];
}

export async function importContainer(store: DriverStore, path: string, opts: ImportOptions = {}): Promise<ImportResult> {
  const abs = resolve(path);
  const scratch = await mkdtemp(join(store.scratchDir(), 'import-'));
  try {
    const c = await unpack(abs, scratch);
    const entries = await listEntries(c.root, scratch);
    const { files, ignored, notes } = await classify(c, entries, opts);
    const stored = files.map(f => store.add(f.meta, f.entry.abs));
    if (!files.length) notes.push('no kernel module, GRUB x86_64-efi file, Windows driver, HAL or kernel file found in it');
    return { path: abs, kind: c.kind, container: c.name, containerVersion: c.version, stored, ignored, notes };
  } finally {
    removeTree(scratch);
  }
}
