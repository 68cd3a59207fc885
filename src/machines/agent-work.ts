// Asking a machine's agent for work and waiting until it says it is done:
// export a disk over NBD with TLS-PSK (a key made here, sent to the agent
// over its authenticated channel and to qemu only as a 0600 file), stop
// exporting, boot from the disk. The registry carries the work both ways,
// so the job may run in another process than the API the agent talks to.
import { randomBytes } from 'node:crypto';
import { FerryError } from '../errors.js';
import { newTicket, type MachineRegistry } from './registry.js';

export const NBD_PORT = 10809;

/** how long a job waits for an agent to take its work: FERRY_AGENT_WAIT_SECONDS, default 600 */
const agentWaitMs = () => Number(process.env.FERRY_AGENT_WAIT_SECONDS ?? 600) * 1000;

export interface DiskExport {
  ticket: string;
  /** nbds://ADDRESS:PORT/NAME */
  url: string;
  /** `ferry:<hex>` (0600), for qemu's --tls-psk-file */
  pskFile: string;
}

/** Hand the agent an export of `disk`; resolves once nbdkit answers on the machine. */
export async function requestExport(reg: MachineRegistry, machineId: string, disk: string, writable: boolean): Promise<DiskExport> {
  const ticket = newTicket();
  const exportName = disk.replace(/^\/dev\//, '');
  const { pskFile } = reg.setWork(machineId, {
    action: 'export', ticket, disk, writable, port: NBD_PORT, exportName, pskIdentity: 'ferry', pskKey: randomBytes(32).toString('hex'),
  });
  await reg.waitForStatus(machineId, ticket, ['exporting'], agentWaitMs());
  const address = reg.mustGet(machineId).peer;
  if (!address || !pskFile) throw new FerryError('AGENT_FAILED', 7, `machine ${machineId}: its agent's address is not known`, { machine: machineId });
  const host = address.includes(':') ? `[${address}]` : address;
  return { ticket, url: `nbds://${host}:${NBD_PORT}/${exportName}`, pskFile };
}

/** Stop the export (the agent syncs the disk first). */
export async function stopExport(reg: MachineRegistry, machineId: string, ex: DiskExport): Promise<void> {
  reg.setWork(machineId, { action: 'unexport', ticket: ex.ticket });
  await reg.waitForStatus(machineId, ex.ticket, ['unexported'], 60_000);
}

/** From now on the machine boots from its disk (the PXE script says sanboot); the agent reboots it. */
export async function bootFromDisk(reg: MachineRegistry, machineId: string): Promise<void> {
  reg.setBootTarget(machineId, 'disk');
  reg.setWork(machineId, { action: 'boot-disk' });
  await reg.waitForStatus(machineId, null, ['booting-disk'], 120_000);
}

/** Wait until the deployed system redeemed its boot token; resolves to the address it spoke from, undefined on timeout. */
export async function waitForFirstBoot(reg: MachineRegistry, machineId: string, timeoutMs: number, signal?: AbortSignal): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    signal?.throwIfAborted();
    const m = reg.mustGet(machineId);
    if (!m.bootTokenPending) return m.peer ?? undefined;
    await new Promise(r => setTimeout(r, 1000));
  }
  return undefined;
}
