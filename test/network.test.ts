// Network sources against real servers started here: qemu-nbd over TCP, a
// unix socket and TLS-PSK, nbdkit with x509 TLS, and tgtd (iSCSI with CHAP
// and mutual CHAP), all serving the
// data-disk fixture read-only without a copy. Each is converted, verified
// against the local file, probed; each failure is a typed error naming the
// endpoint; no secret shows on any command line or in any output; the served
// file is unchanged and nothing is left behind.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import { ferry, ferryProcess, guardMachine, sha256, tempDir } from './support/harness.js';
import { assertSameFiles } from './support/independent.js';
import { buildDataDisks } from './support/fixtures.js';
import { mutualChapShim } from '../src/sources/iscsi-mutual-chap.js';
import {
  freePort, makePskDir, makeX509Dirs, randomPassword, startNbdkit, startQemuNbd, startTgtd, stopAllServers, writeSecret,
  type IscsiServer, type Server, type X509Dirs,
} from './support/servers.js';

guardMachine();
const dir = await tempDir('ferrynet-');

const IQN = 'iqn.2026-11.io.ferry.test:mbr';
const CHAP_USER = 'alice';
/** the target's own account for mutual CHAP */
const MUTUAL_USER = 'target-srv';

/**
 * Every /proc/PID/cmdline holding one of the secrets, and every daemon's
 * environment holding one; whether a daemon with a secret object was seen,
 * and whether one ran with the mutual CHAP helper preloaded.
 */
async function scanCmdlines(secrets: string[]): Promise<{ hits: string[]; sawSecretObject: boolean; sawMutualHelper: boolean }> {
  const hits: string[] = [];
  let sawSecretObject = false, sawMutualHelper = false;
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const raw = await readFile(`/proc/${pid}/cmdline`).catch(() => undefined);
    if (!raw?.length) continue;
    const cmd = raw.toString('latin1');
    const daemon = /qemu-storage-d/.test(cmd);
    if (daemon && /secret,id=|tls-creds-psk|tls-creds-x509/.test(cmd)) sawSecretObject = true;
    for (const s of secrets) if (cmd.includes(s)) hits.push(`pid ${pid}: ${cmd.split('\0').join(' ').split(s).join('<SECRET>')}`);
    if (!daemon) continue;
    const env = (await readFile(`/proc/${pid}/environ`).catch(() => Buffer.alloc(0))).toString('latin1');
    if (/(^|\0)LD_PRELOAD=[^\0]*iscsi-mutual-chap/.test(env)) sawMutualHelper = true;
    for (const s of secrets) if (env.includes(s)) hits.push(`pid ${pid}: a secret in the daemon's environment`);
  }
  return { hits, sawSecretObject, sawMutualHelper };
}

/** Run ferry while scanning every process's command line; the secrets must appear nowhere. */
async function ferryWatched(args: string[], secrets: string[]) {
  const p = ferryProcess(args);
  let done = false;
  void p.finally(() => { done = true; });
  let scans = 0, sawSecretObject = false, sawMutualHelper = false;
  const hits: string[] = [];
  while (!done) {
    const s = await scanCmdlines(secrets);
    scans++;
    hits.push(...s.hits);
    sawSecretObject ||= s.sawSecretObject;
    sawMutualHelper ||= s.sawMutualHelper;
    await new Promise(r => setTimeout(r, 100));
  }
  const r = await p;
  const stdout = String(r.stdout), stderr = String(r.stderr);
  for (const s of secrets) {
    assert.ok(!stdout.includes(s), 'a secret appeared on stdout');
    assert.ok(!stderr.includes(s), 'a secret appeared on stderr');
  }
  assert.deepEqual(hits, [], 'a secret appeared on a command line');
  return { exitCode: r.exitCode ?? -1, stdout, stderr, scans, sawSecretObject, sawMutualHelper };
}

