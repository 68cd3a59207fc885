// Real network servers for the tests: qemu-nbd (TCP, unix socket, TLS-PSK),
// nbdkit (TCP, TLS-PSK, x509 TLS) and tgtd (iSCSI with CHAP, mutual CHAP), on 127.0.0.1 only, each a child process of the
// test. Every server started is remembered; stopAllServers() stops them all
// (call it in an `after` hook: it also runs when a test failed), and a last
// synchronous kill runs should the test process exit without it.
import { execa, type ResultPromise } from 'execa';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

export interface Server {
  /** the URL a client gives Ferry */
  url: string;
  pid: number;
  stop(): Promise<void>;
}

const running = new Set<Server>();

process.on('exit', () => {
  for (const s of running) try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ }
});

export async function stopAllServers(): Promise<void> {
  for (const s of [...running]) await s.stop();
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

function canConnect(target: { port: number; host?: string } | { path: string }): Promise<boolean> {
  return new Promise(resolve => {
    const s = 'path' in target ? connect({ path: target.path }) : connect({ host: target.host ?? '127.0.0.1', port: target.port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => { s.destroy(); resolve(false); });
  });
}

async function waitListening(child: ResultPromise, target: { port: number; host?: string } | { path: string }, what: string): Promise<void> {
  let exited = false;
  void child.then(() => { exited = true; });
  for (let i = 0; i < 200; i++) {
    if (exited) {
      const r = await child;
      throw new Error(`${what} exited before listening (exit ${r.exitCode}): ${String(r.stderr).trim()}`);
    }
    if (await canConnect(target)) return;
    await sleep(50);
  }
  throw new Error(`${what} did not listen within 10 s`);
}

/** Stop a child: SIGTERM, then SIGKILL after a grace period; resolves once it is reaped. */
async function stopChild(child: ResultPromise, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) { await child; return; }
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await child;
  clearTimeout(timer);
}

function track(url: string, child: ResultPromise, stop: () => Promise<void>): Server {
  let stopping: Promise<void> | undefined;
  const server: Server = {
    url, pid: child.pid!,
    stop: () => (stopping ??= stop().finally(() => running.delete(server))),
  };
  running.add(server);
  return server;
}

/** The server once its child listens; one that never does is stopped, and the error thrown. */
async function whenListening(server: Server, child: ResultPromise, target: { port: number; host?: string } | { path: string }, what: string): Promise<Server> {
  try {
    await waitListening(child, target, what);
  } catch (e) {
    await server.stop();
    throw e;
  }
  return server;
}

export interface NbdOptions {
  /** the file served, read-only, as it is (no copy) */
  file: string;
  exportName?: string;
  /** qemu-nbd's -f; 'raw' serves a qcow2 file's bytes as they are */
  format?: string;
  /** listen on this unix socket instead of TCP */
  socket?: string;
  /** require TLS with the pre-shared keys in this directory (DIR/keys.psk) */
  tlsPskDir?: string;
  /** listen on this address instead of 127.0.0.1 (a test's own, e.g. one its network namespaces reach) */
  bind?: string;
}

/** qemu-nbd serving a file read-only on 127.0.0.1:<free port> or on a unix socket, persistent and shared. */
export async function startQemuNbd(o: NbdOptions): Promise<Server> {
  const name = o.exportName ?? 'disk';
  const args = ['--read-only', '--persistent', '--shared=8', '-f', o.format ?? 'raw', '-x', name];
  let url: string;
  let target: { port: number; host?: string } | { path: string };
  if (o.socket) {
    args.push('-k', o.socket);
    url = `nbd+unix:///${name}?socket=${o.socket}`;
    target = { path: o.socket };
  } else {
    const port = await freePort();
    const bind = o.bind ?? '127.0.0.1';
    args.push('-b', bind, '-p', String(port));
    url = `${o.tlsPskDir ? 'nbds' : 'nbd'}://${bind}:${port}/${name}`;
    target = { port, host: bind };
  }
  if (o.tlsPskDir) args.push('--object', `tls-creds-psk,id=tls0,endpoint=server,dir=${o.tlsPskDir}`, '--tls-creds', 'tls0');
  args.push(o.file);
  const child = execa('qemu-nbd', args, { reject: false, stdin: 'ignore', buffer: true });
  const server = track(url, child, async () => {
    await stopChild(child);
    if (o.socket) await rm(o.socket, { force: true });
  });
  return whenListening(server, child, target, `qemu-nbd ${url}`);
}

export interface NbdkitOptions {
  /** the file served, read-only, as it is (no copy) */
  file: string;
  exportName?: string;
  /** require TLS with this pre-shared key file ("user:hexkey" lines) */
  tlsPskFile?: string;
  /** require x509 TLS with the certificates in this directory (ca-cert.pem, server-cert.pem, server-key.pem) */
  tlsCertsDir?: string;
  /** listen on this port (a restart on the port a killed server had) instead of a free one */
  port?: number;
  /** listen on this address (default 127.0.0.1) */
  bind?: string;
  /** limit the server's bandwidth (nbdkit's rate filter, bits per second: '400M') */
  rate?: string;
}

/**
 * nbdkit's file plugin on 127.0.0.1:<free port>, read-only, offering exactly
 * one export name (strict: any other name is refused, as a real server would).
 * nbdkit sets TCP_NODELAY; qemu-nbd 7.2 does not, and its large replies stall
 * on loopback (a full read is ~25x slower), so the TCP tests use nbdkit.
 */
export async function startNbdkit(o: NbdkitOptions): Promise<Server> {
  const name = o.exportName ?? 'disk';
  const port = o.port ?? await freePort();
  const bind = o.bind ?? '127.0.0.1';
  const args = ['--foreground', '--exit-with-parent', '--read-only', '-i', bind, '-p', String(port)];
  if (o.tlsPskFile) args.push('--tls=require', `--tls-psk=${o.tlsPskFile}`);
  if (o.tlsCertsDir) args.push('--tls=require', `--tls-certificates=${o.tlsCertsDir}`);
  if (o.rate) args.push('--filter=rate');
  args.push('--filter=exportname', 'file', o.file, `exportname=${name}`, 'exportname-strict=true', 'exportname-list=explicit');
  if (o.rate) args.push(`rate=${o.rate}`);
  const child = execa('nbdkit', args, { reject: false, stdin: 'ignore', buffer: true });
  const url = `${o.tlsPskFile || o.tlsCertsDir ? 'nbds' : 'nbd'}://${bind}:${port}/${name}`;
  const server = track(url, child, () => stopChild(child));
  return whenListening(server, child, { port, host: bind }, `nbdkit ${url}`);
}

export interface IscsiOptions {
  /** the file served as LUN 1, read-only, as it is (no copy) */
  file: string;
  iqn: string;
  /** an incoming CHAP account; with `mutual`, also the target's own (outgoing) account for mutual CHAP */
  chap?: { user: string; password: string; mutual?: { user: string; password: string } };
  /** listen on this port (a restart on the same address) instead of a free one */
  port?: number;
}

export interface IscsiServer extends Server {
  port: number;
  iqn: string;
}

/**
 * tgtd in the foreground on 127.0.0.1:<free port> (a non-default port, so a
 * system tgtd on 3260 does not matter), with its own management socket,
 * serving one read-only LUN, optionally behind a CHAP account.
 */
export async function startTgtd(o: IscsiOptions): Promise<IscsiServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startTgtdOnce(o);
    } catch (e) {
      // a port or management socket taken meanwhile: try another pair
      if (attempt >= 3 || !/exited before listening/.test((e as Error).message)) throw e;
    }
  }
}

