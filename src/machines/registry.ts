// The machine registry: the physical machines that booted the Ferry agent,
// in Ferry's own SQLite database (migration 4). `ferry serve` (agent routes),
// `ferry machines` and the capture/deploy jobs each open it; every change is
// one short transaction, and waits poll the database, because a job may run
// in another process than the API that hears the agent.
//
// Secrets: the agent token and the boot token are kept only as SHA-256
// hashes. An export's PSK key is never in the database: it lives in a 0600
// file $FERRY_HOME/machines/<id>/psk-<ticket> ("identity:hexkey", the format
// of --tls-psk-file, so the job hands that file to qemu as it is) and the
// stored work names the file.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ferryHome, openDb, type Db } from '../catalog/db.js';
import { inventoryInvalid, inventoryProblem } from '../convert/inventory.js';
import { agentFailed, agentStatusInvalid, agentTimeout, machineBusy, machineNotFound, workInvalid } from '../errors.js';
import { currentAbortSignal } from '../util/abort.js';
import {
  FREE_STATES, type AgentStatus, type AgentWork, type BootTarget, type DiskSummary, type HistoryEntry,
  type MachineRecord, type MachineState, type StatusRecord, type StoredWork,
} from './types.js';

interface MachineRow {
  id: string; smbios_uuid: string | null; serial: string | null; state: MachineState; inventory: string;
  created_at: string; updated_at: string; last_seen_at: string | null; peer: string | null; server_url: string | null;
  agent_token_hash: string | null; boot_token_hash: string | null; boot_target: BootTarget;
  job_id: string | null; image: string | null; work: string | null;
}

const now = () => new Date().toISOString();
const sha256 = (s: string) => createHash('sha256').update(s).digest();
const newToken = () => randomBytes(32).toString('hex');
/** a fresh ticket for a piece of export/unexport work */
export const newTicket = () => `t-${randomBytes(6).toString('hex')}`;

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TICKET_RE = /^[A-Za-z0-9._-]{1,80}$/;
const STATUS_POLL_MS = 250;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const strOrNull = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim() : null);

/** constant time whatever the inputs: a missing hash compares against a dummy */
function hashMatches(storedHex: string | null, token: string): boolean {
  const stored = storedHex ? Buffer.from(storedHex, 'hex') : Buffer.alloc(32);
  const ok = timingSafeEqual(sha256(token), stored.length === 32 ? stored : Buffer.alloc(32));
  return ok && storedHex !== null;
}

/** A MAC as the registry keys it (lower case, colons), or undefined. */
export function normalMac(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const m = v.trim().toLowerCase().replace(/-/g, ':');
  return MAC_RE.test(m) && m !== '00:00:00:00:00:00' && m !== 'ff:ff:ff:ff:ff:ff' ? m : undefined;
}

/** An SMBIOS UUID as the registry keys it; placeholders (all 0 or all F) name no machine. */
export function normalUuid(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const u = v.trim().toLowerCase();
  return UUID_RE.test(u) && !/^[0-]+$/.test(u) && !/^[f-]+$/.test(u) ? u : undefined;
}

interface Identity { uuid: string | null; serial: string | null; macs: string[]; inventory: string }

