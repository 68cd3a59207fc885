// Deploy (V2P): an image rebuilt file by file onto a registered machine's
// disk through its agent's writable NBD export, fitted to that disk's size,
// re-fitted to the machine's own hardware (profile `physical` from its
// inventory), given its identity, verified, then booted from the disk; the
// machine is `deployed` only once the deployed system reported its first boot.
//
// Capture (P2V) is the same path read-only the other way: a conversion of
// the agent's read-only export with the machine's inventory attached.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { modaliasesOf } from '../convert/inventory.js';
import { openWritable, type OpenDisk } from '../blockdev/disk.js';
import { openSource } from '../sources/open.js';
import { workDir } from '../blockdev/mount.js';
import { partsToCopy, planRebuild, prepareTarget, rebuildPartition, type PartitionReport } from '../convert/rebuild.js';
import type { ConvertPlan } from '../convert/options.js';
import { checkCustomizable, customizeDisk } from '../customize/disk.js';
import { checkCustomization, parseIpOption, type Customization } from '../customize/identity.js';
import { FerryError, verifyFailed } from '../errors.js';
import { inspect } from '../inspect/inspect.js';
import { loadProfile } from '../profiles/profiles.js';
import { preflightRefit, refitDisk, type RefitOptions, type RefitResult } from '../refit/refit.js';
import { createOverlay } from '../refit/reconfigure.js';
import type { Profile } from '../profiles/profiles.js';
import { parseEndpoint } from '../sources/endpoint.js';
import { openNetworkSource, type NbdEndpoint } from '../sources/network.js';
import { withNetworkCredentials } from '../sources/secrets.js';
import { reportingLostSources, watchConnection } from '../sources/watchdog.js';
import { cutExport, exportReadBytes } from '../blockdev/qsd.js';
import { throwIfAborted } from '../util/abort.js';
import { silentProgress, type ProgressSink } from '../util/progress.js';
import { withScope, type Scope } from '../util/scope.js';
import { verifyDisks } from '../verify/disks.js';
import type { Change } from '../../converters/linux/change.js';
import type { JobSpec } from '../jobs/types.js';
import { runConversion, type StepTracker } from '../jobs/steps.js';
import { bootFromDisk, requestExport, stopExport, waitForFirstBoot } from './agent-work.js';
import { currentAbortSignal } from '../util/abort.js';
import { checkPlatform, chooseDisk, primaryMac, type Inventory, type InventoryDisk } from './fit.js';
import { MachineRegistry } from './registry.js';

export interface DeployPlan {
  machine: string;
  image: string;
  disk: InventoryDisk;
  mac?: string;
  modaliases: string[];
  customization: Customization;
  /** bytes of the image's data that will be written */
  usedBytes: number;
  partitions: { number: number; fs?: string; sourceBytes: number; targetBytes: number }[];
  /** --dry-run only: what re-fit and customization would change, file by file */
  changes?: Change[];
}

export interface DeployResult extends DeployPlan {
  bytesWritten: number;
  copied: PartitionReport[];
  refit: RefitResult;
  customized: Change[];
  verified: boolean;
  seconds: number;
}

const machineLost = (machine: string, where: string, jobHint: string) =>
  new FerryError('MACHINE_LOST', 9, `machine ${machine} stopped answering at ${where} during the deploy; power it on (it boots the Ferry agent again) and ${jobHint}`, { machine });

/** the customization a spec asks for; a deploy always gives the machine a fresh machine-id */
export function customizationOf(spec: Pick<JobSpec, 'customize'>): Customization {
  const c = spec.customize ?? {};
  const customization: Customization = { hostname: c.hostname, ip: (c.ip ?? []).map(parseIpOption), dhcp: c.dhcp ?? [], newIdentity: true };
  checkCustomization(customization);
  return customization;
}

/**
 * Everything checked before a byte is written: the machine and its disk, the
 * image's architecture and firmware, room on the disk, a driver for every
 * storage controller and NIC. `ferry deploy --dry-run` prints this.
 */
