#!/usr/bin/env node
// The `ferry` command. Errors print as "ferry: CODE: what to do" and exit with
// the error's own status, so scripts can tell a missing source from a full disk.
// More libuv threads: verify hashes many files at once through FUSE, where each read waits on a daemon.
process.env.UV_THREADPOOL_SIZE ??= '16';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { convert } from '../convert/convert.js';
import { FerryError } from '../errors.js';
import { info } from '../info.js';
import { createProgress } from '../util/progress.js';
import { verifyCommand } from './verify.js';
import { formatProbe, probe } from './probe.js';
import { redact, setNetworkCredentials } from '../sources/secrets.js';
import { formatConvert, formatInfo } from './text.js';
import { inspect } from '../inspect/inspect.js';
import { formatInspect } from './inspect-text.js';
import { credentialOptions, SOURCE_FORMS } from './source-options.js';
import { imagesCommand } from './images.js';
import { profilesCommand, reconfigureCommand } from './refit.js';
import { driversCommand } from './drivers.js';
import { toolsCommand } from './tools.js';
import { registerCommand } from './register.js';
import { exportCommand } from './export.js';
import { serveCommand } from './serve.js';
import { workerCommand } from './worker.js';
import { workersCommand } from './workers.js';
import { storeCommand } from './store.js';
import { jobsCommand, submitDetached } from './jobs.js';
import { captureCommand, deployCommand } from './deploy.js';
import { agentCommand } from './agent.js';
import { machinesCommand } from './machines.js';
import { pxeCommand } from './pxe.js';
import { cleanupCommand } from './cleanup.js';
import { customizeCommand } from './customize.js';
import { customizationFromArgs, customizeOptions } from './customize-options.js';
import { customizationToSpec } from '../customize/spec.js';
import { diffCommand } from './diff.js';
import { deltaCommand } from './delta.js';
import { factoryCommand } from './factory.js';
import { openRunJournal, reclaimDeadRuns } from '../jobs/run-journal.js';
import { withResourceJournal } from '../util/scope.js';



async function main(): Promise<void> {
  // what killed runs left is undone before this one starts; `ferry cleanup` shows and does it on demand
  if (process.getuid?.() === 0 && process.argv[2] !== 'cleanup') {
    await reclaimDeadRuns(line => process.stderr.write(`${line}\n`)).catch(e => process.stderr.write(`ferry: cleaning up after a killed run failed: ${(e as Error).message}\n`));
  }
  const journal = await openRunJournal();
  try {
    await withResourceJournal(journal, parseCommandLine);
  } finally {
    journal.close();
  }
}

