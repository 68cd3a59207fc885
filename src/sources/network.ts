// Network sources: an NBD export or an iSCSI LUN opened read-only through
// qemu-storage-daemon (qemu's nbd and iscsi block drivers), then exported by
// FUSE as a plain file, so every later step treats it like a local raw disk.
//
// Secrets reach the daemon only as files (see secrets.ts). The daemon's
// complaints are turned into typed errors naming the host, port, target or
// export, listing the exports or LUNs that do exist.
import { lookup } from 'node:dns/promises';
import { connect, isIP } from 'node:net';
import { open, stat } from 'node:fs/promises';
import type { OpenDisk } from '../blockdev/open-disk.js';
import { exportAsFile, type BlockdevOptions } from '../blockdev/qsd.js';
import {
  authFailed, authRequired, exportMissing, FerryError, lunMissing, networkSourceFailed, notADiskImage,
  sourceConnectionLost, sourceUnreachable, targetMissing, tlsUnavailable, ToolError, usageError,
} from '../errors.js';
import { probeDevice } from '../fs/detect.js';
import { readTable } from '../layout/table.js';
import { run } from '../util/exec.js';
import { Scope } from '../util/scope.js';
import { describeEndpoint, type Endpoint } from './endpoint.js';
import {
  chapPassword, chapSecretForDaemon, checkTlsCertsDir, mutualChapAccount, mutualChapForDaemon, mutualChapHelperEnv, networkCredentials, pskDirForDaemon, pskUsername,
  type NetworkCredentials,
} from './secrets.js';

export type NbdEndpoint = Extract<Endpoint, { kind: 'nbd' }>;
export type IscsiEndpoint = Extract<Endpoint, { kind: 'iscsi' }>;
export type NetworkEndpoint = NbdEndpoint | IscsiEndpoint;

/** A host as a URL writes it ([::1]) → as a socket API wants it (::1). */
const bareHost = (h: string) => h.replace(/^\[(.*)\]$/, '$1');
/** user name of an NBD URL (nbds://USER@HOST/…): picks the TLS-PSK key */
const urlUser = (url: string) => { try { return decodeURIComponent(new URL(url).username) || undefined; } catch { return undefined; } };

/** "the NBD server at 127.0.0.1:10809", "the NBD socket /run/x.sock", "the iSCSI portal 10.0.0.1:3260" */
export function whereOf(ep: NetworkEndpoint): string {
  if (ep.kind === 'iscsi') return `the iSCSI portal ${ep.host}:${ep.port}`;
  return ep.socket ? `the NBD socket ${ep.socket}` : `the NBD server at ${ep.host}:${ep.port}`;
}

/** Machine-readable facts for --json errors: where, never a secret. */
export function detailsOf(ep: NetworkEndpoint): Record<string, unknown> {
  if (ep.kind === 'iscsi') return { url: describeEndpoint(ep), host: ep.host, port: ep.port, target: ep.iqn, lun: ep.lun, user: ep.user };
  return ep.socket ? { url: ep.url, socket: ep.socket, export: ep.export } : { url: ep.url, host: ep.host, port: ep.port, export: ep.export };
}

