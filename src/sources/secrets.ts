// Secrets for network sources: CHAP passwords (the target's too, for mutual
// CHAP), TLS pre-shared keys and x509 client keys.
//
// They live in files the user names (--chap-secret-file,
// --mutual-chap-secret-file, --tls-psk-file, the key in --tls-certs DIR),
// which must not be readable by group or others. Ferry hands them to
// qemu-storage-daemon only as files (`--object secret,file=…`, a TLS-PSK
// directory, the x509 directory, the mutual CHAP file read by a preloaded
// helper); never on a command line, never in a message. What Ferry reads
// into memory is remembered only so redact() can scrub it from any text that
// leaves the process.
import { AsyncLocalStorage } from 'node:async_hooks';
import { chmod, mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { mutualChapUnavailable, secretFileInvalid, secretFileMissing, secretFileUnsafe, tlsCertsInvalid, usageError } from '../errors.js';
import { mutualChapShim } from './iscsi-mutual-chap.js';
import type { Scope } from '../util/scope.js';

/** Credentials given on the command line; they apply to every network endpoint of the command. */
export interface NetworkCredentials {
  chapSecretFile?: string;
  /** iSCSI mutual CHAP: the target's own account, one line USER:PASSWORD */
  mutualChapSecretFile?: string;
  tlsPskFile?: string;
  /** NBD x509 TLS: qemu's credentials directory (ca-cert.pem, optional client-cert.pem + client-key.pem) */
  tlsCerts?: string;
}

let current: NetworkCredentials = {};
// a job runner's jobs each carry their own (withNetworkCredentials), over the command line's
const perJob = new AsyncLocalStorage<NetworkCredentials>();

export function withNetworkCredentials<T>(c: NetworkCredentials, fn: () => Promise<T>): Promise<T> {
  return perJob.run(resolveCredentials(c), fn);
}

export function setNetworkCredentials(c: NetworkCredentials): void {
  current = resolveCredentials(c);
}

function resolveCredentials(c: NetworkCredentials): NetworkCredentials {
  return {
    chapSecretFile: c.chapSecretFile ? resolve(c.chapSecretFile) : undefined,
    mutualChapSecretFile: c.mutualChapSecretFile ? resolve(c.mutualChapSecretFile) : undefined,
    tlsPskFile: c.tlsPskFile ? resolve(c.tlsPskFile) : undefined,
    tlsCerts: c.tlsCerts ? resolve(c.tlsCerts) : undefined,
  };
}

export function networkCredentials(): NetworkCredentials {
  return perJob.getStore() ?? current;
}

const known = new Set<string>();
let serial = 0;
const unique = () => `${process.pid}-${++serial}`;

/** Replace every secret this process has read with "***". */
export function redact(text: string): string {
  let out = text;
  for (const s of known) if (s.length >= 4) out = out.split(s).join('***');
  return out;
}

/** Refuse a secret file that is missing, not a regular file, or open to group/others. */
export async function checkSecretFile(path: string, option: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (!st) throw secretFileMissing(path, option);
  if (!st.isFile()) throw secretFileInvalid(path, 'is not a regular file');
  if (st.mode & 0o077) throw secretFileUnsafe(path, st.mode, option);
}

async function readSecretFile(path: string, option: string): Promise<string> {
  await checkSecretFile(path, option);
  try {
    return await readFile(path, 'utf8');
  } catch {
    throw secretFileMissing(path, option);
  }
}

/** A private directory in the work dir for files handed to daemons. */
async function privateDir(work: string, name: string): Promise<string> {
  const dir = join(work, name);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  return dir;
}

export interface SecretForDaemon {
  /** file to give qemu as `--object secret,id=…,file=PATH,format=raw` */
  path: string;
  /** remove any copy Ferry made, once the daemon has read it (idempotent) */
  discard(): Promise<void>;
}

/**
 * The CHAP password file as qemu's secret object wants it: exactly the
 * password bytes. A file with only the password is used as it is; one ending
 * in a newline (echo pw > file) is copied without it into a 0600 file of the
 * private work dir, removed as soon as the daemon started (and by the scope).
 */
export async function chapSecretForDaemon(scope: Scope, work: string, file: string): Promise<SecretForDaemon> {
  const text = await readSecretFile(file, '--chap-secret-file');
  const password = text.replace(/\r?\n$/, '');
  if (!password) throw secretFileInvalid(file, 'is empty; write the CHAP password in it');
  if (/[\r\n]/.test(password)) throw secretFileInvalid(file, 'has more than one line; write only the CHAP password in it');
  known.add(password);
  if (password === text) return { path: file, discard: async () => undefined };
  const dir = await privateDir(work, 'secrets');
  const copy = join(dir, `chap-${unique()}`);
  await writeFile(copy, password, { mode: 0o600, flag: 'wx' });
  const discard = () => rm(copy, { force: true });
  scope.defer(`secret copy ${copy}`, discard);
  return { path: copy, discard };
}

/** The CHAP password itself, for tools that take it only from the environment (iscsi-ls). */
export async function chapPassword(file: string): Promise<string> {
  const password = (await readSecretFile(file, '--chap-secret-file')).replace(/\r?\n$/, '');
  if (!password || /[\r\n]/.test(password)) throw secretFileInvalid(file, 'must hold the CHAP password on one line');
  known.add(password);
  return password;
}

/**
 * Check a TLS-PSK file (qemu's and GnuTLS's format: one `username:hexkey`
 * per line) and return the user name to use: the one asked for (it must be
 * in the file), else the first.
 */
export async function pskUsername(file: string, wanted?: string): Promise<string> {
  const text = await readSecretFile(file, '--tls-psk-file');
  const entries: string[] = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line) continue;
    const m = /^([^:\s]+):([0-9a-fA-F]+)$/.exec(line);
    if (!m) throw secretFileInvalid(file, `line ${i + 1} is not 'username:hexkey' (the format psktool writes)`);
    known.add(m[2]);
    entries.push(m[1]);
  }
  if (!entries.length) throw secretFileInvalid(file, "holds no 'username:hexkey' line");
  if (wanted && !entries.includes(wanted)) throw usageError(`the TLS-PSK file ${file} has no key for user '${wanted}'; it has: ${entries.join(', ')}`);
  return wanted ?? entries[0];
}

