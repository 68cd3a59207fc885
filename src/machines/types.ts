// The machine registry's records and the agent's work, as src/agent/README.md
// describes them on the wire.

/**
 * discovered: registered, its agent has not asked for work yet;
 * ready: its agent asks for work (a polling agent is ready unless busy);
 * capturing | deploying: a job holds it (begin … finish);
 * deployed | failed: how the last job ended (until its agent polls again).
 */
export type MachineState = 'discovered' | 'ready' | 'capturing' | 'deploying' | 'deployed' | 'failed';
export const MACHINE_STATES: readonly MachineState[] = ['discovered', 'ready', 'capturing', 'deploying', 'deployed', 'failed'];
/** the states a job may take a machine from */
export const FREE_STATES: readonly MachineState[] = ['ready', 'deployed', 'failed'];

/** what the next PXE boot of the machine gets from GET /boot/ipxe */
export type BootTarget = 'agent' | 'disk';

export interface ExportWork {
  action: 'export'; ticket: string; disk: string; writable: boolean; port: number;
  exportName: string; pskIdentity: string; pskKey: string;
}
export type AgentWork = ExportWork | { action: 'unexport'; ticket: string } | { action: 'boot-disk' };
/** what the agent is handed when there is nothing to do */
export const WAIT = { action: 'wait' } as const;

/** the work as the registry keeps it: an export's key only as the path of its 0600 file */
export type StoredWork = Exclude<AgentWork, ExportWork> | (Omit<ExportWork, 'pskKey'> & { pskFile: string });

export type AgentStatusState = 'exporting' | 'unexported' | 'failed' | 'booting-disk';
export type AgentStatus =
  | { ticket: string; state: 'exporting' | 'unexported' | 'failed'; message?: string }
  | { state: 'booting-disk'; message?: string };

/** the agent's last status for one ticket (null: booting-disk, which has none) */
export interface StatusRecord { ticket: string | null; state: AgentStatusState; message?: string; at: string }

export interface DiskSummary { path: string | null; sizeBytes: number | null; model: string | null; serial: string | null }

export interface MachineRecord {
  id: string;
  state: MachineState;
  smbiosUuid: string | null;
  /** the SMBIOS system serial number */
  serial: string | null;
  macs: string[];
  disks: DiskSummary[];
  bootTarget: BootTarget;
  /** the address the agent (or the deployed system) last spoke from */
  peer: string | null;
  /** the URL its agent reached the server at: where the deployed system reports its first boot */
  serverUrl: string | null;
  /** the job holding it (capturing, deploying) and its image; the image stays after a deploy */
  jobId: string | null;
  image: string | null;
  work: StoredWork | null;
  /** a boot token was issued and the deployed system has not reported its first boot with it yet */
  bootTokenPending: boolean;
  createdAt: string;
  updatedAt: string;
  lastSeenAt: string | null;
  inventory: unknown;
}

export interface HistoryEntry {
  at: string; event: string; state: MachineState;
  image: string | null; jobId: string | null; detail: string | null;
}
