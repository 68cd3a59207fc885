// `ferry deploy IMAGE --machine ID …` and `ferry capture --machine ID TARGET …`:
// each is a job (checkpointed steps, run by `ferry serve` or a worker) that
// this command queues and follows to its end; `deploy --dry-run` only plans.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { ferryHome, openDb } from '../catalog/db.js';
import type { JobSpec } from '../jobs/types.js';
import { planDeploy } from '../machines/deploy.js';
import { MachineRegistry } from '../machines/registry.js';
import { finishJob, waitForJob, withJobs } from './jobs.js';
import { customizationFromArgs, customizeOptions } from './customize-options.js';
import { customizationToSpec } from '../customize/spec.js';
import { notRoot, usageError } from '../errors.js';


/** IMAGE: a disk image path, else the name of an image in the catalog (ferry images) */
function resolveImage(image: string): string {
  if (/^[a-z+]+:\/\//.test(image) || existsSync(image)) return /^[a-z+]+:\/\//.test(image) ? image : resolve(image);
  const db = openDb();
  try {
    const row = db.prepare('SELECT source FROM images WHERE name = ?').get(image) as { source: string } | undefined;
    if (!row) throw usageError(`${image} is neither a disk image file nor an image in the catalog (ferry images list)`);
    return row.source;
  } finally { db.close(); }
}

async function submitAndFollow(spec: JobSpec, a: { json?: boolean; detach?: boolean }): Promise<void> {
  // the embedded store whatever FERRY_STORE says: the machine registry (and its agents) live in this host's ferry.db
  await withJobs({ store: `sqlite:${resolve(ferryHome())}` }, async ({ store, submit }) => {
    const job = await submit(spec);
    if (a.detach) { process.stdout.write(a.json ? JSON.stringify(job, null, 2) + '\n' : `${job.id}\n`); return; }
    if (!a.json) process.stdout.write(`${job.id}\n`);
    finishJob(await waitForJob(store, job.id, !a.json), !!a.json);
  });
}

interface DeployArgs { IMAGE: string; machine: string; disk?: string; 'dry-run': boolean; json: boolean; detach: boolean }

export const deployCommand: CommandModule<object, DeployArgs> = {
  command: 'deploy IMAGE',
  describe: "write an image onto a registered machine's disk through its agent (V2P), fitted to its hardware, then boot it",
  // the customization options every command that writes an image takes (a deploy always gets a new identity)
  builder: (y: Argv<object>) => customizeOptions(y)
    .positional('IMAGE', { type: 'string', demandOption: true, describe: 'a disk image, or the name of an image in the catalog' })
    .option('machine', { type: 'string', demandOption: true, describe: 'the machine (ferry machines list)' })
    .option('disk', { type: 'string', describe: "which disk: name, /dev path, serial, WWN or model (default: the machine's only disk)" })
    .option('dry-run', { type: 'boolean', default: false, describe: 'check that it fits and print the plan; write nothing' })
    .option('json', { type: 'boolean', default: false })
    .option('detach', { type: 'boolean', default: false, describe: "queue the job and print its id (see 'ferry jobs')" }) as unknown as Argv<DeployArgs>,
  handler: async a => {
    if (process.getuid?.() !== 0) throw notRoot();
    const spec: JobSpec = {
      kind: 'deploy', source: resolveImage(a.IMAGE), machine: a.machine, disk: a.disk,
      customize: customizationToSpec(await customizationFromArgs(a)),
    } as JobSpec;
    if (a['dry-run']) {
      const reg = MachineRegistry.open();
      try {
        const plan = await planDeploy(reg, spec, undefined, { preview: true });
        process.stdout.write(a.json ? JSON.stringify({ event: 'plan', ...plan }, null, 2) + '\n' : formatPlan(plan));
      } finally { reg.close(); }
      return;
    }
    await submitAndFollow(spec, a);
  },
};

function formatPlan(p: Awaited<ReturnType<typeof planDeploy>>): string {
  const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;
  const c = p.customization;
  return [
    `deploy ${p.image} onto machine ${p.machine} disk ${p.disk.path} (${gib(p.disk.sizeBytes)}${p.disk.model ? `, ${p.disk.model}` : ''})`,
    `  data to write: ${gib(p.usedBytes)}`,
    ...p.partitions.map(x => `  partition ${x.number}${x.fs ? ` ${x.fs}` : ''}: ${gib(x.sourceBytes)} -> ${gib(x.targetBytes)}`),
    `  re-fit: profile physical, drivers for ${p.modaliases.length} PCI devices${p.mac ? `, MAC bindings to ${p.mac}` : ''}`,
    `  identity: ${[c.hostname && `hostname ${c.hostname}`, ...(c.ip ?? []).map(i => `${i.iface} ${i.address}/${i.prefix}${i.gateway ? ` gw ${i.gateway}` : ''}`), ...(c.dhcp ?? []).map(d => `${d} dhcp`), 'a new machine-id'].filter(Boolean).join(', ')}`,
    ...(p.changes?.length ? ['  changes re-fit and customization would make:', ...p.changes.map(ch => `    ${ch.file}: ${ch.after.split('\n')[0]} (${ch.reason})`)] : []),
    'nothing was written (--dry-run)',
  ].join('\n') + '\n';
}

interface CaptureArgs { TARGET: string; machine: string; disk?: string; format?: string; size?: string; profile?: string; mac?: string; verify: boolean; force: boolean; json: boolean; detach: boolean }

export const captureCommand: CommandModule<object, CaptureArgs> = {
  command: 'capture TARGET',
  describe: "convert a registered machine's disk (P2V) through its agent, its inventory attached",
  builder: (y: Argv<object>) => y
    .positional('TARGET', { type: 'string', demandOption: true, describe: 'image to write' })
    .option('machine', { type: 'string', demandOption: true, describe: 'the machine (ferry machines list)' })
    .option('disk', { type: 'string', describe: "which disk (default: the machine's only disk)" })
    .option('format', { type: 'string', describe: 'qcow2|raw|vmdk|vhdx|vdi' })
    .option('size', { type: 'string', describe: 'target disk size, e.g. 8G' })
    .option('profile', { type: 'string', describe: 're-fit to this hardware profile (the VM destination)' })
    .option('mac', { type: 'string', describe: "with --profile: the new NIC's MAC" })
    .option('verify', { type: 'boolean', default: true })
    .option('force', { type: 'boolean', default: false })
    .option('json', { type: 'boolean', default: false })
    .option('detach', { type: 'boolean', default: false }) as unknown as Argv<CaptureArgs>,
  handler: async a => {
    if (process.getuid?.() !== 0) throw notRoot();
    await submitAndFollow({
      kind: 'capture', target: resolve(a.TARGET), machine: a.machine, disk: a.disk, format: a.format, size: a.size, profile: a.profile, mac: a.mac,
      options: { verify: a.verify, force: a.force },
    } as JobSpec, a);
  },
};
