// Asking a machine's agent for work and waiting until it says it is done:
// export a disk over NBD with TLS-PSK (a key made here, sent to the agent
// over its authenticated channel and to qemu only as a file), stop
// exporting, boot from the disk. The registry carries the work both ways,
// so the job may run in another process than the API the agent talks to.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import { currentAbortSignal } from '../util/abort.js';
import type { MachineRegistry } from './registry.js';

export const NBD_PORT = 10809;

/** how long a job waits for an agent to take its work: FERRY_AGENT_WAIT_SECONDS, default 600 */
const agentWaitMs = () => Number(process.env.FERRY_AGENT_WAIT_SECONDS ?? 600) * 1000;

export const agentNotAnswering = (machine: string, what: string, seconds: number) =>
  new FerryError('AGENT_TIMEOUT', 9, `machine ${machine}: its agent did not ${what} within ${seconds} s; boot the machine from the network (PXE) so the Ferry agent runs, then retry the job`, { machine });

export interface DiskExport {
  ticket: string;
  /** nbds://ADDRESS:PORT/NAME */
  url: string;
  /** a 0600 file `ferry:<hex>` in the job's work dir, for qemu */
  pskFile: string;
}

/** Hand the agent an export of `disk`; resolves once nbdkit answers on the machine. */
export async function requestExport(reg: MachineRegistry, machineId: string, disk: string, writable: boolean, work: string): Promise<DiskExport> {
  const ticket = `t-${randomBytes(6).toString('hex')}`;
  const pskKey = randomBytes(32).toString('hex');
  const pskFile = join(work, `${ticket}.psk`);
  await writeFile(pskFile, `ferry:${pskKey}\n`, { mode: 0o600 });
  const exportName = disk.replace(/^\/dev\//, '');
  reg.setWork(machineId, { action: 'export', ticket, disk, writable, port: NBD_PORT, exportName, pskIdentity: 'ferry', pskKey });
  const status = await reg.waitForStatus(machineId, ticket, ['exporting', 'failed'], agentWaitMs(), currentAbortSignal());
  if (!status) throw agentNotAnswering(machineId, `export ${disk}`, agentWaitMs() / 1000);
  if (status.state === 'failed') throw new FerryError('AGENT_FAILED', 7, `machine ${machineId}: its agent could not export ${disk}: ${status.message ?? 'no reason given'}`, { machine: machineId, disk });
  const address = reg.get(machineId)?.address;
  if (!address) throw new FerryError('AGENT_FAILED', 7, `machine ${machineId}: its agent's address is not known`, { machine: machineId });
  const host = address.includes(':') ? `[${address}]` : address;
  return { ticket, url: `nbds://${host}:${NBD_PORT}/${exportName}`, pskFile };
}

/** Stop the export (the agent syncs the disk first); a machine that no longer answers is not waited for long. */
export async function stopExport(reg: MachineRegistry, machineId: string, ex: DiskExport): Promise<void> {
  reg.setWork(machineId, { action: 'unexport', ticket: ex.ticket });
  const status = await reg.waitForStatus(machineId, ex.ticket, ['unexported', 'failed'], 60_000, currentAbortSignal());
  if (!status) throw agentNotAnswering(machineId, 'stop exporting its disk', 60);
  if (status.state === 'failed') throw new FerryError('AGENT_FAILED', 7, `machine ${machineId}: its agent could not stop the export: ${status.message ?? 'no reason given'}`, { machine: machineId });
}

/** From now on the machine boots from its disk (the PXE script says sanboot); the agent reboots it. */
export async function bootFromDisk(reg: MachineRegistry, machineId: string): Promise<void> {
  reg.setBootTarget(machineId, 'disk');
  reg.setWork(machineId, { action: 'boot-disk' });
  const status = await reg.waitForStatus(machineId, undefined, ['booting-disk'], 120_000, currentAbortSignal());
  if (!status) throw agentNotAnswering(machineId, 'reboot from its disk', 120);
  reg.setWork(machineId, null);
}
