// A conversion as a job: the same code as `ferry convert` (convert/rebuild.ts),
// cut into named steps, each checkpointed in the store when it ends. A resumed
// job skips the steps that are done (re-opening what they produced: the
// source, the partial target) and redoes the one that was interrupted; a
// partition's step reformats it, so a half-copied file system never counts.
import { checkCustomizable, customizeDisk } from '../customize/disk.js';
import { customizationFromSpec } from '../customize/spec.js';
import type { Change } from '../../converters/linux/change.js';
import { access, open, rm, stat } from 'node:fs/promises';
import { commitTarget, createTargetAt, openWritable, partialPathFor, type OpenDisk } from '../blockdev/disk.js';
import { openSource } from '../sources/open.js';
import { workDir } from '../blockdev/mount.js';
import { compareImages, imageInfo } from '../blockdev/qemu-img.js';
import { blockCopy } from '../convert/block.js';
import { inventoryPathFor, stageInventory } from '../convert/inventory.js';
import { checkRequest, type ConvertPlan, type ConvertRequest, type Mode } from '../convert/options.js';
import { partsToCopy, planRebuild, provenVolumes, prepareTarget, rebuildPartition, type PartitionReport, type RebuildLayout, type RebuildReport } from '../convert/rebuild.js';
import { checkUefiSource, fitUefiTarget } from '../convert/to-uefi.js';
import type { ConvertResult } from '../convert/convert.js';
import { jobResumeFailed, verifyFailed } from '../errors.js';
import { preflightRefit, refitDisk, type RefitResult } from '../refit/refit.js';
import { preflightRegister } from '../register/register.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { reportingLostSources } from '../sources/watchdog.js';
import { throwIfAborted } from '../util/abort.js';
import type { ProgressSink } from '../util/progress.js';
import { Scope, withScope } from '../util/scope.js';
import { verifyDisks, type VerifyResult } from '../verify/disks.js';
import { registerDomain, type Registered } from './register.js';
import type { JobSpec, StepRecord } from './types.js';

/** The steps' records as the store keeps them; every change is written through at once. */
export class StepTracker {
  constructor(
    readonly jobId: string,
    readonly steps: StepRecord[],
    private readonly save: (steps: StepRecord[]) => void,
    private readonly onStep: (s: StepRecord) => void,
    private readonly log: (line: string) => void,
  ) {}

  private find(name: string) { return this.steps.find(s => s.name === name); }
  isDone(name: string) { return this.find(name)?.state === 'done'; }
  /** whether any step ever started: the job is being resumed */
  get started() { return this.steps.some(s => s.state !== 'pending'); }
  get running() { return this.steps.find(s => s.state === 'running'); }

  /** Make sure these steps exist, in this order, after `after` (or at the end). */
  plan(names: string[], after?: string): void {
    let at = after ? this.steps.findIndex(s => s.name === after) + 1 : this.steps.length;
    if (after && at === 0) at = this.steps.length;
    for (const name of names) {
      const i = this.steps.findIndex(s => s.name === name);
      if (i >= 0) { at = i + 1; continue; }
      this.steps.splice(at++, 0, { name, state: 'pending' });
    }
    this.save(this.steps);
  }

  /** Forget that these steps ran (their product is gone): they run again. */
  reset(names: string[]): void {
    for (const s of this.steps) if (names.includes(s.name)) { s.state = 'pending'; delete s.startedAt; delete s.endedAt; delete s.checkpoint; delete s.progress; }
    this.save(this.steps);
  }

  setProgress(p: StepRecord['progress']): void {
    const s = this.running;
    if (!s) return;
    s.progress = p;
    this.save(this.steps);
  }