describe('network sources: NBD and iSCSI from real servers', () => {
  let mbr: string, mbrSum: string;
  let tcp: Server, unix: Server, tls: Server, x509Server: Server, qcowRaw: Server, tgt: IscsiServer;
  let psk: { dir: string; file: string; key: string };
  let x509: X509Dirs;
  let chapPassword: string, chapFile: string;
  let mutualPassword: string, mutualFile: string;
  let out: string;

  before(async () => {
    mbr = (await buildDataDisks()).mbr;
    mbrSum = await sha256(mbr);
    out = join(dir, 'out');
    await mkdir(out);
    psk = await makePskDir(join(dir, 'psk'));
    chapPassword = randomPassword(16);
    // written as `echo PASSWORD > file` would: the trailing newline is not part of the password
    chapFile = await writeSecret(join(dir, 'chap.secret'), `${chapPassword}\n`);
    mutualPassword = randomPassword(14);
    mutualFile = await writeSecret(join(dir, 'mutual.secret'), `${MUTUAL_USER}:${mutualPassword}\n`);
    x509 = await makeX509Dirs(join(dir, 'x509'));
    const qcow = join(dir, 'mbr.qcow2');
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', mbr, qcow]);
    // both NBD servers: nbdkit over TCP (plain and TLS-PSK), qemu-nbd on a unix socket and serving a qcow2 raw
    // tgtd also has an outgoing account: it proves itself to initiators that ask (mutual CHAP); plain CHAP is unchanged
    [tcp, unix, tls, x509Server, qcowRaw, tgt] = await Promise.all([
      startNbdkit({ file: mbr }),
      startQemuNbd({ file: mbr, socket: join(dir, 'nbd.sock') }),
      startNbdkit({ file: mbr, tlsPskFile: psk.file }),
      startNbdkit({ file: mbr, tlsCertsDir: x509.server }),
      startQemuNbd({ file: qcow, format: 'raw', exportName: 'q' }),
      startTgtd({ file: mbr, iqn: IQN, chap: { user: CHAP_USER, password: chapPassword, mutual: { user: MUTUAL_USER, password: mutualPassword } } }),
    ]);
  });

  after(stopAllServers);

  const chapUrl = () => `iscsi://${CHAP_USER}@127.0.0.1:${tgt.port}/${IQN}/1`;

  /** convert, then prove the result equivalent to the local file the server reads */
  const convertAndVerify = async (name: string, args: string[], secrets: string[] = []) => {
    const target = join(out, `${name}.qcow2`);
    const r = secrets.length
      ? await ferryWatched(['convert', ...args, target, '--json'], secrets)
      : { ...(await ferry(['convert', ...args, target, '--no-progress'])), scans: 0, sawSecretObject: false, sawMutualHelper: false };
    assert.equal(r.exitCode, 0, r.stderr);
    await assertSameFiles(mbr, target);
    const v = await ferry(['verify', mbr, target]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    assert.match(v.stdout, /^equivalent: p1 ext2.*p2 ext3.*p5 ext4.*p6 swap/);
    return r;
  };

  it('nbd://HOST:PORT/EXPORT over TCP: converts and verifies', async () => {
    await convertAndVerify('tcp', [tcp.url]);
  });

  it('nbd+unix:///EXPORT?socket=PATH: converts and verifies', async () => {
    await convertAndVerify('unix', [unix.url]);
  });

  it('nbds:// with --tls-psk-file: converts and verifies; the key is on no command line and in no output', async () => {
    const r = await convertAndVerify('tls', [tls.url, '--tls-psk-file', psk.file], [psk.key]);
    assert.ok(r.scans >= 3, `scanned ${r.scans} times`);
    assert.ok(r.sawSecretObject, 'the scan saw the daemon with its TLS credentials object');
    const events = r.stdout.trim().split('\n').map(l => JSON.parse(l) as { event: string });
    assert.ok(events.some(e => e.event === 'progress'), 'progress events were emitted');
    assert.equal(events.at(-1)!.event, 'result');
  });

  it('iscsi://USER@HOST:PORT/IQN/LUN with --chap-secret-file: converts and verifies; the password is on no command line and in no output', async () => {
    const r = await convertAndVerify('iscsi', [chapUrl(), '--chap-secret-file', chapFile], [chapPassword]);
    assert.ok(r.scans >= 3, `scanned ${r.scans} times`);
    assert.ok(r.sawSecretObject, 'the scan saw the daemon with its secret object');
    // and verify reads the LUN directly as well
    const v = await ferry(['verify', chapUrl(), join(out, 'iscsi.qcow2'), '--chap-secret-file', chapFile]);
    assert.equal(v.exitCode, 0, v.stderr);
    assert.ok(!v.stdout.includes(chapPassword) && !v.stderr.includes(chapPassword));
  });

  it('nbds:// with --tls-certs (x509): converts and verifies; nbd:// with a client certificate works too', async () => {
    const r = await convertAndVerify('x509', [x509Server.url, '--tls-certs', x509.client], []);
    assert.equal(r.exitCode, 0);
    const i = await ferry(['info', x509Server.url.replace(/^nbds:/, 'nbd:'), '--tls-certs', x509.clientWithCert, '--json']);
    assert.equal(i.exitCode, 0, i.stderr);
    assert.equal((JSON.parse(i.stdout) as { partitionTable: { label: string } }).partitionTable.label, 'dos');
  });

  it('iSCSI with --mutual-chap-secret-file: converts and verifies; neither password is on a command line, in a daemon environment or in output', async () => {
    const r = await convertAndVerify('mutual', [chapUrl(), '--chap-secret-file', chapFile, '--mutual-chap-secret-file', mutualFile], [chapPassword, mutualPassword]);
    assert.ok(r.scans >= 3, `scanned ${r.scans} times`);
    assert.ok(r.sawSecretObject, 'the scan saw the daemon with its secret object');
    assert.ok(r.sawMutualHelper, 'the scan saw the daemon with the mutual CHAP helper preloaded');
    const v = await ferry(['verify', chapUrl(), join(out, 'mutual.qcow2'), '--chap-secret-file', chapFile, '--mutual-chap-secret-file', mutualFile]);
    assert.equal(v.exitCode, 0, v.stderr);
    for (const s of [chapPassword, mutualPassword]) assert.ok(!v.stdout.includes(s) && !v.stderr.includes(s));
  });

  it('a qcow2 served as raw bytes is read as qcow2', async () => {
    const url = qcowRaw.url;
    const i = await ferry(['info', url, '--json']);
    assert.equal(i.exitCode, 0, i.stderr);
    const info = JSON.parse(i.stdout) as { format: string; virtualSize: number; partitionTable: { label: string } };
    assert.equal(info.format, 'qcow2');
    assert.equal(info.virtualSize, 600 * 2 ** 20);
    assert.equal(info.partitionTable.label, 'dos');
    const v = await ferry(['verify', url, mbr]);
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
  });

  it('probe lists NBD exports with sizes, partition tables and file systems', async () => {
    const base = tcp.url.replace(/\/disk$/, '');
    const r = await ferry(['probe', base, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const p = JSON.parse(r.stdout) as { kind: string; exports: { name: string; size: number; url: string; disk: { partitionTable: { label: string }; partitions: { fs?: string }[] } }[] };
    assert.equal(p.kind, 'nbd');
    assert.deepEqual(p.exports.map(e => [e.name, e.size, e.url]), [['disk', 600 * 2 ** 20, tcp.url]]);
    assert.equal(p.exports[0].disk.partitionTable.label, 'dos');
    assert.deepEqual(p.exports[0].disk.partitions.map(x => x.fs).filter(Boolean), ['ext2', 'ext3', 'ext4', 'swap']);
    const t = await ferry(['probe', tls.url.replace(/\/disk$/, ''), '--tls-psk-file', psk.file]);
    assert.equal(t.exitCode, 0, t.stderr);
    assert.match(t.stdout, /export 'disk': 600\.0 MiB/);
    assert.ok(!t.stdout.includes(psk.key));
  });

  it('probe lists the LUNs of an iSCSI portal with sizes, partition tables and file systems', async () => {
    const r = await ferry(['probe', `iscsi://${CHAP_USER}@127.0.0.1:${tgt.port}`, '--chap-secret-file', chapFile, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.ok(!r.stdout.includes(chapPassword) && !r.stderr.includes(chapPassword));
    const p = JSON.parse(r.stdout) as { targets: { iqn: string; luns: { lun: number; type: string; size?: number; url: string; disk?: { partitions: { fs?: string }[] } }[] }[] };
    assert.deepEqual(p.targets.map(t => t.iqn), [IQN]);
    const disk = p.targets[0].luns.find(l => l.lun === 1)!;
    assert.equal(disk.type, 'DIRECT_ACCESS');
    assert.equal(disk.size, 600 * 2 ** 20);
    assert.equal(disk.url, chapUrl());
    assert.deepEqual(disk.disk!.partitions.map(x => x.fs).filter(Boolean), ['ext2', 'ext3', 'ext4', 'swap']);
    const text = await ferry(['probe', chapUrl(), '--chap-secret-file', chapFile]);
    assert.equal(text.exitCode, 0, text.stderr);
    assert.match(text.stdout, /LUN 1: DIRECT_ACCESS, 600\.0 MiB/);
  });

  it('probe with x509 TLS lists the exports and reads them', async () => {
    const r = await ferry(['probe', x509Server.url.replace(/\/disk$/, ''), '--tls-certs', x509.client, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const p = JSON.parse(r.stdout) as { exports: { name: string; size: number; disk?: { partitions: { fs?: string }[] }; error?: unknown }[] };
    assert.deepEqual(p.exports.map(e => [e.name, e.size]), [['disk', 600 * 2 ** 20]]);
    assert.equal(p.exports[0].error, undefined);
    assert.deepEqual(p.exports[0].disk!.partitions.map(x => x.fs).filter(Boolean), ['ext2', 'ext3', 'ext4', 'swap']);
  });

  it('probe with mutual CHAP lists the LUNs and reads them', async () => {
    const r = await ferry(['probe', `iscsi://${CHAP_USER}@127.0.0.1:${tgt.port}`, '--chap-secret-file', chapFile, '--mutual-chap-secret-file', mutualFile, '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    for (const s of [chapPassword, mutualPassword]) assert.ok(!r.stdout.includes(s) && !r.stderr.includes(s));
    const p = JSON.parse(r.stdout) as { targets: { iqn: string; error?: unknown; luns: { lun: number; size?: number; error?: unknown; disk?: { partitions: { fs?: string }[] } }[] }[] };
    assert.deepEqual(p.targets.map(t => [t.iqn, t.error]), [[IQN, undefined]]);
    const disk = p.targets[0].luns.find(l => l.lun === 1)!;
    assert.equal(disk.error, undefined);
    assert.equal(disk.size, 600 * 2 ** 20);
    assert.deepEqual(disk.disk!.partitions.map(x => x.fs).filter(Boolean), ['ext2', 'ext3', 'ext4', 'swap']);
  });

  describe('errors: typed, naming the endpoint, exit codes, nothing left', () => {
    /** convert into an empty directory; the error's code, exit status and message; the directory stays empty */
    const fails = async (args: string[], code: string, exit: number) => {
      const o = join(out, `err-${Math.random().toString(36).slice(2)}`);
      await mkdir(o);
      const r = await ferry(['convert', args[0], join(o, 't.qcow2'), ...args.slice(1)]);
      assert.equal(r.exitCode, exit, r.stderr);
      assert.match(r.stderr, new RegExp(`^ferry: ${code}: `, 'm'));
      assert.deepEqual(await readdir(o), [], 'no target or partial target left');
      for (const s of [chapPassword, mutualPassword, psk.key]) assert.ok(!r.stderr.includes(s) && !r.stdout.includes(s), 'no secret in the message');
      return r.stderr;
    };

    it('nothing listening: SOURCE_UNREACHABLE, exit 9, naming host and port or socket', async () => {
      const port = await freePort();
      assert.match(await fails([`nbd://127.0.0.1:${port}/disk`], 'SOURCE_UNREACHABLE', 9), new RegExp(`127\\.0\\.0\\.1:${port}.*connection refused`));
      const iport = await freePort();
      assert.match(await fails([`iscsi://127.0.0.1:${iport}/${IQN}/1`], 'SOURCE_UNREACHABLE', 9), new RegExp(`iSCSI portal 127\\.0\\.0\\.1:${iport}`));
      const sock = join(dir, 'nobody.sock');
      assert.match(await fails([`nbd+unix:///disk?socket=${sock}`], 'SOURCE_UNREACHABLE', 9), new RegExp(sock.replace(/[/.]/g, '\\$&')));
    });

    it('wrong CHAP password: AUTH_FAILED, exit 10, "authentication failed", without the password', async () => {
      const wrong = 'Wr0ngPassw0rd123';
      const f = await writeSecret(join(dir, 'wrong.secret'), wrong);
      const msg = await fails([chapUrl(), '--chap-secret-file', f], 'AUTH_FAILED', 10);
      assert.match(msg, /authentication failed/);
      assert.match(msg, new RegExp(`${IQN}.*127\\.0\\.0\\.1:${tgt.port}.*'${CHAP_USER}'`));
      assert.ok(!msg.includes(wrong));
    });

    it('CHAP required but no secret: AUTH_REQUIRED, exit 10', async () => {
      const msg = await fails([`iscsi://127.0.0.1:${tgt.port}/${IQN}/1`], 'AUTH_REQUIRED', 10);
      assert.match(msg, /requires CHAP/);
      assert.match(msg, /--chap-secret-file/);
    });

    it('a user name without a secret file, or a secret file without a user name: USAGE, exit 2', async () => {
      await fails([chapUrl()], 'USAGE', 2);
      await fails([`iscsi://127.0.0.1:${tgt.port}/${IQN}/1`, '--chap-secret-file', chapFile], 'USAGE', 2);
      await fails([tls.url], 'USAGE', 2); // nbds:// without --tls-psk-file
    });

    it('a LUN, target or export that does not exist: exit 3, listing those that do', async () => {
      const lun = await fails([`iscsi://${CHAP_USER}@127.0.0.1:${tgt.port}/${IQN}/7`, '--chap-secret-file', chapFile], 'LUN_MISSING', 3);
      assert.match(lun, new RegExp(`${IQN} at 127\\.0\\.0\\.1:${tgt.port} has no LUN 7; its disk LUNs: 1$`, 'm'));
      const target = await fails([`iscsi://${CHAP_USER}@127.0.0.1:${tgt.port}/iqn.2026-11.io.ferry.test:nope/1`, '--chap-secret-file', chapFile], 'ISCSI_TARGET_MISSING', 3);
      assert.match(target, new RegExp(`127\\.0\\.0\\.1:${tgt.port} has no target iqn\\.2026-11\\.io\\.ferry\\.test:nope; its targets: ${IQN}`));
      const exp = await fails([tcp.url.replace(/disk$/, 'nope')], 'EXPORT_MISSING', 3);
      assert.match(exp, /127\.0\.0\.1:\d+ has no export 'nope'; its exports: 'disk'/);
      const expUnix = await fails([unix.url.replace('/disk?', '/nope?')], 'EXPORT_MISSING', 3);
      assert.match(expUnix, /NBD socket \S+nbd\.sock has no export 'nope'; its exports: 'disk'/);
      const expTls = await fails([tls.url.replace(/disk$/, 'nope'), '--tls-psk-file', psk.file], 'EXPORT_MISSING', 3);
      assert.match(expTls, /its exports: 'disk'/);
    });

    it('TLS: required but not used, wrong key, not offered: typed, exit 10', async () => {
      assert.match(await fails([tls.url.replace(/^nbds:/, 'nbd:')], 'AUTH_REQUIRED', 10), /requires TLS/);
      const other = await makePskDir(join(dir, 'otherpsk'));
      const msg = await fails([tls.url, '--tls-psk-file', other.file], 'AUTH_FAILED', 10);
      assert.match(msg, /authentication failed: the NBD server at 127\.0\.0\.1:\d+ refused the TLS pre-shared key of user 'ferry'/);
      assert.ok(!msg.includes(other.key));
      await fails([tcp.url.replace(/^nbd:/, 'nbds:'), '--tls-psk-file', psk.file], 'TLS_UNAVAILABLE', 10);
    });

    it('x509: a server certificate not signed by ca-cert.pem is AUTH_FAILED, exit 10, naming the server and the CA file; probe says the same', async () => {
      const port = new URL(x509Server.url).port;
      const msg = await fails([x509Server.url, '--tls-certs', x509.wrongCa], 'AUTH_FAILED', 10);
      assert.match(msg, new RegExp(`the NBD server at 127\\.0\\.0\\.1:${port} presented a certificate not signed by ${x509.wrongCa.replace(/[/.]/g, '\\$&')}/ca-cert\\.pem`));
      const p = await ferry(['probe', x509Server.url.replace(/\/disk$/, ''), '--tls-certs', x509.wrongCa]);
      assert.equal(p.exitCode, 10, p.stderr);
      assert.match(p.stderr, /^ferry: AUTH_FAILED: .*presented a certificate not signed by/m);
    });

    it('x509: bad --tls-certs directories and options are refused before connecting', async () => {
      const both = await fails([x509Server.url, '--tls-certs', x509.client, '--tls-psk-file', psk.file], 'USAGE', 2);
      assert.match(both, /either --tls-psk-file .* or --tls-certs/);
      assert.match(await fails([x509Server.url, '--tls-certs', join(dir, 'nowhere')], 'TLS_CERTS_INVALID', 2), /does not exist/);
      const noCa = join(dir, 'x509-noca');
      await mkdir(noCa);
      assert.match(await fails([x509Server.url, '--tls-certs', noCa], 'TLS_CERTS_INVALID', 2), /no ca-cert\.pem/);
      const openKey = join(dir, 'x509-openkey');
      await mkdir(openKey);
      for (const f of ['ca-cert.pem', 'client-cert.pem']) await writeSecret(join(openKey, f), await readFile(join(x509.clientWithCert, f), 'utf8'), 0o644);
      await writeSecret(join(openKey, 'client-key.pem'), await readFile(join(x509.clientWithCert, 'client-key.pem'), 'utf8'), 0o640);
      assert.match(await fails([x509Server.url, '--tls-certs', openKey], 'SECRET_FILE_UNSAFE', 2), /client-key\.pem .*chmod 600/);
      assert.match(await fails([chapUrl(), '--chap-secret-file', chapFile, '--tls-certs', x509.client], 'USAGE', 2), /--tls-certs is for nbd/);
    });

    it('mutual CHAP: a target that cannot prove itself is AUTH_FAILED, exit 10, without the password; probe too', async () => {
      const wrong = randomPassword(14);
      const f = await writeSecret(join(dir, 'wrong-mutual.secret'), `${MUTUAL_USER}:${wrong}\n`);
      const msg = await fails([chapUrl(), '--chap-secret-file', chapFile, '--mutual-chap-secret-file', f], 'AUTH_FAILED', 10);
      assert.match(msg, new RegExp(`iSCSI target ${IQN} at 127\\.0\\.0\\.1:${tgt.port} failed to authenticate itself`));
      assert.match(msg, /--mutual-chap-secret-file/);
      assert.ok(!msg.includes(wrong));
      const p = await ferry(['probe', `iscsi://${CHAP_USER}@127.0.0.1:${tgt.port}`, '--chap-secret-file', chapFile, '--mutual-chap-secret-file', f]);
      assert.equal(p.exitCode, 10, p.stdout + p.stderr);
      assert.match(p.stderr, /^ferry: AUTH_FAILED: .*failed to authenticate itself/m);
      assert.ok(!p.stdout.includes(wrong) && !p.stderr.includes(wrong));
      // a target without an outgoing account cannot take part: tgtd refuses the login itself
      const plain = await startTgtd({ file: mbr, iqn: IQN, chap: { user: CHAP_USER, password: chapPassword } });
      const none = await fails([`iscsi://${CHAP_USER}@127.0.0.1:${plain.port}/${IQN}/1`, '--chap-secret-file', chapFile, '--mutual-chap-secret-file', mutualFile], 'AUTH_FAILED', 10);
      assert.match(none, /with mutual CHAP.*outgoing account/);
      await plain.stop();
    });

    it('mutual CHAP: if the daemon did not load the helper, MUTUAL_CHAP_UNAVAILABLE, exit 7, before the disk is used; nothing left', async () => {
      // a helper the loader ignores ("cannot be preloaded: ignored") stands in for any preload that did not take
      const cache = join(dir, 'cache');
      await mkdir(join(cache, 'native'), { recursive: true, mode: 0o755 });
      await writeSecret(join(cache, 'native', basename(await mutualChapShim())), 'not an ELF object', 0o755);
      const o = join(out, 'no-helper');
      await mkdir(o);
      const r = await ferry(['convert', chapUrl(), join(o, 't.qcow2'), '--chap-secret-file', chapFile, '--mutual-chap-secret-file', mutualFile],
        { env: { FERRY_CACHE: cache } });
      assert.equal(r.exitCode, 7, r.stderr);
      assert.match(r.stderr, /^ferry: MUTUAL_CHAP_UNAVAILABLE: .*did not load the helper/m);
      assert.deepEqual(await readdir(o), []);
    });

    it('--mutual-chap-secret-file without --chap-secret-file, or with NBD: USAGE, exit 2', async () => {
      assert.match(await fails([`iscsi://127.0.0.1:${tgt.port}/${IQN}/1`, '--mutual-chap-secret-file', mutualFile], 'USAGE', 2), /needs --chap-secret-file/);
      assert.match(await fails([tcp.url, '--mutual-chap-secret-file', mutualFile], 'USAGE', 2), /is for iscsi:\/\//);
      const bad = await writeSecret(join(dir, 'mutual-bad.secret'), `${mutualPassword}\n`);
      assert.match(await fails([chapUrl(), '--chap-secret-file', chapFile, '--mutual-chap-secret-file', bad], 'SECRET_FILE_INVALID', 2), /USER:PASSWORD/);
      const open = await writeSecret(join(dir, 'mutual-open.secret'), `${MUTUAL_USER}:${mutualPassword}\n`, 0o644);
      await fails([chapUrl(), '--chap-secret-file', chapFile, '--mutual-chap-secret-file', open], 'SECRET_FILE_UNSAFE', 2);
    });

    it('a secret file readable by others or by the group is refused: SECRET_FILE_UNSAFE, exit 2', async () => {
      const world = await writeSecret(join(dir, 'world.secret'), chapPassword, 0o644);
      assert.match(await fails([chapUrl(), '--chap-secret-file', world], 'SECRET_FILE_UNSAFE', 2), /chmod 600/);
      const group = await writeSecret(join(dir, 'group.secret'), chapPassword, 0o640);
      await fails([chapUrl(), '--chap-secret-file', group], 'SECRET_FILE_UNSAFE', 2);
      const pskWorld = await writeSecret(join(dir, 'world.psk'), `ferry:${psk.key}\n`, 0o604);
      await fails([tls.url, '--tls-psk-file', pskWorld], 'SECRET_FILE_UNSAFE', 2);
    });

    it('--json puts the error, with host, port and target, as the last stdout line', async () => {
      const r = await ferry(['info', `iscsi://${CHAP_USER}@127.0.0.1:${tgt.port}/${IQN}/7`, '--chap-secret-file', chapFile, '--json']);
      assert.equal(r.exitCode, 3);
      const e = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
      assert.equal(e.code, 'LUN_MISSING');
      assert.equal(e.host, '127.0.0.1');
      assert.equal(e.port, tgt.port);
      assert.equal(e.target, IQN);
      assert.deepEqual(e.available, ['1']);
    });
  });

  it('the served file is unchanged', async () => {
    assert.equal(await sha256(mbr), mbrSum);
  });
});

// a connection dropped mid-copy (NBD and iSCSI, with and without a restart): test/network-cut.test.ts
