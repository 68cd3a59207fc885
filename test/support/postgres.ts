// A real PostgreSQL 15 cluster of the test's own (Debian's postgresql): initdb
// into a directory of the test, run by the postgres user, listening on the
// addresses given (and its unix socket in that directory), with a password
// user for Ferry and TLS from a CA of the test's own. stop() ends it and
// removes its directory; restart() is a real pg_ctl restart (fast mode: the
// clients' connections are cut, as a database failover would).
import { execa } from 'execa';
import { chmod, chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from './servers.js';

const BIN = '/usr/lib/postgresql/15/bin';

export interface Postgres {
  port: number; dir: string; socketDir: string; ca: string; user: string; db: string; password: string;
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** a query as the superuser over the unix socket (psql -At) */
  psql(query: string): Promise<string>;
}

const asPostgres = (cmd: string, args: string[]) => execa('runuser', ['-u', 'postgres', '--', cmd, ...args], { stdin: 'ignore' });

/** CA and a server certificate for these IP addresses (SAN), with openssl. */
async function makeCerts(dir: string, ips: string[]): Promise<{ ca: string; cert: string; key: string }> {
  const ca = join(dir, 'ca.pem'), caKey = join(dir, 'ca.key'), key = join(dir, 'server.key'), csr = join(dir, 'server.csr'), cert = join(dir, 'server.crt'), ext = join(dir, 'san.ext');
  await execa('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=ferry test CA']);
  await execa('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=ferry-test-pg']);
  await writeFile(ext, `subjectAltName=${ips.map(i => `IP:${i}`).join(',')}\n`);
  await execa('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext]);
  return { ca, cert, key };
}

export async function startPostgres(parent: string, listen: string[]): Promise<Postgres> {
  const dir = join(parent, 'pg');
  const data = join(dir, 'data');
  await mkdir(data, { recursive: true });
  const certs = await makeCerts(dir, listen);
  const { stdout: uid } = await execa('id', ['-u', 'postgres']);
  const { stdout: gid } = await execa('id', ['-g', 'postgres']);
  for (const p of [dir, data, certs.cert, certs.key]) await chown(p, Number(uid), Number(gid));
  await chmod(data, 0o700);
  await chmod(certs.key, 0o600);
  // the parent dirs must let the postgres user in
  await chmod(parent, 0o755);
  const port = await freePort();
  const password = `pw-${Math.random().toString(36).slice(2, 12)}`;
  const pwFile = join(dir, 'initpw');
  await writeFile(pwFile, `${password}\n`);
  await chown(pwFile, Number(uid), Number(gid));
  await asPostgres(join(BIN, 'initdb'), ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8']);
  await writeFile(join(data, 'postgresql.auto.conf'), [
    `listen_addresses = '${listen.join(',')}'`, `port = ${port}`, `unix_socket_directories = '${dir}'`,
    'ssl = on', `ssl_cert_file = '${certs.cert}'`, `ssl_key_file = '${certs.key}'`,
    'fsync = off', 'max_connections = 60', "password_encryption = 'scram-sha-256'", '',
  ].join('\n'));
  // the socket for the test's own superuser; every TCP client needs the password
  await writeFile(join(data, 'pg_hba.conf'), 'local all postgres trust\nhost all all 0.0.0.0/0 scram-sha-256\n');
  const pg: Postgres = {
    port, dir, socketDir: dir, ca: certs.ca, user: 'ferry', db: 'ferry', password,
    async psql(query) {
      const r = await asPostgres(join(BIN, '..', '..', '..', '..', 'bin', 'psql'), ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', 'ferry', '-At', '-c', query]);
      return r.stdout.trim();
    },
    async stop() {
      await asPostgres(join(BIN, 'pg_ctl'), ['-D', data, '-m', 'immediate', 'stop']).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
    async restart() {
      await asPostgres(join(BIN, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', 'restart', '-l', join(dir, 'log')]);
    },
  };
  try {
    await asPostgres(join(BIN, 'pg_ctl'), ['-D', data, '-w', '-l', join(dir, 'log'), 'start']);
    const su = (sql: string, db = 'postgres') => asPostgres('/usr/bin/psql', ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', db, '-v', 'ON_ERROR_STOP=1', '-At', '-c', sql]);
    await su(`CREATE ROLE ferry LOGIN PASSWORD '${password}'`);
    await su('CREATE DATABASE ferry OWNER ferry');
    pg.psql = async q => (await su(q, 'ferry')).stdout.trim();
  } catch (e) {
    await pg.stop();
    throw e;
  }
  return pg;
}
