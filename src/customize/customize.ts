// `ferry customize IMAGE`: give an image (a template) its own identity
// statically. Everything the guest cannot take is refused on the read-only
// image first; then the changes go into IMAGE itself, into a new qcow2 overlay
// whose backing file is IMAGE (--overlay: IMAGE stays byte for byte), or —
// with --dry-run — into a throwaway overlay in the work dir, so the change
// list is the real one and nothing the user owns is written.
import { rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Change } from '../../converters/linux/change.js';
import { openWritable } from '../blockdev/disk.js';
import { openSource } from '../sources/open.js';
import { workDir } from '../blockdev/mount.js';
import { notRoot, sourceMissing, targetExists, usageError } from '../errors.js';
import { createOverlay } from '../refit/reconfigure.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { withScope } from '../util/scope.js';
import { checkCustomizable, customizeDisk } from './disk.js';
import { checkCustomization, isEmptyCustomization, type Customization } from './identity.js';

export interface CustomizeRequest { image: string; overlay?: string; customization: Customization; dryRun?: boolean }
export interface CustomizeResult {
  image: string;
  overlay?: string;
  /** the file the changes went into (IMAGE or the overlay); with --dry-run nothing was written */
  written?: string;
  dryRun: boolean;
  changes: Change[];
}

export async function customizeImage(r: CustomizeRequest): Promise<CustomizeResult> {
  const c = r.customization;
  checkCustomization(c);
  if (isEmptyCustomization(c)) throw usageError('nothing to customize: give --hostname, --ip, --dhcp, --new-identity, --ssh-authorized-key, --timezone, --domain-join or --run');
  if (process.getuid?.() !== 0) throw notRoot();
  if (!(await stat(r.image).catch(() => undefined))?.isFile()) throw sourceMissing(r.image);
  const image = resolve(r.image);
  const overlay = r.overlay && resolve(r.overlay);
  if (overlay && await stat(overlay).catch(() => undefined)) throw targetExists(overlay);
  return withScope(async scope => {
    const work = await workDir(scope);
    // read-only first: an unknown user or zone, a guest without ifupdown/networkd, no Linux root
    await withScope(async s => checkCustomizable(s, await openSource(s, parseEndpoint(image), work, 'image'), work, c, false));
    let target = image;
    let done = false;
    if (r.dryRun || overlay) {
      target = r.dryRun ? join(work, 'dry-run.qcow2') : overlay!;
      await createOverlay(image, target);
      // a failed customization leaves no overlay behind (registered first, so released last)
      if (!r.dryRun) scope.defer(`overlay ${target}`, () => (done ? undefined : rm(target, { force: true })));
    }
    const changes = await withScope(async s => customizeDisk(s, await openWritable(s, target, work), work, c));
    done = true;
    return { image, ...(overlay && !r.dryRun ? { overlay } : {}), ...(r.dryRun ? {} : { written: target }), dryRun: !!r.dryRun, changes };
  });
}
