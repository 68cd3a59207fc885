// `ferry serve`: the job service in one process, the runner (queue, steps,
// resume after a crash) and the HTTP API in front of it. It listens on
// loopback unless told otherwise, and every request needs the token that the
// first start writes to $FERRY_HOME/api-token (the machine routes take the
// agents' tokens instead: src/api/machines.ts). SIGTERM/SIGINT stop it
// gracefully: no new requests, open event streams end, then the runner stops
// its jobs (they resume at the next start) and releases what they hold.
import type { Argv, CommandModule } from 'yargs';
import { readFile } from 'node:fs/promises';
import { buildServer } from '../api/server.js';
import { loadOrCreateToken } from '../api/token.js';
import { join } from 'node:path';
import { ferryHome } from '../catalog/db.js';
import { MachineRegistry } from '../machines/registry.js';
import { listenFailed, notRoot, usageError } from '../errors.js';
import { JobRunner } from '../jobs/runner.js';
import { openJobStore } from '../jobs/sqlite-store.js';
import { describeStore, type StoreLocation } from '../store/connection.js';
import { openFleetStore } from '../store/kysely-store.js';
import { StoreFrontend } from '../store/frontend.js';
import { FleetWorker } from '../store/worker.js';
import { locationOf, storeOptions, type StoreArgs } from './store-options.js';
import { checkWorkerArgs, runUntilSignal } from './worker.js';

export interface ListenAddress { host: string; port: number; loopback: boolean }

/** HOST:PORT or [IPV6]:PORT; port 0 picks a free one. */
export function parseListen(s: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw usageError(`--listen ${s}: write it as HOST:PORT, e.g. 127.0.0.1:8470 or [::1]:8470`);
  const host = m[1] ?? m[2];
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  return { host, port, loopback };
}

const LISTEN_WHY: Record<string, string> = {
  EADDRINUSE: 'the port is in use',
  EADDRNOTAVAIL: 'this host has no such address',
  EACCES: 'permission denied',
  ENOTFOUND: 'the host name does not resolve',
};

interface ServeArgs extends StoreArgs { worker: boolean; name?: string; tag?: string[]; 'heartbeat-timeout': number; listen: string; concurrency: number; 'per-host': number; 'log-level': string; 'agent-dir'?: string; 'public-url'?: string; 'tls-cert'?: string; 'tls-key'?: string }