async function startTgtdOnce(o: IscsiOptions): Promise<IscsiServer> {
  const port = o.port ?? await freePort();
  // management socket /var/run/tgtd/socket.<control>; tgtd takes 0..32767
  const control = 1000 + Math.floor(Math.random() * 31000);
  const child = execa('tgtd', ['-f', '-C', String(control), '--iscsi', `portal=127.0.0.1:${port}`],
    { reject: false, stdin: 'ignore', buffer: true });
  const adm = (...a: string[]) => execa('tgtadm', ['-C', String(control), '--lld', 'iscsi', ...a], { stdin: 'ignore' });
  const server = track(`iscsi://127.0.0.1:${port}/${o.iqn}/1`, child, async () => {
    // tgtd ignores SIGTERM while it has targets: delete them, then ask the daemon to exit
    if (child.exitCode === null) {
      await execa('tgtadm', ['-C', String(control), '--lld', 'iscsi', '--mode', 'target', '--op', 'delete', '--force', '--tid', '1'], { reject: false, stdin: 'ignore' });
      await execa('tgtadm', ['-C', String(control), '--mode', 'system', '--op', 'delete'], { reject: false, stdin: 'ignore' });
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    await child;
    clearTimeout(timer);
    await rm(`/var/run/tgtd/socket.${control}`, { force: true });
    await rm(`/var/run/tgtd/socket.${control}.lock`, { force: true });
  });
  try {
    await waitListening(child, { port }, `tgtd on port ${port}`);
    await adm('--mode', 'target', '--op', 'new', '--tid', '1', '--targetname', o.iqn);
    await adm('--mode', 'logicalunit', '--op', 'new', '--tid', '1', '--lun', '1', '--backing-store', o.file);
    await adm('--mode', 'logicalunit', '--op', 'update', '--tid', '1', '--lun', '1', '--params', 'readonly=1');
    await adm('--mode', 'target', '--op', 'bind', '--tid', '1', '--initiator-address', '127.0.0.1');
    if (o.chap) {
      // test-server set-up only: tgtadm takes the account password as an argument (before any conversion runs)
      await adm('--mode', 'account', '--op', 'new', '--user', o.chap.user, '--password', o.chap.password);
      await adm('--mode', 'account', '--op', 'bind', '--tid', '1', '--user', o.chap.user);
      if (o.chap.mutual) {
        await adm('--mode', 'account', '--op', 'new', '--user', o.chap.mutual.user, '--password', o.chap.mutual.password);
        await adm('--mode', 'account', '--op', 'bind', '--tid', '1', '--user', o.chap.mutual.user, '--outgoing');
      }
    }
  } catch (e) {
    await server.stop();
    throw e;
  }
  return Object.assign(server, { port, iqn: o.iqn });
}

/** A TLS-PSK key directory (0700) with keys.psk (0600): "user:hexkey". Returns the dir and the key. */
export async function makePskDir(dir: string, user = 'ferry'): Promise<{ dir: string; file: string; key: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const key = randomBytes(32).toString('hex');
  const file = join(dir, 'keys.psk');
  await writeFile(file, `${user}:${key}\n`, { mode: 0o600 });
  return { dir, file, key };
}

/** A secret file with the given text and mode. */
export async function writeSecret(path: string, text: string, mode = 0o600): Promise<string> {
  await writeFile(path, text, { mode });
  await chmod(path, mode);
  return path;
}

/** A random password of letters and digits (CHAP secrets: 12–16 bytes for tgtd). */
export const randomPassword = (n = 16) => randomBytes(n).toString('base64').replace(/[^A-Za-z0-9]/g, '').padEnd(n, 'x').slice(0, n);

export interface X509Dirs {
  /** nbdkit --tls-certificates: ca-cert.pem, server-cert.pem, server-key.pem (for 127.0.0.1 and localhost) */
  server: string;
  /** a client directory holding only ca-cert.pem */
  client: string;
  /** a client directory with ca-cert.pem, client-cert.pem and client-key.pem (0600) */
  clientWithCert: string;
  /** a client directory whose ca-cert.pem is another CA's: the server's certificate is not signed by it */
  wrongCa: string;
}

/** A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl (EC P-256, valid 2 days). */
export async function makeX509Dirs(dir: string): Promise<X509Dirs> {
  const d = (name: string) => join(dir, name);
  for (const n of ['ca', 'other-ca', 'server', 'client', 'client-cert', 'wrong-ca']) await mkdir(d(n), { recursive: true, mode: 0o700 });
  const ssl = (...a: string[]) => execa('openssl', a, { stdin: 'ignore' });
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = async (at: string, cn: string) => ssl('req', '-x509', ...key, '-keyout', join(at, 'ca-key.pem'), '-out', join(at, 'ca-cert.pem'),
    '-days', '2', '-subj', `/CN=${cn}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  await ca(d('ca'), 'Ferry test CA');
  await ca(d('other-ca'), 'Ferry other CA');
  const sign = async (name: string, cn: string, ext: string) => {
    const csr = d(`${name}.csr`), extFile = d(`${name}.ext`);
    await writeFile(extFile, `${ext}\n`);
    await ssl('req', ...key, '-keyout', d(`${name}-key.pem`), '-out', csr, '-subj', `/CN=${cn}`);
    await ssl('x509', '-req', '-in', csr, '-CA', join(d('ca'), 'ca-cert.pem'), '-CAkey', join(d('ca'), 'ca-key.pem'), '-CAcreateserial',
      '-out', d(`${name}-cert.pem`), '-days', '2', '-extfile', extFile);
  };
  await sign('server', 'localhost', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth');
  await sign('client', 'ferry-client', 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth');
  const copy = async (from: string, to: string, mode = 0o644) => { await writeFile(to, await readFile(from), { mode }); await chmod(to, mode); };
  const caCert = join(d('ca'), 'ca-cert.pem');
  await copy(caCert, join(d('server'), 'ca-cert.pem'));
  await copy(d('server-cert.pem'), join(d('server'), 'server-cert.pem'));
  await copy(d('server-key.pem'), join(d('server'), 'server-key.pem'), 0o600);
  await copy(caCert, join(d('client'), 'ca-cert.pem'));
  await copy(caCert, join(d('client-cert'), 'ca-cert.pem'));
  await copy(d('client-cert.pem'), join(d('client-cert'), 'client-cert.pem'));
  await copy(d('client-key.pem'), join(d('client-cert'), 'client-key.pem'), 0o600);
  await copy(join(d('other-ca'), 'ca-cert.pem'), join(d('wrong-ca'), 'ca-cert.pem'));
  return { server: d('server'), client: d('client'), clientWithCert: d('client-cert'), wrongCa: d('wrong-ca') };
}
