// --mode block: the disk copied as blocks by qemu-img (zero runs skipped),
// for disks the user does not want rebuilt. Grows but cannot shrink.
import { stat } from 'node:fs/promises';
import { convertImage, createImage, resizeImage } from '../blockdev/qemu-img.js';
import { partialPathFor, type OpenDisk } from '../blockdev/disk.js';
import { doesNotFit } from '../errors.js';
import { run } from '../util/exec.js';
import type { ProgressSink } from '../util/progress.js';
import type { Scope } from '../util/scope.js';
import { checkSpace, type ConvertPlan } from './options.js';
import { rm } from 'node:fs/promises';

export async function blockCopy(owner: Scope, plan: ConvertPlan, source: OpenDisk, sourcePath: string, progress: ProgressSink): Promise<{ partialPath: string; targetSize: number }> {
  const targetSize = plan.size ?? source.size;
  if (targetSize < source.size) throw doesNotFit(source.size, targetSize);
  await checkSpace(plan.targetPath, source.info?.actualSize ?? source.size);
  const partialPath = partialPathFor(plan.targetPath);
  owner.defer(`partial target ${partialPath}`, () => rm(partialPath, { force: true }));
  progress.phase('block copy', source.info?.actualSize ?? source.size);
  const timer = setInterval(() => {
    stat(partialPath).then(s => progress.update(s.blocks * 512), () => undefined);
  }, 500);
  try {
    if (targetSize > source.size && !['raw', 'qcow2'].includes(plan.format)) {
      // formats qemu-img cannot resize: write a larger empty image first, then copy into it
      await createImage(partialPath, plan.format, targetSize);
      await run('qemu-img', ['convert', '-n', '--target-is-zero', '-f', source.format, '-O', plan.format, '-S', '4k', '-W', sourcePath, partialPath]);
    } else {
      await convertImage(sourcePath, source.format, partialPath, plan.format);
      if (targetSize > source.size) await resizeImage(partialPath, plan.format, targetSize);
    }
  } finally {
    clearInterval(timer);
  }
  progress.end();
  return { partialPath, targetSize };
}

/** Block-mode verify: the first source.size bytes are identical. */
export async function compareImages(a: string, aFormat: string, b: string, bFormat: string): Promise<string[]> {
  const r = await run('qemu-img', ['compare', '-f', aFormat, '-F', bFormat, a, b], { okCodes: [1] });
  return r.exitCode === 0 ? [] : [r.stdout.trim() || 'contents differ'];
}