export async function planDeploy(reg: MachineRegistry, spec: JobSpec, progress?: ProgressSink, opts: { preview?: boolean } = {}): Promise<DeployPlan> {
  const machine = reg.mustGet(spec.machine!);
  const inv = machine.inventory as Inventory;
  const disk = chooseDisk(machine.id, inv, spec.disk);
  const customization = customizationOf(spec);
  const report = await inspect(spec.source);
  checkPlatform(machine.id, inv, report, spec.source);
  const modaliases = modaliasesOf(inv);
  const profile = await loadProfile('physical');
  return withScope(async scope => {
    const work = await workDir(scope);
    const source = await openSource(scope, parseEndpoint(spec.source), work, 'image', progress);
    const rl = await planRebuild(deployConvertPlan(spec, disk), source, work, progress ?? silentProgress, { checkSpace: false }).catch(e => {
      if ((e as FerryError).code !== 'DOES_NOT_FIT') throw e;
      const { needed } = (e as FerryError).details as { needed: number };
      throw new FerryError('DOES_NOT_FIT', 5, `the data of ${spec.source} needs at least ${needed} bytes but disk ${disk.path} of machine ${machine.id} has ${disk.sizeBytes}; choose a larger disk with --disk (nothing was written)`,
        { needed, size: disk.sizeBytes, machine: machine.id, disk: disk.path });
    });
    await withScope(s => checkCustomizable(s, source, work, customization, true));
    const refitOptions = { mac: primaryMac(inv), modaliases };
    let changes: Change[] | undefined;
    if (opts.preview) changes = await previewChanges(spec.source, work, profile, refitOptions, customization, machine.id, machine.serverUrl ?? undefined);
    else await preflightRefit(scope, source, work, profile, refitOptions);
    const parts = partsToCopy(rl);
    const ss = rl.sectorSize;
    return {
      machine: machine.id, image: spec.source, disk, mac: primaryMac(inv), modaliases, customization, ...(changes ? { changes } : {}),
      usedBytes: parts.reduce((n, p) => n + (p.facts?.usedBytes ?? p.part.size * ss), 0),
      partitions: parts.map(p => ({
        number: p.part.number, fs: p.facts?.type ?? p.fsType, sourceBytes: p.part.size * ss,
        targetBytes: (rl.newTable?.partitions.find(n => n.number === p.part.number)?.size ?? p.part.size) * ss,
      })),
    };
  });
}

/**
 * The re-fit and customization a deploy would make, made for real on a
 * throwaway overlay of the image (so the list is exact, not guessed), which
 * is deleted with the work dir. Neither the image nor the machine is touched.
 */
async function previewChanges(image: string, work: string, profile: Profile, o: RefitOptions, c: Customization, machineId: string, serverUrl?: string): Promise<Change[]> {
  const overlay = join(work, 'preview.qcow2');
  await createOverlay(image, overlay);
  return withScope(async s => {
    const disk = await openWritable(s, overlay, work);
    const refit = await withScope(s2 => refitDisk(s2, disk, work, profile, o));
    // the report's token is issued by the real deploy; the preview shows where it would go
    const report = serverUrl ? firstBootReport(serverUrl, machineId, '…') : undefined;
    return [...refit.changes, ...await withScope(s2 => customizeDisk(s2, disk, work, c, report))];
  });
}

/** the pieces of a conversion plan the rebuild reads: fitted to the machine's disk */
function deployConvertPlan(spec: JobSpec, disk: InventoryDisk): ConvertPlan {
  return {
    source: parseEndpoint(spec.source), targetPath: disk.path, format: 'raw', size: disk.sizeBytes, mode: 'rebuild',
    force: true, verify: true, modaliases: [],
  };
}

export const DEPLOY_STEPS = ['check machine', 'request export', 'copy', 'verify', 're-fit', 'customize', 'boot from disk', 'first boot'];