/** Which credentials fit which URL; mistakes are usage errors before anything connects. */
export function checkCredentials(ep: NetworkEndpoint, c: NetworkCredentials): void {
  if (ep.kind === 'nbd') {
    if (c.chapSecretFile || c.mutualChapSecretFile) {
      throw usageError(`${c.chapSecretFile ? '--chap-secret-file' : '--mutual-chap-secret-file'} is for iscsi:// sources; NBD uses --tls-psk-file or --tls-certs`);
    }
    if (c.tlsPskFile && c.tlsCerts) throw usageError('give either --tls-psk-file (pre-shared key) or --tls-certs (x509 certificates), not both');
    if (ep.tls && !c.tlsPskFile && !c.tlsCerts) {
      throw usageError(`${ep.url} asks for TLS; give the pre-shared key with --tls-psk-file FILE (lines 'username:hexkey') or x509 certificates with --tls-certs DIR`);
    }
    if (!ep.socket && !ep.host) throw usageError(`${ep.url} names no host; write nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH`);
    if (ep.url.startsWith('nbd+unix:') && !ep.socket) throw usageError(`${ep.url} names no socket; write nbd+unix:///EXPORT?socket=PATH`);
  } else {
    if (c.tlsPskFile || c.tlsCerts) {
      throw usageError(`${c.tlsPskFile ? '--tls-psk-file' : '--tls-certs'} is for nbd:// and nbds:// sources; iSCSI uses --chap-secret-file`);
    }
    if (c.mutualChapSecretFile && !c.chapSecretFile) {
      throw usageError('--mutual-chap-secret-file needs --chap-secret-file too: mutual CHAP is Ferry logging in with its own CHAP account, then the target proving itself');
    }
    if (c.chapSecretFile && !ep.user) throw usageError(`--chap-secret-file needs the CHAP user name in the URL: iscsi://USER@${ep.host}:${ep.port}/${ep.iqn}/${ep.lun}`);
    if (ep.user && !c.chapSecretFile) throw usageError(`${describeEndpoint(ep)} names CHAP user '${ep.user}' but no --chap-secret-file gives the password`);
  }
  try {
    if (new URL(ep.url).password) throw usageError('do not write a password in the URL; put it in a file (mode 600) and give --chap-secret-file or --tls-psk-file');
  } catch (e) {
    if (e instanceof FerryError) throw e;
  }
}

/** How long reads wait for a dropped NBD connection to come back: FERRY_RECONNECT_SECONDS, default 30. */
export function reconnectSeconds(): number {
  const v = process.env.FERRY_RECONNECT_SECONDS;
  if (v === undefined || v === '') return 30;
  if (!/^\d+$/.test(v) || Number(v) > 3600) throw usageError(`FERRY_RECONNECT_SECONDS=${v} is not a whole number of seconds from 0 to 3600`);
  return Number(v);
}

/**
 * A step failed while reading a network source: was it the connection? When
 * the endpoint no longer answers, the reads failed because the reconnect
 * window ran out; say so as a typed error naming the endpoint.
 */
export async function connectionLost(ep: NetworkEndpoint, e: unknown): Promise<FerryError | undefined> {
  if (e instanceof FerryError && !(e instanceof ToolError)) return undefined;
  const why = await tryConnect(ep, 3000);
  if (!why) return undefined;
  const window = `; reconnecting with backoff for ${reconnectSeconds()} s did not succeed`;
  return sourceConnectionLost(`${whereOf(ep)} (${describeEndpoint(ep)})`, `${why}${window}`, detailsOf(ep));
}

interface Prepared {
  objects: string[];
  proto: BlockdevOptions;
  /** extra environment for the daemon (the mutual CHAP helper: paths, never a secret) */
  env?: Record<string, string>;
  /** after each daemon start: throw if a credential was not applied as asked */
  confirm(): Promise<void>;
  /** remove what prepare() made for the daemon's start (secret copies) */
  done(): Promise<void>;
}

