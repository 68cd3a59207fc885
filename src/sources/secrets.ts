// Secrets for network sources: CHAP passwords and TLS pre-shared keys.
//
// They live in files the user names (--chap-secret-file, --tls-psk-file),
// which must not be readable by group or others. Ferry hands them to
// qemu-storage-daemon only as files (`--object secret,file=…`, a TLS-PSK
// directory); never on a command line, never in a message. What Ferry reads
// into memory is remembered only so redact() can scrub it from any text that
// leaves the process.
import { chmod, mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { secretFileInvalid, secretFileMissing, secretFileUnsafe, usageError } from '../errors.js';
import type { Scope } from '../util/scope.js';

/** Credentials given on the command line; they apply to every network endpoint of the command. */
export interface NetworkCredentials {
  chapSecretFile?: string;
  tlsPskFile?: string;
}

let current: NetworkCredentials = {};

export function setNetworkCredentials(c: NetworkCredentials): void {
  current = {
    chapSecretFile: c.chapSecretFile ? resolve(c.chapSecretFile) : undefined,
    tlsPskFile: c.tlsPskFile ? resolve(c.tlsPskFile) : undefined,
  };
}

export function networkCredentials(): NetworkCredentials {
  return current;
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