async function parseCommandLine(): Promise<void> {
  await yargs(hideBin(process.argv))
    .middleware(a => {
      const opt = (k: string) => a[k] as string | undefined;
      const given = ['chap-secret-file', 'mutual-chap-secret-file', 'tls-psk-file', 'tls-certs'].filter(k => opt(k) !== undefined);
      const urls = [a.SOURCE, a.TARGET, a.URL].filter(x => typeof x === 'string' && /^[a-z+]+:\/\//.test(x) && !x.startsWith('file:'));
      if (given.length && !urls.length) {
        throw new FerryError('USAGE', 2, `--${given[0]} is for network sources (iscsi://, nbd://, nbds://, nbd+unix://)`);
      }
      setNetworkCredentials({
        chapSecretFile: opt('chap-secret-file'), mutualChapSecretFile: opt('mutual-chap-secret-file'),
        tlsPskFile: opt('tls-psk-file'), tlsCerts: opt('tls-certs'),
      });
    })
    .scriptName('ferry')
    .strict()
    .command('convert SOURCE TARGET', 'rebuild a disk into a new sparse image (or copy its blocks)', y => customizeOptions(credentialOptions(y))
      .positional('SOURCE', { type: 'string', demandOption: true, describe: SOURCE_FORMS })
      .positional('TARGET', { type: 'string', demandOption: true, describe: 'image to write' })
      .option('format', { type: 'string', describe: 'qcow2|raw|vmdk|vhdx|vdi (default: from the extension, else qcow2)' })
      .option('size', { type: 'string', describe: 'target disk size, e.g. 8G (default: the source size)' })
      .option('mode', { choices: ['rebuild', 'clone', 'block'] as const, describe: 'rebuild: copy files; clone: copy the used blocks of ext2/3/4 and xfs (files elsewhere, and when shrunk below a file system); block: every block (default: clone, or rebuild with --firmware uefi)' })
      .option('force', { type: 'boolean', default: false, describe: 'replace an existing target' })
      .option('verify', { type: 'boolean', default: true, describe: 'compare with the source at the end (--no-verify skips)' })
      .option('force-ntfs-dirty', { type: 'boolean', default: false, describe: 'copy an NTFS volume Windows left dirty or hibernated as it is (refused otherwise)' })
      .option('json', { type: 'boolean', default: false, describe: 'NDJSON progress events, then a JSON result' })
      .option('progress', { type: 'boolean', default: true, describe: '--no-progress hides the bar' })
      .option('inventory', { type: 'string', describe: "a P2V agent's inventory.json, kept beside the target as TARGET.inventory.json" })
      .option('profile', { type: 'string', describe: "re-fit the guest to this hardware profile (see 'ferry profiles list')" })
      .option('mac', { type: 'string', describe: "with --profile: the new NIC's MAC; bindings to the old MAC move to it" })
      .option('firmware', { choices: ['bios', 'uefi'] as const, describe: 'uefi: a BIOS/MBR Linux guest becomes GPT with an EFI system partition and GRUB for UEFI (bios: keep the source\'s)' })
      .option('detach', { type: 'boolean', default: false, describe: "queue it as a job instead (see 'ferry jobs'); prints the job's id" }),
    async a => {
      const customize = await customizationFromArgs(a);
      if (a.detach) {
        const cred = (k: string) => a[k] as string | undefined;
        return submitDetached({
          source: a.SOURCE!, target: a.TARGET!, format: a.format, size: a.size, profile: a.profile, mac: a.mac, firmware: a.firmware, customize: customizationToSpec(customize),
          options: { mode: a.mode, verify: a.verify, force: a.force, inventory: a.inventory, forceNtfsDirty: a['force-ntfs-dirty'] },
          credentials: { chapSecretFile: cred('chap-secret-file'), mutualChapSecretFile: cred('mutual-chap-secret-file'), tlsPskFile: cred('tls-psk-file'), tlsCerts: cred('tls-certs') },
        }, a.json);
      }
      const progress = createProgress(a.json ? 'json' : a.progress ? 'bar' : 'none');
      const r = await convert({ source: a.SOURCE!, target: a.TARGET!, format: a.format, size: a.size, mode: a.mode, force: a.force, verify: a.verify, inventory: a.inventory, profile: a.profile, mac: a.mac, firmware: a.firmware, forceNtfsDirty: a['force-ntfs-dirty'], customize }, progress);
      if (a.json) process.stdout.write(JSON.stringify({ event: 'result', ...r }) + '\n');
      else process.stdout.write(formatConvert(r));
    })
    .command('verify SOURCE TARGET', 'prove a target equivalent to its source (exit 0) or list every difference', y => credentialOptions(y)
      .positional('SOURCE', { type: 'string', demandOption: true, describe: SOURCE_FORMS })
      .positional('TARGET', { type: 'string', demandOption: true })
      .option('json', { type: 'boolean', default: false }),
    async a => { process.exitCode = await verifyCommand(a.SOURCE!, a.TARGET!, a.json); })
    .command('info SOURCE', 'format, size, partition table, file systems and used bytes', y => credentialOptions(y)
      .positional('SOURCE', { type: 'string', demandOption: true, describe: SOURCE_FORMS })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const r = await info(a.SOURCE!);
      process.stdout.write(a.json ? JSON.stringify(r, null, 2) + '\n' : formatInfo(r));
    })
    .command('inspect SOURCE', 'what a disk holds without booting it: file systems, operating systems, kernels, drivers, boot, network, packages', y => credentialOptions(y)
      .positional('SOURCE', { type: 'string', demandOption: true, describe: SOURCE_FORMS })
      .option('json', { type: 'boolean', default: false, describe: 'one JSON document' }),
    async a => {
      const r = await inspect(a.SOURCE!);
      process.stdout.write(a.json ? JSON.stringify(r, null, 2) + '\n' : formatInspect(r));
    })
    .command('probe URL', 'what a server offers: NBD exports or iSCSI targets and LUNs, with sizes, partition tables and file systems', y => credentialOptions(y)
      .positional('URL', { type: 'string', demandOption: true, describe: 'nbd://HOST[:PORT][/EXPORT], nbds://…, nbd+unix:///?socket=PATH, iscsi://[USER@]HOST[:PORT][/IQN[/LUN]]' })
      .option('json', { type: 'boolean', default: false }),
    async a => {
      const r = await probe(a.URL!);
      process.stdout.write(a.json ? JSON.stringify(r, null, 2) + '\n' : formatProbe(r));
    })
    .command(imagesCommand)
    .command(reconfigureCommand)
    .command(customizeCommand)
    .command(profilesCommand)
    .command(driversCommand)
    .command(toolsCommand)
    .command(registerCommand)
    .command(exportCommand)
    .command(serveCommand)
    .command(workerCommand)
    .command(workersCommand)
    .command(storeCommand)
    .command(jobsCommand)
    .command(machinesCommand)
    .command(pxeCommand)
    .command(deployCommand)
    .command(captureCommand)
    .command(agentCommand)
    .command(cleanupCommand)
    .command(diffCommand)
    .command(deltaCommand)
    .command(factoryCommand)
    .demandCommand(1, 'name a command: convert, verify, info, inspect, probe, images, drivers, tools, profiles, reconfigure, customize, jobs, serve, worker, workers, store, machines, pxe, agent, deploy, capture, register, export, cleanup, diff, delta or factory')
    .fail((msg, err) => { throw err ?? new FerryError('USAGE', 2, msg); })
    .help()
    .parseAsync();
}

main().catch((e: unknown) => {
  if (e instanceof FerryError) {
    const json = process.argv.includes('--json');
    // secrets never reach a message; redact() is the last guard should a tool ever echo one
    if (json) process.stdout.write(redact(JSON.stringify({ event: 'error', code: e.code, message: e.message, ...e.details })) + '\n');
    process.stderr.write(redact(`ferry: ${e.code}: ${e.message}`) + '\n');
    process.exitCode = e.exitCode;
  } else {
    process.stderr.write(redact(`ferry: internal error: ${(e as Error).stack ?? String(e)}`) + '\n');
    process.exitCode = 70;
  }
});