/** --object arguments and the protocol node for an endpoint. */
async function prepare(scope: Scope, work: string, ep: NetworkEndpoint, c: NetworkCredentials, writable = false): Promise<Prepared> {
  if (ep.kind === 'nbd') {
    const server = ep.socket
      ? { type: 'unix', path: ep.socket }
      : { type: 'inet', host: bareHost(ep.host!), port: String(ep.port ?? 10809) };
    // reconnect-delay: after an unexpected disconnect qemu reconnects with
    // backoff (1, 2, 4 … 16 s apart); requests wait this long, then fail (EIO).
    const proto: BlockdevOptions = {
      driver: 'nbd', 'node-name': 'proto', server, export: ep.export, 'read-only': !writable, 'reconnect-delay': reconnectSeconds(),
    };
    const objects: string[] = [];
    if (c.tlsPskFile) {
      const username = await pskUsername(c.tlsPskFile, urlUser(ep.url));
      const dir = await pskDirForDaemon(work, c.tlsPskFile);
      objects.push(`tls-creds-psk,id=ferry-tls,endpoint=client,dir=${dir},username=${username}`);
      proto['tls-creds'] = 'ferry-tls';
    } else if (c.tlsCerts) {
      // qemu verifies the server's certificate against DIR/ca-cert.pem and its name against the host
      const dir = await checkTlsCertsDir(c.tlsCerts);
      objects.push(`tls-creds-x509,id=ferry-tls,endpoint=client,verify-peer=on,dir=${dir.replace(/,/g, ',,')}`);
      proto['tls-creds'] = 'ferry-tls';
    }
    return { objects, proto, confirm: async () => undefined, done: async () => undefined };
  }
  const proto: BlockdevOptions = {
    driver: 'iscsi', 'node-name': 'proto', transport: 'tcp', portal: `${ep.host}:${ep.port}`,
    target: ep.iqn, lun: ep.lun, 'read-only': !writable,
  };
  const objects: string[] = [];
  let done = async () => undefined as void;
  let env: Record<string, string> | undefined;
  let confirm = async () => undefined as void;
  if (c.mutualChapSecretFile) {
    // qemu has no option for the target's account: a preloaded helper sets it in libiscsi (iscsi-mutual-chap.ts)
    const mutual = await mutualChapForDaemon(work, c.mutualChapSecretFile);
    env = mutual.env;
    confirm = mutual.confirm;
  }
  if (c.chapSecretFile) {
    const secret = await chapSecretForDaemon(scope, work, c.chapSecretFile);
    objects.push(`secret,id=ferry-chap,file=${secret.path},format=raw`);
    proto.user = ep.user;
    proto['password-secret'] = 'ferry-chap';
    done = secret.discard;
  }
  return { objects, proto, env, confirm, done };
}

/**
 * The endpoint with its host name looked up once into an address, for a
 * caller that will probe it later when the libuv thread pool (where
 * dns.lookup runs) may be taken by reads of a hung source. Unchanged when
 * it already is an address, a unix socket, or the name does not resolve.
 */
export async function withAddress(ep: NetworkEndpoint): Promise<NetworkEndpoint> {
  if ((ep.kind === 'nbd' && ep.socket) || !ep.host || isIP(bareHost(ep.host))) return ep;
  const found = await lookup(bareHost(ep.host)).catch(() => undefined);
  return found ? { ...ep, host: found.family === 6 ? `[${found.address}]` : found.address } : ep;
}

/** Can a TCP (or unix socket) connection be made at all? Resolves to the reason when not. */
export function tryConnect(ep: NetworkEndpoint, timeoutMs = 5000): Promise<string | undefined> {
  return new Promise(resolveP => {
    const sock = ep.kind === 'nbd' && ep.socket
      ? connect({ path: ep.socket })
      : connect({ host: bareHost(ep.host!), port: ep.port ?? 10809 });
    const finish = (why?: string) => { sock.destroy(); resolveP(why); };
    sock.setTimeout(timeoutMs, () => finish(`no answer within ${timeoutMs / 1000} s`));
    sock.once('connect', () => finish(undefined));
    sock.once('error', (e: NodeJS.ErrnoException) => finish(
      e.code === 'ECONNREFUSED' ? 'connection refused'
        : e.code === 'ENOENT' ? 'no such socket'
          : e.code === 'ENOTFOUND' ? 'unknown host name'
            : e.code === 'EHOSTUNREACH' || e.code === 'ENETUNREACH' ? 'no route to the host'
              : e.code ?? e.message));
  });
}

const lastLines = (stderr: string) => stderr.trim().split('\n').map(l => l.replace(/^qemu-storage-daemon: (--blockdev \{.*?\}: )?/, '').trim()).filter(Boolean).slice(-2).join(' | ');

/**
 * libiscsi's complaint when the target failed mutual CHAP (it did not prove
 * itself with the account in --mutual-chap-secret-file), as a short reason;
 * undefined for anything else.
 */