/** Check what an agent sent; its identity (UUID, MACs of real NICs), or INVENTORY_INVALID. */
export function checkInventory(doc: unknown, where: string): Identity {
  const bad = (why: string) => inventoryInvalid(where, why);
  const problem = inventoryProblem(doc);
  if (problem) throw bad(problem);
  const d = doc as Record<string, unknown>;
  if (!isObject(d.system)) throw bad("has no 'system' object");
  if (!Array.isArray(d.nics)) throw bad("has no 'nics' array");
  if (!Array.isArray(d.disks)) throw bad("has no 'disks' array");
  if (!d.disks.every(isObject)) throw bad("has a 'disks' entry that is not an object");
  const macs: string[] = [];
  for (const [i, n] of d.nics.entries()) {
    if (!isObject(n)) throw bad(`has nics[${i}] that is not an object`);
    if (n.mac === null || n.mac === undefined) continue;
    const mac = normalMac(n.mac);
    if (!mac && !(typeof n.mac === 'string' && MAC_RE.test(n.mac.toLowerCase()))) throw bad(`has nics[${i}].mac ${JSON.stringify(n.mac)}, not a MAC address`);
    // virtual interfaces (bridges, ifb, veth) get new random MACs at every boot: they name no machine
    if (mac && n.virtual !== true) macs.push(mac);
  }
  const rawUuid = d.system.uuid;
  if (rawUuid !== null && rawUuid !== undefined && (typeof rawUuid !== 'string' || !UUID_RE.test(rawUuid.trim().toLowerCase()))) {
    throw bad(`has system.uuid ${JSON.stringify(rawUuid)}, not a UUID`);
  }
  const uuid = normalUuid(rawUuid) ?? null;
  if (!uuid && !macs.length) throw bad('names neither an SMBIOS UUID (system.uuid) nor the MAC of a physical NIC: the machine could not be known again');
  return { uuid, serial: strOrNull(d.system.serial), macs: [...new Set(macs)], inventory: JSON.stringify(doc) };
}

function disksOf(inventory: unknown): DiskSummary[] {
  const disks = isObject(inventory) && Array.isArray(inventory.disks) ? inventory.disks : [];
  return disks.filter(isObject).map(d => ({
    path: strOrNull(d.path), sizeBytes: typeof d.sizeBytes === 'number' ? d.sizeBytes : null,
    model: strOrNull(d.model), serial: strOrNull(d.serial),
  }));
}

/** the work is what src/agent/README.md describes (a job may build it from user input) */
function checkWork(work: AgentWork): void {
  const w = work as unknown as Record<string, unknown>;
  if (!isObject(w)) throw workInvalid('is not an object');
  if (w.action === 'boot-disk') return;
  if (w.action !== 'export' && w.action !== 'unexport') throw workInvalid(`has the unknown action ${JSON.stringify(w.action)}`);
  if (typeof w.ticket !== 'string' || !TICKET_RE.test(w.ticket)) throw workInvalid('needs a ticket of letters, digits, dots, dashes and underscores');
  if (w.action === 'unexport') return;
  if (typeof w.disk !== 'string' || !w.disk.startsWith('/dev/')) throw workInvalid(`disk ${JSON.stringify(w.disk)} is not a /dev path`);
  if (typeof w.writable !== 'boolean') throw workInvalid('needs writable: true or false');
  if (typeof w.port !== 'number' || !Number.isInteger(w.port) || w.port < 1 || w.port > 65535) throw workInvalid(`port ${w.port} is not a TCP port`);
  if (typeof w.exportName !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(w.exportName)) throw workInvalid('needs an exportName of letters, digits, dots, dashes and underscores');
  if (typeof w.pskIdentity !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(w.pskIdentity)) throw workInvalid('needs a pskIdentity of letters, digits, dots, dashes and underscores');
  if (typeof w.pskKey !== 'string' || !/^[0-9a-f]{32,256}$/i.test(w.pskKey)) throw workInvalid('needs a pskKey of hex digits');
}

function checkStatus(s: unknown): { ticket: string; state: StatusRecord['state']; message: string | null } {
  if (!isObject(s)) throw agentStatusInvalid('is not an object');
  const message = s.message === undefined || s.message === null ? null : typeof s.message === 'string' ? s.message.slice(0, 2000) : undefined;
  if (message === undefined) throw agentStatusInvalid('has a message that is not text');
  if (s.state === 'booting-disk') return { ticket: '', state: 'booting-disk', message };
  if (s.state !== 'exporting' && s.state !== 'unexported' && s.state !== 'failed') throw agentStatusInvalid(`has the unknown state ${JSON.stringify(s.state)}`);
  if (typeof s.ticket !== 'string' || !TICKET_RE.test(s.ticket)) throw agentStatusInvalid('needs the ticket of the work it reports on');
  return { ticket: s.ticket, state: s.state, message };
}