  /**
   * Run a step. Done before: `resume(checkpoint)` re-creates what it made
   * (or the checkpoint is returned). Interrupted before (found running): it
   * is redone, unless it is not idempotent (resumable: false).
   */
  async run<T>(name: string, fn: () => Promise<T>, opts: {
    resume?: (checkpoint: unknown) => Promise<T>;
    checkpoint?: (value: T) => unknown;
    resumable?: boolean;
  } = {}): Promise<T> {
    let s = this.find(name);
    if (!s) { s = { name, state: 'pending' }; this.steps.push(s); }
    if (s.state === 'done') {
      this.log(`step ${name}: done before${opts.resume ? ', re-opened' : ', skipped'}`);
      return opts.resume ? opts.resume(s.checkpoint) : s.checkpoint as T;
    }
    if (s.state === 'running') {
      if (opts.resumable === false) throw jobResumeFailed(this.jobId, `step '${name}' was interrupted and cannot be redone on a half-changed image`);
      this.log(`step ${name}: was interrupted; redoing it`);
    }
    throwIfAborted();
    s.state = 'running'; s.startedAt = new Date().toISOString(); delete s.endedAt; delete s.progress; delete s.checkpoint;
    this.save(this.steps);
    this.onStep(s);
    this.log(`step ${name}: started`);
    try {
      const value = await fn();
      s.state = 'done'; s.endedAt = new Date().toISOString(); delete s.progress;
      const cp = opts.checkpoint ? opts.checkpoint(value) : value;
      if (cp !== undefined) s.checkpoint = JSON.parse(JSON.stringify(cp));
      this.save(this.steps);
      this.onStep(s);
      this.log(`step ${name}: done`);
      return value;
    } catch (e) {
      // a step stopped by the service shutting down stays 'running': the next start redoes it
      if ((e as { code?: string }).code !== 'JOB_INTERRUPTED') {
        s.state = 'failed'; s.endedAt = new Date().toISOString();
        this.save(this.steps);
        this.onStep(s);
        this.log(`step ${name}: failed: ${(e as Error).message}`);
      }
      throw e;
    }
  }
}

export function requestOf(spec: JobSpec): ConvertRequest {
  return {
    source: spec.source, target: spec.target, format: spec.format, size: spec.size,
    mode: spec.options?.mode, force: spec.options?.force, verify: spec.options?.verify,
    inventory: spec.options?.inventory, profile: spec.profile, mac: spec.mac, firmware: spec.firmware, forceNtfsDirty: spec.options?.forceNtfsDirty,
    customize: customizationFromSpec(spec.customize),
  };
}

/** The steps a spec will run, as far as they are known before the source is read. */
export function initialSteps(spec: JobSpec): string[] {
  const block = spec.options?.mode === 'block';
  return [
    'open source',
    ...(block ? ['block copy'] : ['plan layout', 'create target']),
    ...(spec.options?.verify === false ? [] : ['verify']),
    ...(spec.firmware === 'uefi' ? ['firmware'] : []),
    ...(spec.profile ? ['re-fit'] : []),
    ...(spec.customize && customizationFromSpec(spec.customize) ? ['customize'] : []),
    'commit',
    ...(spec.register ? ['register'] : []),
  ];
}

const copyStepName = (n: number) => `copy p${n}`;

export interface JobResult {
  source: string; target: string; format: string; mode: Mode;
  virtualSize: number; allocatedBytes: number; seconds: number;
  layout?: RebuildReport; verified: boolean;
  verify?: { equivalent: boolean; filesystems: VerifyResult['filesystems'] };
  refit?: RefitResult; inventory?: string;
  firmware?: ConvertResult['firmware'];
  registered?: Registered;
  customized?: Change[];
}

const exists = (p: string) => access(p).then(() => true, () => false);

/** Make what was written so far durable: a crash after this keeps the finished partition. */
async function flush(file: string): Promise<void> {
  const fh = await open(file, 'r+');
  try { await fh.sync(); } finally { await fh.close(); }
}

/** The job's partial target: the job (not a scope) decides when it goes, so a crash or a stop keeps it. */
export const partialOf = (spec: JobSpec) => {
  if (spec.target === undefined) return undefined;
  const t = parseEndpoint(spec.target);
  return t.kind === 'file' ? partialPathFor(t.path) : undefined;
};

export async function runConversion(spec: JobSpec, steps: StepTracker, progress: ProgressSink, log: (line: string) => void): Promise<JobResult> {
  const started = Date.now();
  const req = requestOf(spec);
  // a target committed by an interrupted run is ours, not one to refuse
  const committed = steps.isDone('commit') || steps.running?.name === 'commit';
  steps.plan(initialSteps(spec));
  const plan = await checkRequest({ ...req, force: req.force || committed });
  // a taken domain name or a libvirt that does not answer fails the job before anything is copied
  if (spec.register && !committed) {
    await preflightRegister({ uri: spec.register.libvirt, name: spec.register.name, profile: spec.profile, image: plan.targetPath });
  }
  return reportingLostSources([plan.source], () => withScope(owner => convertSteps(plan, spec, steps, progress, log, owner, started)));
}