export function targetNotAuthenticated(text: string): string | undefined {
  if (/Invalid CHAP_R response from the target|Wrong size of CHAP_R/i.test(text)) return 'its answer to the CHAP challenge was wrong';
  if (/Wrong CHAP targetname received/i.test(text)) return 'it answered with another user name';
  if (/did not return CHAP_[NR] during SECNEG/i.test(text)) return 'it did not answer the CHAP challenge (it may have no outgoing account)';
  return undefined;
}

/** "iSCSI target IQN at H:P failed to authenticate itself as 'USER' (mutual CHAP)": never the password. */
export async function mutualWhat(ep: { host: string; port: number; iqn?: string }, c: NetworkCredentials, which?: string): Promise<string> {
  const user = c.mutualChapSecretFile ? await mutualChapAccount(c.mutualChapSecretFile).then(a => a.user, () => '?') : '?';
  return `${which ?? `iSCSI target ${ep.iqn} at ${ep.host}:${ep.port}`} failed to authenticate itself as '${user}' (mutual CHAP)`;
}

/** The target refused the login; with mutual CHAP asked for, a target without an outgoing account refuses it the same way. */
export function chapRefused(which: string, user: string | undefined, c: NetworkCredentials, details: Record<string, unknown>): FerryError {
  if (!c.mutualChapSecretFile) return authFailed(`${which} refused CHAP user '${user}'`, 'check the user name and the password in --chap-secret-file', details);
  return authFailed(`${which} refused CHAP user '${user}' with mutual CHAP`,
    'check the user name and the password in --chap-secret-file, and that the target has an outgoing account for mutual CHAP (else leave out --mutual-chap-secret-file)', details);
}

