// Where the store lives: `--store` or FERRY_STORE. Absent or `sqlite:PATH`:
// the embedded SQLite database ($FERRY_HOME/ferry.db by default).
// `postgres://USER@HOST[:PORT]/DB[?sslmode=verify-full&sslrootcert=CA.pem]`:
// a shared PostgreSQL for a fleet of workers; `?host=/run/postgresql` reaches
// it over a unix socket as libpq does.
//
// The password never rides in the URL, argv or a log line: it comes from
// `--store-password-file` (a 0600 file of ours) or, as libpq does it, from
// PGPASSFILE / ~/.pgpass (node-postgres reads those itself when no password is
// given). TLS is libpq's sslmode: disable, require, verify-ca, verify-full.
import { readFileSync, statSync } from 'node:fs';
import { isIP, Socket } from 'node:net';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import type { PoolConfig } from 'pg';
import { ferryHome } from '../catalog/db.js';
import { usageError } from '../errors.js';

export type StoreLocation =
  | { dialect: 'sqlite'; home: string }
  | { dialect: 'postgres'; pg: PoolConfig; describe: string };

export interface StoreChoice {
  /** --store; else FERRY_STORE; else the embedded SQLite */
  store?: string;
  passwordFile?: string;
}

/** every query is short; the pool closes idle connections before this (kysely-store.ts) */
export const SILENT_MS = 10_000;

const SSLMODES = ['disable', 'require', 'verify-ca', 'verify-full'] as const;