/** the status that finishes a piece of work: it is then no longer handed out */
function finishes(work: StoredWork, ticket: string, state: StatusRecord['state']): boolean {
  if (work.action === 'boot-disk') return state === 'booting-disk';
  return work.ticket === ticket && (state === 'failed' || state === (work.action === 'export' ? 'exporting' : 'unexported'));
}

export interface Registration { machine: MachineRecord; agentToken: string; created: boolean }

export class MachineRegistry {
  private readonly db: Db;
  private readonly home: string;
  private readonly ownsDb: boolean;

  /** on an open database (its directory is FERRY_HOME) or on a FERRY_HOME */
  constructor(dbOrHome: Db | string) {
    this.ownsDb = typeof dbOrHome === 'string';
    this.db = typeof dbOrHome === 'string' ? openDb(dbOrHome) : dbOrHome;
    this.home = typeof dbOrHome === 'string' ? dbOrHome : dirname(dbOrHome.name);
  }

  /** the registry of $FERRY_HOME (or `home`) */
  static open(home = ferryHome()): MachineRegistry { return new MachineRegistry(home); }

  close(): void { if (this.ownsDb) this.db.close(); }

  private dirOf(id: string): string { return join(this.home, 'machines', id); }

  private row(id: string): MachineRow | undefined {
    return this.db.prepare('SELECT * FROM machines WHERE id = ?').get(id) as MachineRow | undefined;
  }

  private mustRow(id: string): MachineRow {
    const r = this.row(id);
    if (!r) throw machineNotFound(id);
    return r;
  }

  private record(r: MachineRow): MachineRecord {
    const macs = (this.db.prepare('SELECT mac FROM machine_macs WHERE machine_id = ? ORDER BY mac').all(r.id) as { mac: string }[]).map(m => m.mac);
    const inventory = JSON.parse(r.inventory) as unknown;
    return {
      id: r.id, state: r.state, smbiosUuid: r.smbios_uuid, serial: r.serial, macs, disks: disksOf(inventory),
      bootTarget: r.boot_target, peer: r.peer, serverUrl: r.server_url, jobId: r.job_id, image: r.image,
      work: r.work ? JSON.parse(r.work) as StoredWork : null, bootTokenPending: r.boot_token_hash !== null,
      createdAt: r.created_at, updatedAt: r.updated_at, lastSeenAt: r.last_seen_at, inventory,
    };
  }

