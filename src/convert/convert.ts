// `ferry convert`: check the request, open the source read-only, build the
// target under a partial name, verify it, then give it its real name.
// Whatever happens, every daemon, loop device, mount and partial file goes.
import { stat } from 'node:fs/promises';
import { commitTarget, openWritable, type OpenDisk } from '../blockdev/disk.js';
import { openSource } from '../sources/open.js';
import { workDir } from '../blockdev/mount.js';
import { compareImages, imageInfo } from '../blockdev/qemu-img.js';
import { verifyFailed } from '../errors.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { reportingLostSources } from '../sources/watchdog.js';
import { withSignalAbort, throwIfAborted } from '../util/abort.js';
import type { ProgressSink } from '../util/progress.js';
import { withScope } from '../util/scope.js';
import { verifyDisks, type VerifyResult } from '../verify/disks.js';
import { blockCopy } from './block.js';
import { stageInventory } from './inventory.js';
import { preflightRefit, refitDisk, type RefitResult } from '../refit/refit.js';
import { checkRequest, type ConvertPlan, type ConvertRequest, type Mode } from './options.js';
import { provenVolumes, rebuild, type RebuildReport } from './rebuild.js';
import { checkUefiSource, fitUefiTarget } from './to-uefi.js';
import type { Change } from '../../converters/linux/change.js';
import { checkCustomizable, customizeDisk } from '../customize/disk.js';

export interface ConvertResult {
  source: string;
  target: string;
  format: string;
  mode: Mode;
  virtualSize: number;
  /** bytes the target file occupies on disk */
  allocatedBytes: number;
  seconds: number;
  layout?: RebuildReport;
  verified: boolean;
  verify?: VerifyResult;
  /** where the P2V inventory given with --inventory was kept */
  inventory?: string;
  /** what the re-fit to --profile changed (after verify: the copy itself is proven equal first) */
  refit?: RefitResult;
  /** --firmware uefi: what the guest's boot got (ESP, loader, fstab, grub.cfg); empty when it booted UEFI already */
  firmware?: { to: 'uefi'; changes: Change[] };
  /** what the customization (--hostname, --new-identity, …) changed, after the re-fit */
  customized?: Change[];
}

export async function convert(req: ConvertRequest, progress: ProgressSink): Promise<ConvertResult> {
  const started = Date.now();
  const plan = await checkRequest(req);
  return reportingLostSources([plan.source], () => convertIn(req, plan, progress, started));
}

function convertIn(req: ConvertRequest, plan: ConvertPlan, progress: ProgressSink, started: number): Promise<ConvertResult> {
  return withSignalAbort(() => withScope(async owner => {
    const work = await workDir(owner);
    const source = await openSource(owner, plan.source, work, 'source', progress);
    // a driver the re-fit will need and cannot find stops the conversion here, before the target exists
    if (plan.profile) await withScope(s => preflightRefit(s, source, work, plan.profile!, { mac: plan.mac, modaliases: plan.modaliases }));
    // a guest that cannot boot UEFI (Windows, 32-bit, no x86_64-efi GRUB) stops here too
    if (plan.firmware === 'uefi') await withScope(s => checkUefiSource(s, source, work));
    // an unknown user or zone, a network setup Ferry cannot write, stops here too
    if (plan.customize) await withScope(s => checkCustomizable(s, source, work, plan.customize!, false));
    let layout: RebuildReport | undefined;
    let partialPath: string;
    let targetSize: number;
    if (plan.mode === 'block') {
      // a decoded source (network disk, a disk inside an OVA) is read through its exported file
      const srcPath = plan.source.kind === 'file' && !source.sourceFormat ? plan.source.path : source.file;
      ({ partialPath, targetSize } = await blockCopy(owner, plan, source, srcPath, progress));
    } else {
      const built = await rebuild(owner, plan, source, work, progress);
      layout = built.report;
      partialPath = built.target.partialPath;
      targetSize = built.report.targetSize;
    }
    throwIfAborted();
    let verify: VerifyResult | undefined;
    if (plan.verify) {
      verify = await withScope(async vs => {
        const target = await openSource(vs, parseEndpoint(partialPath), work, 'verify-target');
        if (plan.mode === 'block') return blockVerify(source, plan.source.kind === 'file' && !source.sourceFormat ? plan.source.path : source.file, target, partialPath);
        return verifyDisks(source, target, work, progress, { layoutChanged: !!layout?.esp, proven: provenVolumes(layout) });
      });
      if (!verify.equivalent) throw verifyFailed(verify.differences);
    }
    throwIfAborted();
    let firmware: ConvertResult['firmware'];
    if (plan.firmware === 'uefi') {
      progress.phase('firmware', 0);
      const esp = layout?.esp;
      firmware = { to: 'uefi', changes: esp ? await withScope(async fs => fitUefiTarget(fs, await openWritable(fs, partialPath, work), esp, work)) : [] };
    }
    throwIfAborted();
    let refit: RefitResult | undefined;
    if (plan.profile) {
      progress.phase('refit', 0);
      refit = await withScope(async rs => refitDisk(rs, await openWritable(rs, partialPath, work), work, plan.profile!, { mac: plan.mac, modaliases: plan.modaliases }));
    }
    throwIfAborted();
    let customized: Change[] | undefined;
    if (plan.customize) {
      progress.phase('customize', 0);
      customized = await withScope(async cs => customizeDisk(cs, await openWritable(cs, partialPath, work), work, plan.customize!));
    }
    throwIfAborted();
    const commitInventory = await stageInventory(owner, plan.targetPath, plan.inventory);
    await commitTarget({ partialPath, finalPath: plan.targetPath });
    const inventory = await commitInventory();
    const st = await stat(plan.targetPath);
    return {
      source: req.source, target: plan.targetPath, format: plan.format, mode: plan.mode,
      virtualSize: (await imageInfo(plan.targetPath, plan.format)).virtualSize ?? targetSize,
      allocatedBytes: st.blocks * 512, seconds: (Date.now() - started) / 1000,
      layout, verified: !!verify, verify, inventory, refit, firmware, ...(customized ? { customized } : {}),
    };
  }));
}

async function blockVerify(source: OpenDisk, sourcePath: string, target: OpenDisk, targetPath: string): Promise<VerifyResult> {
  const differences = await compareImages(sourcePath, source.format, targetPath, target.format);
  return { equivalent: differences.length === 0, differences, filesystems: [] };
}

