// The finished image a registration or export starts from, checked first:
// it exists, is a disk format QEMU and libvirt take, is not a partial
// target (convert only renames a target to its final name after it
// verified) and is not marked corrupt. Then what the guest on it needs.
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { SOURCE_FORMATS } from '../sources/open.js';
import { checkImage, imageInfo } from '../blockdev/qemu-img.js';
import { corruptImage, FerryError, notADiskImage, notRoot, sourceMissing, usageError } from '../errors.js';
import { inspect } from '../inspect/inspect.js';
import { guestFacts, type GuestFacts } from './hardware.js';

export interface ReadyImage { path: string; format: string; virtualSize: number; actualSize: number }

export async function readyImage(spec: string): Promise<ReadyImage> {
  const path = resolve(spec);
  const st = await stat(path).catch(() => undefined);
  if (!st) throw sourceMissing(path);
  if (!st.isFile()) throw notADiskImage(path, 'not a regular file');
  if (path.endsWith('.ferry-partial')) throw usageError(`${path} is a partial target of an unfinished conversion; register or export only a finished (verified) target`);
  let info;
  try { info = await imageInfo(path); } catch (e) { throw corruptImage(path, (e as Error).message); }
  if (!SOURCE_FORMATS.includes(info.format)) throw notADiskImage(path, `format ${info.format} is not supported`);
  if (info.corrupt) throw corruptImage(path, 'the image marks itself corrupt');
  if (info.format === 'qcow2') {
    const problems = await checkImage(path, 'qcow2');
    if (problems.length) throw corruptImage(path, problems.join(', '));
  }
  return { path, format: info.format, virtualSize: info.virtualSize, actualSize: info.actualSize };
}

/**
 * What the guest needs (firmware, MAC bindings, OS names), from a static
 * inspection. `required`: its MAC binding is wanted, so no inspection is no
 * answer; otherwise a guest that cannot be inspected gets generic values.
 */
export async function readGuest(path: string, required: boolean): Promise<GuestFacts> {
  if (process.getuid?.() !== 0) {
    if (required) throw notRoot();
    return guestFacts(undefined);
  }
  try {
    return guestFacts(await inspect(path));
  } catch (e) {
    if (required || !(e instanceof FerryError)) throw e;
    return guestFacts(undefined);
  }
}