async function convertSteps(plan: ConvertPlan, spec: JobSpec, steps: StepTracker, progress: ProgressSink, log: (line: string) => void, owner: Scope, started: number): Promise<JobResult> {
  const work = await workDir(owner);
  const partialPath = partialPathFor(plan.targetPath);
  const openIt = async () => {
    const source = await openSource(owner, plan.source, work, 'source', progress);
    // a driver the re-fit will need and cannot find stops the job here, before the target exists
    if (plan.profile) await withScope(s => preflightRefit(s, source, work, plan.profile!, { mac: plan.mac, modaliases: plan.modaliases }));
    if (plan.firmware === 'uefi') await withScope(s => checkUefiSource(s, source, work));
    if (plan.customize) await withScope(s => checkCustomizable(s, source, work, plan.customize!, false));
    return source;
  };
  const source = await steps.run('open source', openIt, {
    resume: openIt,
    checkpoint: s => ({ format: s.format, size: s.size, describe: s.describe }),
  });

  // a finished target whose later steps remain (re-fit, commit) needs the partial; gone means start over,
  // and so does a re-fit cut off half-way (the image is half-changed; it is not redone on top of that)
  const rebuildAll = (why: string) => {
    log(why);
    steps.reset(steps.steps.filter(s => s.name !== 'open source' && s.name !== 'plan layout').map(s => s.name));
  };
  if (steps.started && !steps.isDone('commit') && (steps.isDone('create target') || steps.isDone('block copy')) && !(await exists(partialPath))) {
    rebuildAll(`the partial target ${partialPath} is gone; building it again`);
  } else if (steps.running?.name === 're-fit' || steps.running?.name === 'firmware' || steps.running?.name === 'customize') {
    rebuildAll('the re-fit was interrupted on a half-changed image; building the target again from the source');
  }

  let layout: RebuildReport | undefined;
  let targetSize: number;
  if (plan.mode === 'block') {
    const srcPath = plan.source.kind === 'file' ? plan.source.path : source.file;
    // no owner: the job, not a scope, decides when the partial goes
    ({ targetSize } = await steps.run('block copy', () => blockCopy(undefined, plan, source, srcPath, progress)));
  } else {
    const built = await rebuildSteps(plan, source, work, partialPath, steps, progress, log);
    layout = built;
    targetSize = built.targetSize;
  }
  throwIfAborted();

  let verify: VerifyResult | undefined;
  if (plan.verify) {
    verify = await steps.run('verify', () => withScope(async vs => {
      const target = await openSource(vs, parseEndpoint(partialPath), work, 'verify-target');
      if (plan.mode === 'block') {
        const differences = await compareImages(plan.source.kind === 'file' ? plan.source.path : source.file, source.format, partialPath, target.format);
        return { equivalent: differences.length === 0, differences, filesystems: [] } as VerifyResult;
      }
      const v = await verifyDisks(source, target, work, progress, { layoutChanged: !!layout?.esp, proven: provenVolumes(layout) });
      if (!v.equivalent) throw verifyFailed(v.differences);
      return v;
    }), { checkpoint: v => ({ equivalent: v.equivalent, differences: v.differences.length, filesystems: v.filesystems }) });
    if (!verify.equivalent) throw verifyFailed(verify.differences);
  }
  throwIfAborted();

  let firmware: ConvertResult['firmware'];
  if (plan.firmware === 'uefi') {
    const esp = layout?.esp;
    firmware = await steps.run('firmware', async () => {
      progress.phase('firmware', 0);
      return { to: 'uefi' as const, changes: esp ? await withScope(async fs => fitUefiTarget(fs, await openWritable(fs, partialPath, work), esp, work)) : [] };
    }, { resumable: false });
  }
  throwIfAborted();

  let refit: RefitResult | undefined;
  if (plan.profile) {
    refit = await steps.run('re-fit', async () => {
      progress.phase('refit', 0);
      return withScope(async rs => refitDisk(rs, await openWritable(rs, partialPath, work), work, plan.profile!, { mac: plan.mac, modaliases: plan.modaliases }));
    }, { resumable: false });
  }
  throwIfAborted();

  let customized: Change[] | undefined;
  if (plan.customize) {
    customized = await steps.run('customize', async () => {
      progress.phase('customize', 0);
      return withScope(async cs => customizeDisk(cs, await openWritable(cs, partialPath, work), work, plan.customize!));
    }, { resumable: false });
  }
  throwIfAborted();

  const inventory = await steps.run('commit', async () => {
    if (!(await exists(partialPath)) && await exists(plan.targetPath)) return undefined; // renamed just before a crash
    const commitInventory = await stageInventory(owner, plan.targetPath, plan.inventory);
    await commitTarget({ partialPath, finalPath: plan.targetPath });
    return commitInventory();
  });

  const interrupted = steps.running?.name === 'register';
  const registered = spec.register
    ? await steps.run('register', () => registerDomain(spec, plan.targetPath, { interrupted }, log)).catch(async e => {
      // checked before the copy; lost since (a name taken meanwhile): the job fails whole, its target goes too
      if ((e as { code?: string }).code !== 'JOB_INTERRUPTED') {
        await rm(plan.targetPath, { force: true });
        await rm(inventoryPathFor(plan.targetPath), { force: true });
        log(`removed ${plan.targetPath}: the job failed at registration and leaves no target behind`);
      }
      throw e;
    })
    : undefined;

  const st = await stat(plan.targetPath);
  return {
    source: spec.source, target: plan.targetPath, format: plan.format, mode: plan.mode,
    virtualSize: (await imageInfo(plan.targetPath, plan.format)).virtualSize ?? targetSize,
    allocatedBytes: st.blocks * 512, seconds: (Date.now() - started) / 1000,
    layout, verified: !!verify, verify: verify && { equivalent: verify.equivalent, filesystems: verify.filesystems },
    refit, firmware, inventory, registered, ...(customized ? { customized } : {}),
  };
}

