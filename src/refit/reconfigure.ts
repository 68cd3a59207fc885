// `ferry reconfigure IMAGE --profile NAME [--overlay NEW.qcow2]`: re-fit an
// existing image. With --overlay every change goes into a new qcow2 whose
// backing file is IMAGE, so IMAGE (a template) stays byte for byte as it was
// and several re-fits of it can run at once.
import { rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { openWritable } from '../blockdev/disk.js';
import { openSource } from '../sources/open.js';
import { checkCustomizable, customizeDisk } from '../customize/disk.js';
import { checkCustomization, type Customization } from '../customize/identity.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { workDir } from '../blockdev/mount.js';
import { imageInfoChain } from '../blockdev/qemu-img.js';
import { notRoot, sourceMissing, targetExists } from '../errors.js';
import { inventoryModaliases, readInventory } from '../convert/inventory.js';
import { loadProfile } from '../profiles/profiles.js';
import { run } from '../util/exec.js';
import { withScope } from '../util/scope.js';
import { checkRefitRequest, refitDisk, type RefitResult } from './refit.js';
import { parseFirmware } from '../convert/options.js';
import { reconfigureToUefi } from '../convert/to-uefi.js';
import type { Change } from '../../converters/linux/change.js';

export interface ReconfigureRequest { image: string; profile: string; overlay?: string; mac?: string; inventory?: string; firmware?: string; customize?: Customization }
export interface ReconfigureResult extends RefitResult { image: string; overlay?: string; written: string; firmware?: { to: 'uefi'; changes: Change[] }; customized?: Change[] }

/** A new qcow2 whose backing file is image: every write lands in it, image stays as it was. */
export async function createOverlay(image: string, overlay: string): Promise<void> {
  const backingFormat = (await imageInfoChain(image))[0].format;
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', resolve(image), '-F', backingFormat, overlay]);
}

export async function reconfigure(r: ReconfigureRequest): Promise<ReconfigureResult> {
  if (process.getuid?.() !== 0) throw notRoot();
  const profile = await loadProfile(r.profile);
  checkRefitRequest(profile, r.mac, !!r.inventory);
  if (r.customize) checkCustomization(r.customize);
  const firmware = parseFirmware(r.firmware);
  const modaliases = r.inventory ? inventoryModaliases(await readInventory(r.inventory)) : [];
  if (!(await stat(r.image).catch(() => undefined))?.isFile()) throw sourceMissing(r.image);
  const image = resolve(r.image);
  return withScope(async scope => {
    const work = await workDir(scope);
    // the customization is checked on the read-only image before the re-fit writes anything
    if (r.customize) await withScope(async s => checkCustomizable(s, await openSource(s, parseEndpoint(image), work, 'image'), work, r.customize!, false));
    let written = image;
    let done = false;
    if (r.overlay) {
      if (await stat(r.overlay).catch(() => undefined)) throw targetExists(r.overlay);
      await createOverlay(image, r.overlay);
      written = resolve(r.overlay);
      // a failed re-fit leaves no overlay behind (registered first, so released last)
      scope.defer(`overlay ${written}`, () => (done ? undefined : rm(written, { force: true })));
    }
    // the firmware first: the re-fit then sees the ESP it may complete
    const fw = firmware === 'uefi' ? { to: 'uefi' as const, changes: await reconfigureToUefi(written, work) } : undefined;
    const result = await withScope(async s => refitDisk(s, await openWritable(s, written, work), work, profile, { mac: r.mac?.toLowerCase(), modaliases }));
    const customized = r.customize && await withScope(async s => customizeDisk(s, await openWritable(s, written, work), work, r.customize!));
    done = true;
    return { ...result, image, overlay: r.overlay ? written : undefined, written, ...(fw ? { firmware: fw } : {}), ...(customized ? { customized } : {}) };
  });
}