/** The daemon (or qemu-img, nbdinfo, iscsi-ls) could not open the endpoint: say why, as a typed error. */
export async function diagnose(ep: NetworkEndpoint, stderr: string, c: NetworkCredentials): Promise<FerryError> {
  const where = whereOf(ep);
  const details = detailsOf(ep);
  if (ep.kind === 'nbd') {
    const m = /Failed to connect to '[^']*': (.*)$/m.exec(stderr) ?? /could not connect to remote host: (.*)$/m.exec(stderr);
    if (m) return sourceUnreachable(where, m[1].trim().toLowerCase(), details);
    if (/not present|Requested export not available|No such export|unknown export/i.test(stderr)) {
      const available = await listNbdExports(ep, c).then(l => l.map(e => e.name), () => [] as string[]);
      return exportMissing(where, ep.export, available, details);
    }
    if (/TLS negotiation required|not permitted before TLS|requires TLS/i.test(stderr)) {
      return authRequired(where, `TLS; write nbds://${ep.socket ? '' : `${ep.host}:${ep.port}`}/${ep.export} and give --tls-psk-file FILE or --tls-certs DIR`, details);
    }
    if (/option 5 \(starttls\)|TLS not configured|does not support TLS/i.test(stderr)) return tlsUnavailable(where, details);
    if (c.tlsCerts) {
      // qemu says which check failed; nbdinfo (probe) only "Error in the certificate verification"
      const ca = `${c.tlsCerts}/ca-cert.pem`;
      const host = ep.socket ? 'the socket' : bareHost(ep.host ?? '');
      const cert = (what: string, hint: string) => authFailed(`${where} presented a certificate ${what}`, hint, details);
      if (/hasn't got a known issuer|certificate is not trusted/i.test(stderr)) {
        return cert(`not signed by ${ca}`, `put the CA that signed the server's certificate in ${ca}`);
      }
      if (/Error in the certificate verification|certificate verification failed/i.test(stderr)) {
        return cert(`not signed by ${ca} (or not issued for ${host})`, `put the CA that signed the server's certificate in ${ca} and check the server's certificate names ${host}`);
      }
      if (/does not match the hostname/i.test(stderr)) return cert(`not issued for ${host}`, 'connect with the host name (or address) its certificate names');
      if (/has expired|not yet activated|not activated/i.test(stderr)) return cert('that has expired or is not yet valid', "renew the server's certificate or check this machine's clock");
      if (/has been revoked/i.test(stderr)) return cert('that has been revoked', "the server needs a new certificate");
      if (/TLS handshake failed|gnutls_handshake|handshake|certificate/i.test(stderr)) {
        return authFailed(`${where} refused the x509 TLS handshake`,
          `if it requires a client certificate, put client-cert.pem and client-key.pem (signed by a CA it trusts) in ${c.tlsCerts}`, details);
      }
    }
    if (/TLS handshake failed|gnutls_handshake|handshake/i.test(stderr)) {
      const user = await pskUsername(c.tlsPskFile!, urlUser(ep.url)).catch(() => '?');
      return authFailed(`${where} refused the TLS pre-shared key of user '${user}'`, 'check the key in --tls-psk-file', details);
    }
  } else {
    const mutual = targetNotAuthenticated(stderr);
    if (mutual) return authFailed(await mutualWhat(ep, c), `${mutual}; check the target's user name and password in --mutual-chap-secret-file`, details);
    if (/Authentication failure/i.test(stderr)) {
      if (!c.chapSecretFile) {
        return authRequired(`iSCSI target ${ep.iqn} at ${ep.host}:${ep.port}`,
          `CHAP authentication; write iscsi://USER@${ep.host}:${ep.port}/${ep.iqn}/${ep.lun} and give --chap-secret-file FILE`, details);
      }
      return chapRefused(`iSCSI target ${ep.iqn} at ${ep.host}:${ep.port}`, ep.user, c, details);
    }
    if (/Target not found/i.test(stderr)) {
      const available = await listIscsi(ep, c, false).then(t => t.map(x => x.iqn), () => [] as string[]);
      return targetMissing(`${ep.host}:${ep.port}`, ep.iqn, available, details);
    }
    if (/LOGICAL_UNIT_NOT_SUPPORTED/.test(stderr)) {
      const available = await listIscsi(ep, c, true)
        .then(t => (t.find(x => x.iqn === ep.iqn)?.luns ?? []).filter(l => l.type === 'DIRECT_ACCESS').map(l => String(l.lun)), () => [] as string[]);
      return lunMissing(`${ep.host}:${ep.port}`, ep.iqn, ep.lun, available, details);
    }
  }
  const unreachable = await tryConnect(ep);
  if (unreachable) return sourceUnreachable(where, unreachable, details);
  return networkSourceFailed(`${describeEndpoint(ep)}`, lastLines(stderr) || 'the server refused it', details);
}

/** qcow2 header facts from the first bytes: is it qcow2, does it lean on other files? */
function qcow2Header(b: Buffer): { qcow2: boolean; backing: boolean; dataFile: boolean } {
  const qcow2 = b.length >= 104 && b.readUInt32BE(0) === 0x514649fb;
  if (!qcow2) return { qcow2, backing: false, dataFile: false };
  const version = b.readUInt32BE(4);
  const backing = b.readBigUInt64BE(8) !== 0n;
  const dataFile = version >= 3 && (b.readBigUInt64BE(72) & 4n) !== 0n;
  return { qcow2, backing, dataFile };
}