/** plan layout → create target → one 'copy pN' step per partition. */
async function rebuildSteps(plan: ConvertPlan, source: OpenDisk, work: string, partialPath: string, steps: StepTracker, progress: ProgressSink, log: (line: string) => void): Promise<RebuildReport> {
  const planIt = (resuming: boolean) => planRebuild(plan, source, work, progress, { checkSpace: !resuming });
  const summary = (rl: RebuildLayout) => ({ targetSize: rl.targetSize, table: rl.newTable ?? null, parts: partsToCopy(rl).map(p => p.part.number) });
  const rl = await steps.run('plan layout', () => planIt(false), {
    checkpoint: summary,
    resume: async cp => {
      const again = await planIt(true);
      // the target was laid out by the first plan; a source that plans differently has changed
      if (JSON.stringify(summary(again)) !== JSON.stringify(cp)) throw jobResumeFailed(steps.jobId, 'the source is no longer what the job began with (its layout plans differently)');
      return again;
    },
  });
  const parts = partsToCopy(rl);
  steps.plan(parts.map(p => copyStepName(p.part.number)), 'create target');

  const reports: PartitionReport[] = [];
  let bootCode: RebuildReport['bootCode'] = { mbr: false, gapBytes: 0 };
  await withScope(async session => {
    const target = await steps.run('create target', async () => {
      await rm(partialPath, { force: true });
      const t = await createTargetAt(session, partialPath, plan.targetPath, plan.format, rl.targetSize, work);
      bootCode = await prepareTarget(rl, source, t.file);
      await flush(t.file);
      return t as OpenDisk;
    }, {
      checkpoint: () => ({ partialPath, bootCode }),
      resume: async cp => {
        bootCode = (cp as { bootCode: RebuildReport['bootCode'] }).bootCode;
        log(`re-opened the partial target ${partialPath}`);
        return openWritable(session, partialPath, work);
      },
    });
    for (const sp of parts) {
      reports.push(await steps.run(copyStepName(sp.part.number), async () => {
        const r = await rebuildPartition(rl, sp, source, target, work, progress);
        await flush(target.file);
        return r;
      }));
    }
  });
  return { partitionTable: rl.newTable?.label ?? 'none', targetSize: rl.targetSize, bootCode, partitions: reports, ...(rl.esp ? { esp: rl.esp } : {}) };
}