export async function runDeploy(jobId: string, spec: JobSpec, steps: StepTracker, progress: ProgressSink, log: (line: string) => void): Promise<DeployResult> {
  const started = Date.now();
  const reg = MachineRegistry.open();
  try {
    // a deploy cut off half-way starts over from the export: the disk is rewritten whole
    if (steps.started && !steps.isDone('boot from disk')) steps.reset(DEPLOY_STEPS.filter(s => s !== 'check machine'));
    steps.plan(DEPLOY_STEPS);
    const plan = await steps.run('check machine', async () => {
      const p = await planDeploy(reg, spec, progress);
      reg.begin(p.machine, 'deploying', jobId, spec.source);
      // until the new system is on the disk, a network boot of the machine gets the agent
      reg.setBootTarget(p.machine, 'agent');
      log(`machine ${p.machine}: deploying ${spec.source} onto ${p.disk.path} (${p.disk.sizeBytes} bytes; ${p.usedBytes} bytes of data)`);
      return p;
    });
    try {
      const result = await deployOnto(reg, plan, spec, steps, progress, log);
      return { ...result, seconds: (Date.now() - started) / 1000 };
    } catch (e) {
      if ((e as { code?: string }).code !== 'JOB_INTERRUPTED') {
        reg.setWork(plan.machine, null);
        reg.finish(plan.machine, 'failed', `deploy-failed: ${(e as { code?: string }).code ?? 'ERROR'}`);
      }
      throw e;
    }
  } finally {
    reg.close();
  }
}