/** the PEM files of --tls-cert/--tls-key, both or neither */
async function readTls(a: ServeArgs): Promise<{ cert: Buffer; key: Buffer } | undefined> {
  const cert = a['tls-cert'], key = a['tls-key'];
  if (cert === undefined && key === undefined) return undefined;
  if (!cert || !key) throw usageError('--tls-cert and --tls-key go together: give the PEM certificate and its private key');
  const read = async (path: string, flag: string) => {
    try { return await readFile(path); } catch (e) { throw usageError(`${flag} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); }
  };
  const pair = { cert: await read(cert, '--tls-cert'), key: await read(key, '--tls-key') };
  if (!/-----BEGIN [A-Z ]*CERTIFICATE-----/.test(pair.cert.toString('latin1'))) throw usageError(`--tls-cert ${cert}: not a PEM certificate`);
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pair.key.toString('latin1'))) throw usageError(`--tls-key ${key}: not a PEM private key`);
  return pair;
}

/** listen, with the reason in an operator's words when it fails */
async function listenOn(app: ReturnType<typeof buildServer>, listen: ListenAddress, asGiven: string): Promise<void> {
  try {
    await app.listen({ host: listen.host, port: listen.port });
  } catch (e) {
    if (/key values mismatch|bad decrypt|PEM/i.test((e as Error).message)) throw usageError(`--tls-cert/--tls-key: ${(e as Error).message}`);
    throw listenFailed(asGiven, LISTEN_WHY[(e as NodeJS.ErrnoException).code ?? ''] ?? (e as Error).message);
  }
}

async function serve(a: ServeArgs): Promise<void> {
  const listen = parseListen(a.listen);
  for (const k of ['concurrency', 'per-host'] as const) {
    if (!Number.isInteger(a[k]) || a[k] < 1) throw usageError(`--${k} ${a[k]}: give a whole number of jobs, 1 or more`);
  }
  const publicUrl = a['public-url']?.replace(/\/+$/, '');
  if (publicUrl !== undefined && !/^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$|^https?:\/\/\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(publicUrl)) {
    throw usageError(`--public-url ${publicUrl}: write it as http://HOST[:PORT], the address agents reach this server at`);
  }
  const tls = await readTls(a);
  const loc = locationOf(a);
  if (loc.dialect === 'postgres') return serveFleet(a, listen, loc, tls, publicUrl);
  if (!a.worker) throw usageError('--no-worker: the embedded SQLite store has no other worker to run the jobs; give --store postgres://… for a fleet');
  if (loc.home !== ferryHome()) process.env.FERRY_HOME = loc.home;
  if (process.getuid?.() !== 0) throw notRoot();
  const home = ferryHome();
  const { token, path: tokenPath } = await loadOrCreateToken(home);
  const { token: enrolToken } = await loadOrCreateToken(home, 'enrol');
  const store = openJobStore(home);
  const registry = new MachineRegistry(home);
  const machines = { registry, enrolToken, agentDir: a['agent-dir'] ?? join(home, 'agent'), publicUrl };
  const runner = new JobRunner(store, { concurrency: a.concurrency, perHostConcurrency: a['per-host'] });
  let app: ReturnType<typeof buildServer> | undefined;
  try {
    await runner.start();
    app = buildServer({ runner, store, token, machines, tls, logger: a['log-level'] === 'silent' ? false : { level: a['log-level'], stream: process.stderr } });
    await listenOn(app, listen, a.listen);
  } catch (e) {
    await app?.close().catch(() => {});
    await runner.stop();
    store.close();
    registry.close();
    throw e;
  }
  const { port } = app.server.address() as { port: number };
  const hostInUrl = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  if (!listen.loopback) {
    process.stderr.write(`ferry serve: listening on ${listen.host}, not loopback: anyone who reaches it with the token can submit jobs${tls ? '' : ', and HTTP is not encrypted (give --tls-cert/--tls-key)'}\n`);
  }
  process.stdout.write(`ferry serve: listening on ${tls ? 'https' : 'http'}://${hostInUrl}:${port} (token in ${tokenPath}); the console is at /\n`);

  await new Promise<void>(resolve => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        process.stderr.write(`ferry serve: still stopping (${signal}): the jobs are releasing what they hold\n`);
        return;
      }
      stopping = true;
      process.stderr.write(`ferry serve: ${signal}: stopping\n`);
      void (async () => {
        try {
          await app!.close();
          await runner.stop();
        } finally {
          store.close();
          registry.close();
          resolve();
        }
      })();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  process.stderr.write('ferry serve: stopped\n');
}

/**
 * The API in front of a shared store: jobs go in and out through the store, events come from
 * it (StoreFrontend), and unless --no-worker this process is one of the fleet's workers too.
 */
async function serveFleet(a: ServeArgs, listen: ListenAddress, loc: Extract<StoreLocation, { dialect: 'postgres' }>, tls: Awaited<ReturnType<typeof readTls>>, publicUrl?: string): Promise<void> {
  const w = a.worker ? checkWorkerArgs({ ...a, concurrency: a.concurrency, 'per-host': a['per-host'] }) : undefined;
  if (process.getuid?.() !== 0) throw notRoot();
  const home = ferryHome();
  const { token, path: tokenPath } = await loadOrCreateToken(home);
  const { token: enrolToken } = await loadOrCreateToken(home, 'enrol');
  const store = await openFleetStore(loc);
  // the machine registry stays in this host's ferry.db: agents talk to the API process they enrolled with
  const registry = new MachineRegistry(home);
  const frontend = new StoreFrontend(store);
  const worker = w && new FleetWorker(store, { name: w.name, tags: w.tags, concurrency: a.concurrency, perHost: a['per-host'], staleAfterMs: a['heartbeat-timeout'] * 1000 });
  let app: ReturnType<typeof buildServer> | undefined;
  const shutdown = async () => {
    await app?.close().catch(() => undefined);
    frontend.stop();
    try { await worker?.stop(); } finally { await store.close(); registry.close(); }
  };
  try {
    frontend.start();
    await worker?.start();
    app = buildServer({ runner: frontend, store, token, machines: { registry, enrolToken, agentDir: a['agent-dir'] ?? join(home, 'agent'), publicUrl }, tls, logger: a['log-level'] === 'silent' ? false : { level: a['log-level'], stream: process.stderr } });
    await listenOn(app, listen, a.listen);
  } catch (e) {
    await shutdown();
    throw e;
  }
  const { port } = app.server.address() as { port: number };
  const hostInUrl = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  process.stdout.write(`ferry serve: listening on ${tls ? 'https' : 'http'}://${hostInUrl}:${port} (token in ${tokenPath}); the console is at /; store ${describeStore(loc)}${worker ? `; worker ${w!.name}` : '; no worker here'}\n`);
  await runUntilSignal(shutdown, 'ferry serve');
  process.stderr.write('ferry serve: stopped\n');
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'the job service: HTTP API (token in $FERRY_HOME/api-token) and the job runner',
  builder: (y: Argv<object>) => storeOptions(y)
    .option('worker', { type: 'boolean', default: true, describe: 'run jobs in this process too (--no-worker: only the API, for a fleet of ferry worker hosts)' })
    .option('name', { type: 'string', describe: "with a shared store: this process's worker name (default: the host name)" })
    .option('tag', { type: 'string', array: true, describe: 'with a shared store: a tag jobs may require (spec requires: [TAG])' })
    .option('heartbeat-timeout', { type: 'number', default: 15, describe: 'with a shared store: seconds of silence after which a worker\'s jobs are taken over' })
    .option('listen', { type: 'string', default: '127.0.0.1:8470', describe: 'HOST:PORT; anything but loopback must be asked for, e.g. 0.0.0.0:8470' })
    .option('concurrency', { type: 'number', default: 2, describe: 'jobs running at once' })
    .option('per-host', { type: 'number', default: 1, describe: 'jobs reading from one source host at once' })
    .option('agent-dir', { type: 'string', describe: 'where GET /boot/vmlinuz and /boot/initrd.img come from (default: $FERRY_HOME/agent)' })
    .option('public-url', { type: 'string', describe: 'the URL agents reach this server at, for the iPXE script (default: the URL each request came in on)' })
    .option('tls-cert', { type: 'string', describe: 'serve HTTPS with this PEM certificate (chain); with --tls-key' })
    .option('tls-key', { type: 'string', describe: 'the PEM private key of --tls-cert' })
    .option('log-level', { choices: ['fatal', 'error', 'warn', 'info', 'debug', 'silent'], default: 'info', describe: 'request log on stderr (never holds the token)' }) as unknown as Argv<ServeArgs>,
  handler: serve,
};