async function firstBytes(file: string, n: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(n);
    const { bytesRead } = await fh.read(buf, 0, n, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

export interface OpenNetworkOptions {
  /** refuse a disk with neither partition table nor file system (convert, verify, info); probe shows blank disks */
  requireDisk?: boolean;
  credentials?: NetworkCredentials;
  /** a machine's disk to deploy onto (V2P): opened raw and writable, whatever it holds now */
  writable?: boolean;
}

/**
 * Open a network disk read-only as a plain file. The remote bytes are read
 * as raw unless they start with a qcow2 header (a qcow2 served raw, as
 * `qemu-nbd -f raw` does), in which case a qcow2 driver is stacked on top.
 * Only qcow2 is recognised: probing formats such as vmdk, whose descriptor
 * can name local files, would let a remote disk make Ferry read this host.
 */
export async function openNetworkSource(scope: Scope, ep: NetworkEndpoint, work: string, name: string, opts: OpenNetworkOptions = {}): Promise<OpenDisk> {
  const c = opts.credentials ?? networkCredentials();
  checkCredentials(ep, c);
  const describe = describeEndpoint(ep);
  const raw = new Scope();
  scope.defer(`network source ${describe}`, async () => { await raw.release(); });
  const writable = !!opts.writable;
  const prepared = await prepare(scope, work, ep, c, writable);
  try {
    const start = (s: Scope, suffix: string, format: BlockdevOptions) => exportAsFile(s, work, `${name}${suffix}`, [prepared.proto, format], {
      writable, describe, objects: prepared.objects, env: prepared.env, diagnose: stderr => diagnose(ep, stderr, c),
    }).then(async f => { await prepared.confirm(); return f; });
    if (writable) {
      // what the disk holds now is about to be replaced: no format is sniffed from it
      const file = await start(scope, '', { driver: 'raw', 'node-name': 'disk', file: 'proto', 'read-only': false });
      return { file, size: (await stat(file)).size, format: 'raw', sourceFormat: 'raw', describe, remote: true };
    }
    let file = await start(raw, '', { driver: 'raw', 'node-name': 'disk', file: 'proto', 'read-only': true });
    let sourceFormat = 'raw';
    const head = qcow2Header(await firstBytes(file, 512));
    if (head.qcow2) {
      if (head.backing) throw notADiskImage(describe, 'it is a qcow2 image with a backing file, which cannot be followed over the network; serve the whole chain (qemu-nbd serves it when given the top image with -f qcow2)');
      if (head.dataFile) throw notADiskImage(describe, 'it is a qcow2 image with an external data file, which cannot be followed over the network');
      await raw.release();
      file = await start(scope, '-qcow2', { driver: 'qcow2', 'node-name': 'disk', file: 'proto', backing: null, 'read-only': true });
      sourceFormat = 'qcow2';
    }
    const size = (await stat(file)).size;
    if (opts.requireDisk !== false) {
      if (size === 0) throw notADiskImage(describe, 'it is empty (0 bytes); for iSCSI, LUN 0 is often the controller, not a disk');
      if (sourceFormat === 'raw' && !(await readTable(file)) && !(await probeDevice(file)).type) {
        throw notADiskImage(describe, 'no partition table or file system found');
      }
    }
    return { file, size, format: 'raw', sourceFormat, describe };
  } finally {
    await prepared.done();
  }
}

// ——— discovery: what a server offers ———

export interface NbdExportEntry { name: string; description?: string; size: number }

/** nbdinfo's URI for an NBD endpoint (the PSK file's path, never the key, goes in it). */
function nbdinfoUri(ep: NbdEndpoint, c: NetworkCredentials, user?: string): string {
  const tls = !!(c.tlsPskFile || c.tlsCerts);
  const q = new URLSearchParams();
  if (ep.socket) q.set('socket', ep.socket);
  if (c.tlsPskFile) q.set('tls-psk-file', c.tlsPskFile);
  else if (c.tlsCerts) q.set('tls-certificates', c.tlsCerts);
  const auth = c.tlsPskFile && user ? `${encodeURIComponent(user)}@` : '';
  const base = ep.socket ? `nbd${tls ? 's' : ''}+unix://${auth}/` : `nbd${tls ? 's' : ''}://${auth}${ep.host}:${ep.port ?? 10809}/`;
  const qs = q.toString();
  return qs ? `${base}?${qs}` : base;
}

export async function listNbdExports(ep: NbdEndpoint, c: NetworkCredentials = networkCredentials()): Promise<NbdExportEntry[]> {
  checkCredentials(ep, c);
  const user = c.tlsPskFile ? await pskUsername(c.tlsPskFile, urlUser(ep.url)) : undefined;
  if (c.tlsCerts) await checkTlsCertsDir(c.tlsCerts);
  let out: string;
  try {
    out = (await run('nbdinfo', ['--list', '--json', nbdinfoUri(ep, c, user)])).stdout;
  } catch (e) {
    if (!(e instanceof ToolError)) throw e;
    const s = e.stderr;
    if (/could not connect|Connection refused|No such file/i.test(s)) {
      throw sourceUnreachable(whereOf(ep), (await tryConnect(ep)) ?? lastLines(s), detailsOf(ep));
    }
    // a TLS-only server answers a plain client's list request with "not supported"
    if (!c.tlsPskFile && !c.tlsCerts && /list request: Operation not supported|TLS/i.test(s)) throw await diagnose(ep, 'TLS negotiation required', c);
    throw await diagnose(ep, s, c);
  }
  const j = JSON.parse(out) as { exports?: { 'export-name': string; description?: string; 'export-size': number }[] };
  return (j.exports ?? []).map(x => ({ name: x['export-name'], description: x.description, size: x['export-size'] }));
}

export interface IscsiLun { lun: number; type: string; size?: string }
export interface IscsiTarget { iqn: string; portal: string; luns?: IscsiLun[]; error?: string }

/**
 * Targets of a portal, and with luns=true their LUNs, by iscsi-ls. iscsi-ls
 * takes a CHAP password only in its URL or in LIBISCSI_CHAP_PASSWORD; Ferry
 * uses the environment (readable only by this user and root, like the
 * secret file itself), never the command line.
 */
export async function listIscsi(ep: Pick<IscsiEndpoint, 'host' | 'port' | 'user'>, c: NetworkCredentials = networkCredentials(), luns = true): Promise<IscsiTarget[]> {
  const env: Record<string, string> = {};
  if (luns && c.chapSecretFile && ep.user) env.LIBISCSI_CHAP_PASSWORD = await chapPassword(c.chapSecretFile);
  // mutual CHAP: not LIBISCSI_CHAP_TARGET_*, which iscsi-ls applies only to its discovery session (where
  // targets such as tgtd do no mutual CHAP, so discovery fails) and not to the LUN listing sessions; the
  // helper that qemu-storage-daemon gets, preloaded here too, sets the target's account on those sessions
  if (luns && c.chapSecretFile && ep.user && c.mutualChapSecretFile) Object.assign(env, (await mutualChapHelperEnv(c.mutualChapSecretFile)).env);
  const url = `iscsi://${luns && ep.user ? `${encodeURIComponent(ep.user)}@` : ''}${ep.host}:${ep.port}`;
  const args = luns ? ['-s', url] : [url];
  const r = await run('iscsi-ls', args, { env, okCodes: [10] });
  const text = `${r.stdout}\n${r.stderr}`;
  const targets: IscsiTarget[] = [];
  for (const line of text.split('\n')) {
    const t = /^Target:(\S+) Portal:(\S+)/.exec(line);
    if (t) { targets.push({ iqn: t[1], portal: t[2], luns: luns ? [] : undefined }); continue; }
    const l = /^Lun:(\d+)\s+Type:(\S+)(?: \(Size:([^)]+)\))?/.exec(line);
    if (l && targets.length) { targets.at(-1)!.luns!.push({ lun: Number(l[1]), type: l[2], size: l[3] }); continue; }
    if (/list_luns:|Failed to log in|failed/i.test(line) && targets.length && !targets.at(-1)!.error) targets.at(-1)!.error = line.trim();
  }
  if (!targets.length && r.exitCode !== 0) {
    const iep = { kind: 'iscsi', url: url, host: ep.host, port: ep.port, iqn: '', lun: 0, user: ep.user } as IscsiEndpoint;
    const why = await tryConnect(iep);
    if (why) throw sourceUnreachable(whereOf(iep), why, { host: ep.host, port: ep.port });
    throw networkSourceFailed(`iSCSI portal ${ep.host}:${ep.port}`, lastLines(text) || 'discovery failed', { host: ep.host, port: ep.port });
  }
  return targets;
}
