// The end-to-end promise over the network: the real Debian 12 test guest,
// served by tgtd (iSCSI with CHAP), nbdkit over TCP, qemu-nbd on a unix
// socket and nbdkit with TLS required (PSK), is converted from each, proved
// equivalent with `ferry verify` against the file the servers read. What
// differs between the four is only how the bytes arrived, so one iSCSI and one
// NBD result boot (TCG, side by side) with their root UUID and hostname, and
// the other two are judged by the independent comparison instead. The served
// file is byte-for-byte unchanged afterwards.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { readMarker } from './support/marker.js';
import { buildDebianGuest } from './support/fixtures.js';
import { makePskDir, randomPassword, startNbdkit, startQemuNbd, startTgtd, stopAllServers, writeSecret } from './support/servers.js';
import { bootImage } from '../src/verify/boot.js';
import { independentCompare } from './support/independent.js';

const ROOT_UUID = '1b7c4f2a-9d3e-4e51-8a60-f0e1d2c3b4a5';
/** one iSCSI and one NBD result are booted; the other two are compared independently */
const BOOTED = ['iscsi-chap', 'nbds-psk'];

guardMachine();
const dir = await tempDir('ferrynetguest-');

describe('the Debian guest converted from network sources boots', () => {
  let guest: string, guestSum: string;
  const sources: { name: string; url: string; args: string[] }[] = [];

  before(async () => {
    guest = await buildDebianGuest();
    guestSum = await sha256(guest);
    const psk = await makePskDir(join(dir, 'psk'));
    const password = randomPassword(16);
    const chapFile = await writeSecret(join(dir, 'chap.secret'), `${password}\n`);
    const iqn = 'iqn.2026-11.io.ferry.test:guest';
    const [tgt, tcp, unix, tls] = await Promise.all([
      startTgtd({ file: guest, iqn, chap: { user: 'ops', password } }),
      startNbdkit({ file: guest }),
      startQemuNbd({ file: guest, socket: join(dir, 'guest.sock') }),
      startNbdkit({ file: guest, tlsPskFile: psk.file }),
    ]);
    sources.push(
      { name: 'iscsi-chap', url: tgt.url.replace('iscsi://', 'iscsi://ops@'), args: ['--chap-secret-file', chapFile] },
      { name: 'nbd-tcp', url: tcp.url, args: [] },
      { name: 'nbd-unix', url: unix.url, args: [] },
      { name: 'nbds-psk', url: tls.url, args: ['--tls-psk-file', psk.file] },
    );
  });

  after(async () => {
    await stopAllServers();
    assert.equal(await sha256(guest), guestSum, 'the served guest image was never written');
  });

  const targets = new Map<string, string>();

  it('converts from every server and each result verifies against the file the servers read', async () => {
    for (const s of sources) {
      const target = join(dir, `${s.name}.qcow2`);
      const r = await ferry(['convert', s.url, target, ...s.args, '--no-progress']);
      assert.equal(r.exitCode, 0, `${s.name}: ${r.stderr}`);
      assert.match(r.stdout, /verified: equivalent to the source/);
      const v = await ferry(['verify', guest, target]);
      assert.equal(v.exitCode, 0, `${s.name}: ${v.stdout}${v.stderr}`);
      assert.match(v.stdout, /^equivalent: p1 ext4 \(\d+ entries\), p2 blocks, p5 swap|^equivalent: p1 ext4/);
      targets.set(s.name, target);
    }
  });

  it('the iSCSI and the NBD-over-TLS results boot to userspace with the same root UUID and hostname', async () => {
    assert.equal(targets.size, sources.length, 'all conversions ran');
    const results = new Map<string, Awaited<ReturnType<typeof bootImage>>>();
    // side by side: TCG takes one core per guest and the machine has two
    await Promise.all(BOOTED.map(async name => results.set(name, await bootImage({ image: targets.get(name)!, format: 'qcow2', timeoutMs: 300_000 }))));
    for (const [name, b] of results) {
      const m = readMarker(b.serialLog, `${name} (ended by ${b.endedBy})`);
      assert.equal(m.root, ROOT_UUID, name);
      assert.equal(m.host, 'ferry-guest', name);
    }
  });

  it('the results not booted hold the same file systems as the served file, by the independent comparison', async () => {
    for (const [name, target] of targets) {
      if (BOOTED.includes(name)) continue;
      assert.deepEqual(await independentCompare(guest, 'raw', target, 'qcow2'), [], name);
    }
  });
});