/** The password file must be ours and 0600: a secret others can read is refused, as libpq refuses ~/.pgpass. */
export function readPasswordFile(path: string): string {
  let st;
  try { st = statSync(path); } catch (e) {
    throw usageError(`--store-password-file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!st.isFile()) throw usageError(`--store-password-file ${path}: not a file`);
  if ((st.mode & 0o077) !== 0) throw usageError(`--store-password-file ${path}: mode ${(st.mode & 0o777).toString(8)}; make it 0600 (chmod 600) so that only its owner reads it`);
  if (process.getuid && st.uid !== process.getuid()) throw usageError(`--store-password-file ${path}: owned by uid ${st.uid}, not by this user`);
  return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
}

/**
 * libpq's password file (PGPASSFILE, else ~/.pgpass): lines host:port:database:user:password, '*' matches
 * anything, '\\' escapes ':' and '\\'. Ignored, as libpq does, when others may read it.
 */
export function pgpassLookup(host: string, port: number, database: string, user: string): string | undefined {
  const file = process.env.PGPASSFILE || join(homedir(), '.pgpass');
  let text: string;
  try {
    if ((statSync(file).mode & 0o077) !== 0) {
      process.stderr.write(`ferry: ${file} is readable by others; ignored (chmod 600 it)\n`);
      return undefined;
    }
    text = readFileSync(file, 'utf8');
  } catch { return undefined; }
  // a unix socket directory counts as localhost, as in libpq
  const h = host.startsWith('/') ? 'localhost' : host;
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim() || line.startsWith('#')) continue;
    const fields: string[] = [];
    let cur = '';
    for (let i = 0; i < line.length; i++) {
      if (line[i] === '\\' && i + 1 < line.length) cur += line[++i];
      else if (line[i] === ':' && fields.length < 4) { fields.push(cur); cur = ''; } else cur += line[i];
    }
    fields.push(cur);
    if (fields.length !== 5) continue;
    const [fh, fp, fd, fu, pw] = fields;
    const ok = (f: string, v: string) => f === '*' || f === v;
    if (ok(fh, h) && ok(fp, String(port)) && ok(fd, database) && ok(fu, user)) return pw;
  }
  return undefined;
}

/** The store named by --store / FERRY_STORE, checked; nothing is opened yet. */
export function storeLocation(c: StoreChoice = {}): StoreLocation {
  const raw = (c.store ?? process.env.FERRY_STORE ?? '').trim();
  if (!raw) return { dialect: 'sqlite', home: ferryHome() };
  if (raw.startsWith('sqlite:')) {
    const path = raw.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (!isAbsolute(path)) throw usageError(`--store ${raw}: write sqlite:/absolute/path/of/a/ferry/home (the directory holding ferry.db)`);
    // a ferry.db path or its directory
    return { dialect: 'sqlite', home: path.endsWith('.db') ? join(path, '..') : path };
  }
  if (!/^postgres(ql)?:\/\//.test(raw)) throw usageError(`--store ${raw.replace(/:[^@/]*@/, ':***@')}: write postgres://USER@HOST/DB or sqlite:PATH`);
  let url: URL;
  try { url = new URL(raw); } catch { throw usageError('--store: not a valid postgres:// URL'); }
  if (url.password) throw usageError('--store: the URL carries a password; put it in a 0600 file (--store-password-file) or ~/.pgpass instead, never in a URL or on a command line');
  const q = url.searchParams;
  for (const k of q.keys()) if (!['sslmode', 'sslrootcert', 'host', 'application_name', 'connect_timeout'].includes(k)) throw usageError(`--store: unknown parameter ${k}; known: sslmode, sslrootcert, host, application_name, connect_timeout`);
  const database = decodeURIComponent(url.pathname.replace(/^\//, '')) || undefined;
  const user = decodeURIComponent(url.username) || undefined;
  const host = q.get('host') ?? (url.hostname.replace(/^\[|\]$/g, '') || undefined);
  const port = url.port ? Number(url.port) : 5432;
  const sslmode = (q.get('sslmode') ?? 'disable') as typeof SSLMODES[number];
  if (!SSLMODES.includes(sslmode)) throw usageError(`--store: sslmode=${sslmode}; use one of ${SSLMODES.join(', ')}`);
  const pg: PoolConfig = {
    host, port, database, user,
    application_name: q.get('application_name') ?? 'ferry',
    connectionTimeoutMillis: Number(q.get('connect_timeout') ?? 10) * 1000,
    // a dead peer is noticed by TCP keep-alive, not after the kernel's two hours
    keepAlive: true, keepAliveInitialDelayMillis: 10_000,
    // a connection that has said nothing for SILENT_MS (a cut link: the query's packets are lost and TCP
    // would retransmit for a quarter of an hour) is dropped, so its query fails and the pool dials again
    stream: () => {
      const s = new Socket();
      // closed, not errored: pg reports "connection terminated" to the query; an 'error' with no listener
      // left (a client the pool already dropped) would end the process
      s.setTimeout(SILENT_MS, () => s.destroy());
      s.on('error', () => undefined);
      return s;
    },
  };
  if (c.passwordFile) pg.password = readPasswordFile(c.passwordFile);
  // asked at each connection, so a ~/.pgpass changed meanwhile counts; none found: the server says what it wants
  else pg.password = () => pgpassLookup(host ?? 'localhost', port, database ?? user ?? '', user ?? process.env.USER ?? '') ?? '';
  if (sslmode !== 'disable') {
    const ca = q.get('sslrootcert');
    if ((sslmode === 'verify-ca' || sslmode === 'verify-full') && !ca) throw usageError(`--store: sslmode=${sslmode} needs sslrootcert=/path/of/the/CA.pem`);
    let caPem: string | undefined;
    if (ca) {
      try { caPem = readFileSync(ca, 'utf8'); } catch (e) { throw usageError(`--store: sslrootcert ${ca}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`); }
    }
    pg.ssl = sslmode === 'require' ? { rejectUnauthorized: false }
      : {
        ca: caPem, rejectUnauthorized: true,
        // verify-ca trusts the CA but not the name; verify-full checks the name too (Node's default)
        ...(sslmode === 'verify-ca' ? { checkServerIdentity: () => undefined } : { servername: host && !host.startsWith('/') && !isIP(host) ? host : undefined }),
      };
  }
  const describe = `postgres://${user ? `${user}@` : ''}${url.host || `[${host}]`}/${database ?? ''}`;
  return { dialect: 'postgres', pg, describe };
}

/** The same location for a log line: never a password (there is none in it) and never query secrets. */
export const describeStore = (l: StoreLocation) => l.dialect === 'sqlite' ? `sqlite:${join(l.home, 'ferry.db')}` : l.describe;
