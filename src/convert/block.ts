// --mode block: the disk copied as blocks by qemu-img (zero runs skipped),
// for disks the user does not want rebuilt. Grows but cannot shrink.
import { stat } from 'node:fs/promises';
import { convertImage, createImage, resizeImage } from '../blockdev/qemu-img.js';
import { ownPartial, type OpenDisk } from '../blockdev/disk.js';
import { doesNotFit } from '../errors.js';
import type { ProgressSink } from '../util/progress.js';
import type { Scope } from '../util/scope.js';
import { checkSpace, type ConvertPlan } from './options.js';

/** owner removes the partial target unless it is committed; none: the caller (a job, which resumes) keeps it */
export async function blockCopy(owner: Scope | undefined, plan: ConvertPlan, source: OpenDisk, sourcePath: string, progress: ProgressSink): Promise<{ partialPath: string; targetSize: number }> {
  const targetSize = plan.size ?? source.size;
  if (targetSize < source.size) throw doesNotFit(source.size, targetSize);
  await checkSpace(plan.targetPath, source.info?.actualSize ?? source.size);
  const partialPath = await ownPartial(owner, plan.targetPath);
  progress.phase('block copy', source.info?.actualSize ?? source.size);
  const timer = setInterval(() => {
    stat(partialPath).then(s => progress.update(s.blocks * 512), () => undefined);
  }, 500);
  try {
    if (targetSize > source.size && !['raw', 'qcow2'].includes(plan.format)) {
      // formats qemu-img cannot resize: write a larger empty image first, then copy into it
      await createImage(partialPath, plan.format, targetSize);
      await convertImage(sourcePath, source.format, partialPath, plan.format, { intoEmptyImage: true });
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