async function deployOnto(reg: MachineRegistry, plan: DeployPlan, spec: JobSpec, steps: StepTracker, progress: ProgressSink, log: (line: string) => void) {
  return withScope(async owner => {
    const work = await workDir(owner);
    const ex = await steps.run('request export', () => requestExport(reg, plan.machine, plan.disk.path, true),
      { checkpoint: e => ({ url: e.url, ticket: e.ticket }) });
    log(`machine ${plan.machine}: its agent exports ${plan.disk.path} at ${ex.url}`);
    const ep = parseEndpoint(ex.url) as NbdEndpoint;
    const jobHint = 'retry the job (ferry jobs retry)';
    const written = await withNetworkCredentials({ tlsPskFile: ex.pskFile }, () => reportingLostSources([ep], () =>
      writeDisk(reg, owner, work, plan, spec, ep, steps, progress))).catch(e => {
      if ((e as { code?: string }).code === 'SOURCE_CONNECTION_LOST') throw machineLost(plan.machine, ex.url.replace(/^nbds:\/\//, ''), jobHint);
      throw e;
    });
    await steps.run('boot from disk', async () => {
      await stopExport(reg, plan.machine, ex);
      await bootFromDisk(reg, plan.machine);
    });
    log(`machine ${plan.machine}: booting from its disk; waiting for the deployed system to report`);
    const peer = await steps.run('first boot', () => waitForFirstBoot(reg, plan.machine, firstBootWaitMs(), currentAbortSignal()));
    if (!peer) throw new FerryError('FIRST_BOOT_TIMEOUT', 9, `machine ${plan.machine} did not report its first boot within ${firstBootWaitMs() / 1000} s; look at its console`, { machine: plan.machine });
    reg.finish(plan.machine, 'deployed', 'deployed');
    log(`machine ${plan.machine}: the deployed system reported its first boot from ${peer}`);
    return { ...plan, ...written };
  });
}

const firstBootWaitMs = () => Number(process.env.FERRY_FIRST_BOOT_SECONDS ?? 900) * 1000;

/** copy → verify → re-fit → customize, all on the agent's export, which stays open throughout */
async function writeDisk(reg: MachineRegistry, owner: Scope, work: string, plan: DeployPlan, spec: JobSpec, ep: NbdEndpoint, steps: StepTracker, progress: ProgressSink) {
  const source = await openSource(owner, parseEndpoint(spec.source), work, 'image', progress);
  const target: OpenDisk = await openNetworkSource(owner, ep, work, 'machine-disk', { writable: true });
  // a machine that stops answering (powered off, unplugged) is given up after the reconnect window, not waited on forever
  watchConnection(owner, ep, progress, { readBytes: () => exportReadBytes(target.file), cutOff: () => cutExport(target.file) });
  const rl = await planRebuild(deployConvertPlan(spec, plan.disk), source, work, progress, { checkSpace: false });
  if (rl.targetSize > target.size) throw new FerryError('DOES_NOT_FIT', 5, `the agent exports ${target.size} bytes, less than the inventory's ${rl.targetSize}`, {});
  const copied = await steps.run('copy', async () => {
    await prepareTarget(rl, source, target.file);
    const reports: PartitionReport[] = [];
    for (const sp of partsToCopy(rl)) {
      throwIfAborted();
      reports.push(await rebuildPartition(rl, sp, source, target, work, progress));
    }
    return reports;
  });
  await steps.run('verify', async () => {
    const v = await verifyDisks(source, target, work, progress);
    if (!v.equivalent) throw verifyFailed(v.differences);
    return { equivalent: true, filesystems: v.filesystems };
  });
  const profile = await loadProfile('physical');
  const refit = await steps.run('re-fit', () => withScope(s => refitDisk(s, target, work, profile, { mac: plan.mac, modaliases: plan.modaliases })));
  const customized = await steps.run('customize', () => withScope(s => customizeDisk(s, target, work, plan.customization, firstBootReportFor(reg, plan.machine))));
  return { copied, refit, customized, verified: true, bytesWritten: copied.reduce((n, c) => n + c.bytesCopied, 0) };
}

/** where the deployed system reports its first boot: the server its agent talked to */
function firstBootReportFor(reg: MachineRegistry, machineId: string) {
  const url = reg.mustGet(machineId).serverUrl;
  if (!url) throw new FerryError('SERVER_URL_UNKNOWN', 2, `machine ${machineId}: the URL its agent reached the server at is not known; start ferry serve with --public-url and boot the agent again`, { machine: machineId });
  return firstBootReport(url, machineId, reg.issueBootToken(machineId));
}

function firstBootReport(serverUrl: string, machineId: string, token: string) {
  const server = new URL(serverUrl);
  return { host: server.hostname, port: Number(server.port || 80), path: `/machines/${machineId}/booted`, token };
}

// ——— capture (P2V) ———

export const CAPTURE_STEPS = ['check machine', 'request export'];

/** The machine's disk, exported read-only by its agent, converted like any network source; then it boots its own system again. */
export async function runCapture(jobId: string, spec: JobSpec, steps: StepTracker, progress: ProgressSink, log: (line: string) => void): Promise<unknown> {
  const reg = MachineRegistry.open();
  try {
    // the export of an interrupted run is gone with its agent session: ask again, convert again
    if (steps.started && !steps.isDone('boot from disk')) steps.reset(steps.steps.map(s => s.name).filter(n => n !== 'check machine'));
    steps.plan(CAPTURE_STEPS);
    const { machine, disk, before } = await steps.run('check machine', async () => {
      const m = reg.mustGet(spec.machine!);
      const d = chooseDisk(m.id, m.inventory as Inventory, spec.disk);
      reg.begin(m.id, 'capturing', jobId);
      // the machine has to run the agent: its next network boot gets the agent, not its disk
      reg.setBootTarget(m.id, 'agent');
      log(`machine ${m.id}: capturing ${d.path}; boot the machine from the network if it is not running the Ferry agent`);
      return { machine: m.id, disk: d, before: m.state };
    });
    try {
      return await withScope(async owner => {
        const work = await workDir(owner);
        const ex = await steps.run('request export', () => requestExport(reg, machine, disk.path, false), { checkpoint: e => ({ url: e.url, ticket: e.ticket }) });
        const inventory = `${work}/inventory.json`;
        await writeFile(inventory, JSON.stringify(reg.mustGet(machine).inventory, null, 2), { mode: 0o600 });
        const conversion: JobSpec = {
          source: ex.url, target: spec.target, format: spec.format, size: spec.size, profile: spec.profile, mac: spec.mac,
          options: { ...spec.options, inventory }, register: spec.register,
        };
        const result = await withNetworkCredentials({ tlsPskFile: ex.pskFile }, () => runConversion(conversion, steps, progress, log));
        await steps.run('boot from disk', async () => {
          await stopExport(reg, machine, ex);
          await bootFromDisk(reg, machine);
        });
        reg.finish(machine, before === 'deployed' ? 'deployed' : 'ready', 'captured');
        return { machine, disk: disk.path, ...result as object };
      });
    } catch (e) {
      if ((e as { code?: string }).code !== 'JOB_INTERRUPTED') {
        reg.setWork(machine, null);
        reg.finish(machine, 'failed', `capture-failed: ${(e as { code?: string }).code ?? 'ERROR'}`);
      }
      throw e;
    }
  } finally {
    reg.close();
  }
}