/**
 * A directory for qemu's tls-creds-psk object (it reads DIR/keys.psk): a
 * private directory holding only a symbolic link to the user's file, so the
 * key is never copied.
 */
export async function pskDirForDaemon(work: string, file: string): Promise<string> {
  await checkSecretFile(file, '--tls-psk-file');
  const dir = await privateDir(work, `tls-psk-${unique()}`);
  await symlink(resolve(file), join(dir, 'keys.psk'));
  return dir;
}

/** The target's account for mutual CHAP, from a file holding one line `USER:PASSWORD` (a trailing newline ignored). */
export async function mutualChapAccount(file: string): Promise<{ user: string; password: string }> {
  const text = (await readSecretFile(file, '--mutual-chap-secret-file')).replace(/\r?\n$/, '');
  const m = /^([^:\r\n]+):([^\r\n]+)$/.exec(text);
  if (!m) throw secretFileInvalid(file, "must hold the target's account as one line USER:PASSWORD");
  if (Buffer.byteLength(m[1]) > 255 || Buffer.byteLength(m[2]) > 255) throw secretFileInvalid(file, 'holds a user name or password longer than 255 bytes');
  known.add(m[2]);
  return { user: m[1], password: m[2] };
}

/**
 * Mutual CHAP through the helper preloaded into a libiscsi program (see
 * iscsi-mutual-chap.ts): it reads the user's file itself, so the password is
 * neither copied nor put in any environment; the environment holds paths.
 * `ack`: a file the helper creates once it set the target's account.
 */
export async function mutualChapHelperEnv(file: string, ack?: string): Promise<{ user: string; env: Record<string, string> }> {
  const { user } = await mutualChapAccount(file);
  const shim = await mutualChapShim();
  const env: Record<string, string> = { LD_PRELOAD: [shim, process.env.LD_PRELOAD].filter(Boolean).join(':'), FERRY_ISCSI_MUTUAL_CHAP_FILE: file };
  if (ack) env.FERRY_ISCSI_MUTUAL_CHAP_ACK = ack;
  return { user, env };
}

export interface MutualChapForDaemon {
  /** the target's user name (not secret: messages name it) */
  user: string;
  /** environment for qemu-storage-daemon: the preloaded helper and the paths it reads; never the password */
  env: Record<string, string>;
  /** after the daemon opened the LUN: throw unless the helper really set the target's account */
  confirm(): Promise<void>;
}

/**
 * Mutual CHAP for qemu-storage-daemon, which has no option for it. A loader
 * that ignored the preload must not silently skip the target's proof, so
 * confirm() refuses to go on unless the helper acknowledged.
 */
export async function mutualChapForDaemon(work: string, file: string): Promise<MutualChapForDaemon> {
  const dir = await privateDir(work, 'secrets');
  const ack = join(dir, `mutual-chap-ack-${unique()}`);
  const { user, env } = await mutualChapHelperEnv(file, ack);
  return {
    user, env,
    confirm: async () => {
      const seen = await stat(ack).then(() => true, () => false);
      await rm(ack, { force: true });
      if (!seen) throw mutualChapUnavailable('qemu-storage-daemon did not load the helper that asks the target to authenticate itself; Ferry stopped it before using the disk');
    },
  };
}

/**
 * Check an x509 credentials directory for qemu's tls-creds-x509 (client
 * side) and nbdinfo: ca-cert.pem must be there; client-cert.pem and
 * client-key.pem come together or not at all, and the key must not be open
 * to group or others. Returns the absolute directory.
 */
export async function checkTlsCertsDir(dir: string): Promise<string> {
  const abs = resolve(dir);
  const st = await stat(abs).catch(() => undefined);
  if (!st) throw tlsCertsInvalid(abs, 'does not exist');
  if (!st.isDirectory()) throw tlsCertsInvalid(abs, 'is not a directory');
  const isFile = async (name: string) => (await stat(join(abs, name)).catch(() => undefined))?.isFile() ?? false;
  if (!(await isFile('ca-cert.pem'))) throw tlsCertsInvalid(abs, 'holds no ca-cert.pem (the CA that signed the server\'s certificate)');
  const [cert, key] = await Promise.all([isFile('client-cert.pem'), isFile('client-key.pem')]);
  if (cert !== key) throw tlsCertsInvalid(abs, `holds ${cert ? 'client-cert.pem but no client-key.pem' : 'client-key.pem but no client-cert.pem'}; give both or neither`);
  if (key) await checkSecretFile(join(abs, 'client-key.pem'), '--tls-certs');
  return abs;
}