  private log(id: string, event: string, detail: string | null = null): void {
    const r = this.mustRow(id);
    this.db.prepare('INSERT INTO machine_history (machine_id, at, event, state, image, job_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(id, now(), event, r.state, r.image, r.job_id, detail);
  }

  private set(id: string, cols: Partial<Record<keyof MachineRow, unknown>>): void {
    const keys = Object.keys(cols);
    const changed = this.db.prepare(`UPDATE machines SET ${keys.map(k => `${k} = ?`).join(', ')}, updated_at = ? WHERE id = ?`)
      .run(...keys.map(k => cols[k as keyof MachineRow]), now(), id).changes;
    if (!changed) throw machineNotFound(id);
  }

  /**
   * An agent registers (again): the machine is known by its SMBIOS UUID, else
   * by any MAC of a physical NIC; a known one is updated (MACs merged), never
   * duplicated. A new machine is `discovered`; a known one keeps its state.
   * Every registration issues a new agent token (the old one stops working).
   */
  register(inventory: unknown, peer: string, serverUrl: string | null = null): Registration {
    const ident = checkInventory(inventory, `sent by ${peer}`);
    const agentToken = newToken();
    const hash = sha256(agentToken).toString('hex');
    return this.db.transaction((): Registration => {
      const t = now();
      let id = ident.uuid
        ? (this.db.prepare('SELECT id FROM machines WHERE smbios_uuid = ?').get(ident.uuid) as { id: string } | undefined)?.id
        : undefined;
      if (!id && ident.macs.length) {
        // a machine known by MAC only: not one whose firmware named another UUID (that NIC moved)
        const byMac = this.db.prepare(`SELECT m.id, m.smbios_uuid FROM machine_macs x JOIN machines m ON m.id = x.machine_id
          WHERE x.mac IN (${ident.macs.map(() => '?').join(',')}) ORDER BY m.created_at`).all(...ident.macs) as { id: string; smbios_uuid: string | null }[];
        id = byMac.find(m => !ident.uuid || m.smbios_uuid === null)?.id;
      }
      const created = !id;
      if (!id) {
        id = `m-${randomBytes(4).toString('hex')}`;
        this.db.prepare(`INSERT INTO machines (id, smbios_uuid, serial, state, inventory, created_at, updated_at, peer, agent_token_hash, server_url)
          VALUES (?, ?, ?, 'discovered', ?, ?, ?, ?, ?, ?)`).run(id, ident.uuid, ident.serial, ident.inventory, t, t, peer, hash, serverUrl);
      } else {
        this.db.prepare(`UPDATE machines SET smbios_uuid = COALESCE(?, smbios_uuid), serial = ?, inventory = ?, updated_at = ?, peer = ?, agent_token_hash = ?,
          server_url = COALESCE(?, server_url) WHERE id = ?`).run(ident.uuid, ident.serial, ident.inventory, t, peer, hash, serverUrl, id);
      }
      // a MAC names one machine: one seen elsewhere before moves here
      const mac = this.db.prepare('INSERT INTO machine_macs (mac, machine_id) VALUES (?, ?) ON CONFLICT(mac) DO UPDATE SET machine_id = excluded.machine_id');
      for (const m of ident.macs) mac.run(m, id);
      this.log(id, created ? 'registered' : 'registered-again', `from ${peer}`);
      return { machine: this.record(this.mustRow(id)), agentToken, created };
    }).immediate();
  }

  /** Is `token` the agent token of machine `id`'s last registration? (constant time) */
  authenticateAgent(id: string, token: string): boolean {
    return hashMatches(this.row(id)?.agent_token_hash ?? null, token);
  }

  get(id: string): MachineRecord | undefined {
    const r = this.row(id);
    return r && this.record(r);
  }

  mustGet(id: string): MachineRecord { return this.record(this.mustRow(id)); }

  /** oldest first */
  list(): MachineRecord[] {
    return (this.db.prepare('SELECT * FROM machines ORDER BY created_at, id').all() as MachineRow[]).map(r => this.record(r));
  }

  /** the machine a PXE boot asks for: by SMBIOS UUID, else by MAC */
  lookup(q: { uuid?: string; mac?: string }): MachineRecord | undefined {
    const uuid = normalUuid(q.uuid), mac = normalMac(q.mac);
    const r = (uuid && this.db.prepare('SELECT * FROM machines WHERE smbios_uuid = ?').get(uuid))
      || (mac && this.db.prepare('SELECT m.* FROM machine_macs x JOIN machines m ON m.id = x.machine_id WHERE x.mac = ?').get(mac));
    return r ? this.record(r as MachineRow) : undefined;
  }

  /** Forget a machine (its record, MACs, history and PSK files); refused while a job holds it. */
  forget(id: string): void {
    this.db.transaction(() => {
      const r = this.mustRow(id);
      if (r.state === 'capturing' || r.state === 'deploying') throw machineBusy(id, r.state, r.job_id);
      this.db.prepare('DELETE FROM machines WHERE id = ?').run(id);
    }).immediate();
    rmSync(this.dirOf(id), { recursive: true, force: true });
  }

  history(id: string): HistoryEntry[] {
    this.mustRow(id);
    return (this.db.prepare('SELECT at, event, state, image, job_id, detail FROM machine_history WHERE machine_id = ? ORDER BY seq').all(id) as
      { at: string; event: string; state: MachineState; image: string | null; job_id: string | null; detail: string | null }[])
      .map(h => ({ at: h.at, event: h.event, state: h.state, image: h.image, jobId: h.job_id, detail: h.detail }));
  }

  /**
   * A job takes the machine: one transaction (BEGIN IMMEDIATE), so of two
   * jobs asking at once exactly one gets it; the other gets MACHINE_BUSY.
   * Only a ready, deployed or failed machine can be taken.
   */
  begin(id: string, action: 'deploying' | 'capturing', jobId: string, image?: string): MachineRecord {
    return this.db.transaction(() => {
      const r = this.mustRow(id);
      if (!FREE_STATES.includes(r.state)) throw machineBusy(id, r.state, r.job_id);
      this.set(id, { state: action, job_id: jobId, image: image ?? null });
      this.log(id, action === 'deploying' ? 'deploy-started' : 'capture-started');
      return this.record(this.mustRow(id));
    }).immediate();
  }

  /** The job lets go: the machine ends deployed, failed or ready; the history says `event`. The image stays named after a deploy. */
  finish(id: string, state: 'deployed' | 'failed' | 'ready', event: string): MachineRecord {
    return this.db.transaction(() => {
      const r = this.mustRow(id);
      this.log(id, event, `${r.state} -> ${state}`);
      this.set(id, { state, job_id: null, image: state === 'deployed' ? r.image : null });
      return this.record(this.mustRow(id));
    }).immediate();
  }

  /** what the machine's next PXE boot gets: the agent, or `sanboot` from its first disk */
  setBootTarget(id: string, target: BootTarget): void {
    if (target !== 'agent' && target !== 'disk') throw workInvalid(`boot target ${JSON.stringify(target)} is neither agent nor disk`);
    this.db.transaction(() => {
      const r = this.mustRow(id);
      if (r.boot_target === target) return;
      this.set(id, { boot_target: target });
      this.log(id, 'boot-target', target);
    }).immediate();
  }

  /**
   * Hand the agent work (null: nothing), replacing what it had. An export's
   * key goes to a 0600 file, whose path is returned (pskFile): give that to
   * qemu as --tls-psk-file. Key files of other tickets are removed.
   */
  setWork(id: string, work: AgentWork | null): { pskFile?: string } {
    if (work !== null) checkWork(work);
    this.mustRow(id);
    let stored: StoredWork | null;
    let pskFile: string | undefined;
    if (work?.action !== 'export') stored = work;
    else {
      const { pskKey, ...rest } = work;
      mkdirSync(this.dirOf(id), { recursive: true, mode: 0o700 });
      pskFile = join(this.dirOf(id), `psk-${work.ticket}`);
      writeFileSync(pskFile, `${work.pskIdentity}:${pskKey.toLowerCase()}\n`, { mode: 0o600 });
      stored = { ...rest, pskFile };
    }
    this.db.transaction(() => {
      this.set(id, { work: stored ? JSON.stringify(stored) : null });
      this.log(id, 'work', stored ? `${stored.action}${'ticket' in stored ? ` ${stored.ticket}` : ''}` : 'none');
    }).immediate();
    this.removeKeys(id, work && 'ticket' in work && work.action !== 'unexport' ? work.ticket : undefined);
    return pskFile ? { pskFile } : {};
  }

  /** remove the PSK files of every ticket but `keep` */
  private removeKeys(id: string, keep?: string): void {
    let names: string[];
    try { names = readdirSync(this.dirOf(id)); } catch { return; }
    for (const n of names) if (n.startsWith('psk-') && n !== `psk-${keep}`) rmSync(join(this.dirOf(id), n), { force: true });
  }

  /** the work as the agent gets it (an export with its key), or undefined when there is none */
  workFor(id: string): AgentWork | undefined {
    const w = this.record(this.mustRow(id)).work;
    if (!w) return undefined;
    if (w.action !== 'export') return w;
    const { pskFile, ...rest } = w;
    const line = readFileSync(pskFile, 'utf8').trim();
    return { ...rest, pskKey: line.slice(line.indexOf(':') + 1) };
  }

  /**
   * The agent asks for work from `peer`: remember when and where; an agent
   * that polls is ready unless a job holds the machine.
   */
  seen(id: string, peer: string): void {
    this.db.transaction(() => {
      const r = this.mustRow(id);
      this.db.prepare('UPDATE machines SET last_seen_at = ?, peer = ? WHERE id = ?').run(now(), peer, id);
      if (r.state === 'capturing' || r.state === 'deploying' || r.state === 'ready') return;
      this.set(id, { state: 'ready' });
      this.log(id, 'agent-ready', `was ${r.state}; from ${peer}`);
    }).immediate();
  }

  /** The agent's status: kept per ticket; the work it finishes is no longer handed out. */
  reportStatus(id: string, status: AgentStatus | unknown): void {
    const s = checkStatus(status);
    let unexported = false;
    this.db.transaction(() => {
      const r = this.mustRow(id);
      const before = this.db.prepare('SELECT state FROM machine_status WHERE machine_id = ? AND ticket = ?').get(id, s.ticket) as { state: string } | undefined;
      this.db.prepare(`INSERT INTO machine_status (machine_id, ticket, state, message, at) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT(machine_id, ticket) DO UPDATE SET state = excluded.state, message = excluded.message, at = excluded.at`)
        .run(id, s.ticket, s.state, s.message, now());
      // an agent repeats a report when handed the same work again: one history entry
      if (before?.state !== s.state) this.log(id, `agent-${s.state}`, [s.ticket, s.message].filter(Boolean).join(': ') || null);
      const work = r.work ? JSON.parse(r.work) as StoredWork : null;
      if (work && finishes(work, s.ticket, s.state)) this.set(id, { work: null });
      unexported = s.state === 'unexported' || (s.state === 'failed' && work?.action === 'export' && work.ticket === s.ticket);
    }).immediate();
    if (unexported) rmSync(join(this.dirOf(id), `psk-${s.ticket}`), { force: true });
  }

  /** the agent's last status for a ticket (null: the ticketless booting-disk) */
  statusOf(id: string, ticket: string | null): StatusRecord | undefined {
    const r = this.db.prepare('SELECT ticket, state, message, at FROM machine_status WHERE machine_id = ? AND ticket = ?').get(id, ticket ?? '') as
      { ticket: string; state: StatusRecord['state']; message: string | null; at: string } | undefined;
    return r && { ticket: r.ticket || null, state: r.state, ...(r.message !== null ? { message: r.message } : {}), at: r.at };
  }

  /**
   * Wait until the agent reports one of `states` for the ticket (polling the
   * database: the agent may talk to another process). A `failed` report not
   * waited for is AGENT_FAILED; no report in time is AGENT_TIMEOUT. Aborted by
   * `signal` (default: the running job's).
   */
  async waitForStatus(id: string, ticket: string | null, states: StatusRecord['state'][], timeoutMs: number,
    signal: AbortSignal | undefined = currentAbortSignal()): Promise<StatusRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      signal?.throwIfAborted();
      this.mustRow(id);
      const s = this.statusOf(id, ticket);
      if (s && states.includes(s.state)) return s;
      if (s?.state === 'failed') throw agentFailed(id, ticket ?? 'its work', s.message ?? '');
      if (Date.now() >= deadline) throw agentTimeout(id, `${states.join(' or ')}${ticket ? ` for ${ticket}` : ''}`, Math.round(timeoutMs / 1000));
      await sleep(Math.min(STATUS_POLL_MS, Math.max(1, deadline - Date.now())), undefined, { signal }).catch(() => {});
    }
  }

  /** A one-time token for the deployed system's first boot report (POST /machines/{id}/booted); a new one replaces the last. */
  issueBootToken(id: string): string {
    const token = newToken();
    this.set(id, { boot_token_hash: sha256(token).toString('hex') });
    return token;
  }

  /** The deployed system reports its first boot: true once per issued token (constant time), recorded in the history. */
  redeemBootToken(id: string, token: string, peer: string): boolean {
    return this.db.transaction(() => {
      const r = this.row(id);
      if (!hashMatches(r?.boot_token_hash ?? null, token)) return false;
      this.set(id, { boot_token_hash: null });
      this.recordFirstBoot(id, peer);
      return true;
    }).immediate();
  }

  /** the deployed system came up: a history entry with where it spoke from */
  recordFirstBoot(id: string, peer: string): void {
    this.set(id, { last_seen_at: now(), peer });
    this.log(id, 'first-boot', `from ${peer}`);
  }
}
