// `ferry pxe serve`: network boot for the Ferry agent on one interface
// (src/pxe/dnsmasq.ts), in the foreground until SIGTERM/SIGINT, which stop
// dnsmasq and remove its private directory. Killed with SIGKILL, it leaves
// both in its run journal, and the next ferry command removes them.
import type { Argv } from 'yargs';
import { notRoot, usageError } from '../errors.js';
import { commandGroup } from './group.js';
import { Scope } from '../util/scope.js';
import { interfaceV4, parseRange, startPxe, type DhcpMode } from '../pxe/dnsmasq.js';

interface PxeArgs { interface: string; 'proxy-dhcp'?: boolean; 'dhcp-range'?: string; server?: string }

async function pxeServe(a: PxeArgs): Promise<void> {
  if (a['proxy-dhcp'] && a['dhcp-range']) throw usageError('give --proxy-dhcp or --dhcp-range, not both');
  if (process.getuid?.() !== 0) throw notRoot();
  const mode: DhcpMode = a['dhcp-range'] ? parseRange(a['dhcp-range'], interfaceV4(a.interface)) : { kind: 'proxy' };
  const pxe = await startPxe({ iface: a.interface, mode, server: a.server }, line => process.stderr.write(`${line}\n`));
  // journalled (jobs/run-journal.ts): after a SIGKILL of this command the next ferry command stops dnsmasq and removes its dir
  const held = new Scope();
  held.hold(`private dir ${pxe.dir}`, { kind: 'file', id: pxe.dir }, () => undefined);
  held.hold(`dnsmasq (pid ${pxe.pid})`, { kind: 'process', id: pxe.confFile, pid: pxe.pid, detail: 'dnsmasq' }, () => undefined);
  const what = mode.kind === 'range' ? `DHCP ${mode.start}-${mode.end}` : `proxy DHCP on ${pxe.v4.network}/${pxe.v4.netmask}`;
  process.stdout.write(`ferry pxe serve: ready on ${pxe.v4.name} (${pxe.v4.address}), ${what}, TFTP, iPXE boot file ${pxe.bootUrl}\n`);
  await new Promise<void>((resolve, reject) => {
    const stop = (sig: NodeJS.Signals) => {
      process.stderr.write(`ferry pxe serve: ${sig}: stopping\n`);
      pxe.stop().then(resolve, reject);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
    // dnsmasq ending by itself is a failure (its message in the error); the private dir goes with it
    pxe.exited.catch(e => { void pxe.stop().finally(() => reject(e)); });
  });
  await held.release(); // pxe.stop() did the work; this only closes the journal's records
  process.stderr.write('ferry pxe serve: stopped\n');
}

function builder(y: Argv): Argv {
  return y
    .command('serve', 'DHCP (a range or proxy) + TFTP on one interface: machines boot iPXE, then the Ferry agent from ferry serve', b => b
      .option('interface', { type: 'string', demandOption: true, describe: 'the provisioning network interface' })
      .option('proxy-dhcp', { type: 'boolean', describe: 'answer PXE clients only, beside the network\'s own DHCP server (the default)' })
      .option('dhcp-range', { type: 'string', describe: 'FIRST,LAST: hand out these addresses of the interface\'s subnet' })
      .option('server', { type: 'string', describe: "ferry serve's URL as the machines reach it (default http://<the interface's IPv4>:8470)" }),
    a => pxeServe(a as unknown as PxeArgs));
}

export const pxeCommand = commandGroup('pxe', 'network boot (PXE/iPXE) of physical machines into the Ferry agent', 'serve', builder);
