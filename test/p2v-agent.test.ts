// The P2V boot agent (scripts/p2v-agent/ferry-p2v-agent) against a
// "physical machine" made here: a network namespace joined to the host by a
// veth pair (host 10.231.0.1/30, machine 10.231.0.2/30) whose disk is the
// Debian guest image attached as a READ-ONLY loop device. The agent runs
// inside the namespace, serves the disk over NBD with TLS-PSK and over iSCSI
// with CHAP; the `ferry convert` command it prints is run on the host as
// printed (only the target path changed), the result verifies against the
// image, boots, and carries the inventory. The inventory itself is checked
// against what this kernel reports. The agent exits 0 on SIGTERM and leaves
// nothing; the image's sha256 never changes.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa, type ResultPromise } from 'execa';
import { ROOT, ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { readMarker } from './support/marker.js';
import { assertSameFiles } from './support/independent.js';
import { bootBudget } from './support/boot-budget.js';
import { makeNetnsLink, type NetnsLink } from './support/netns.js';
import { ourProcesses } from './support/guard.js';
import { buildDebianGuest } from './support/fixtures.js';
import { bootImage } from '../src/verify/boot.js';

const AGENT = join(ROOT, 'scripts', 'p2v-agent', 'ferry-p2v-agent');
const ROOT_UUID = '1b7c4f2a-9d3e-4e51-8a60-f0e1d2c3b4a5';
const NS = `ferry-p2v-${process.pid}`;
const VETH_HOST = `fp2vh${process.pid}`.slice(0, 15);
const VETH_NS = `fp2vn${process.pid}`.slice(0, 15);
const HOST_ADDR = '10.231.0.1';
const NS_ADDR = '10.231.0.2';

guardMachine();
const dir = await tempDir('ferryp2v-');

let guest: string, guestSum: string, guestSize: number, loop = '';
let link: NetnsLink | undefined;

const sh = (cmd: string, args: string[]) => execa(cmd, args, { stdin: 'ignore' });
const inNs = (args: string[]) => ['netns', 'exec', NS, ...args];

/** pids of this file's NBD/iSCSI servers running now (another test file may run its own meanwhile) */
async function serverPids(): Promise<string[]> {
  return (await ourProcesses(['nbdkit', 'tgtd'])).map(l => l.split(' ')[0]);
}

interface Agent { proc: ResultPromise; stdout: () => string; stderr: () => string }
const running = new Set<Agent>();

/** Start `ferry-p2v-agent serve ARGS` in the namespace; resolves once it printed READY. */
async function startAgent(args: string[]): Promise<Agent> {
  const proc = execa('ip', inNs(['bash', AGENT, 'serve', ...args]), { reject: false, stdin: 'ignore', buffer: false });
  let out = '', err = '';
  const agent: Agent = { proc, stdout: () => out, stderr: () => err };
  running.add(agent);
  void proc.finally(() => running.delete(agent));
  proc.stderr!.on('data', (d: Buffer) => { err += String(d); });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no READY within 60 s:\n${out}\n${err}`)), 60_000);
    proc.stdout!.on('data', (d: Buffer) => {
      out += String(d);
      if (/^READY$/m.test(out)) { clearTimeout(timer); resolve(); }
    });
    void proc.then(r => { clearTimeout(timer); reject(new Error(`the agent exited (${r.exitCode}) before READY:\n${out}\n${err}`)); });
  });
  return agent;
}

/** SIGTERM the agent: it must exit 0 within 10 s. Returns the seconds it took. */
async function stopAgent(a: Agent): Promise<number> {
  const t0 = Date.now();
  a.proc.kill('SIGTERM');
  const timer = setTimeout(() => a.proc.kill('SIGKILL'), 10_000);
  const r = await a.proc;
  clearTimeout(timer);
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(r.signal, undefined, `the agent was killed by ${r.signal}:\n${a.stderr()}`);
  assert.equal(r.exitCode, 0, `the agent's exit status after SIGTERM:\n${a.stderr()}`);
  return seconds;
}

/** Make the machine: namespace, veth pair, the guest image as a read-only loop device. */
async function setUp(): Promise<void> {
  guest = await buildDebianGuest();
  guestSum = await sha256(guest);
  guestSize = (await stat(guest)).size;
  link = await makeNetnsLink({ ns: NS, hostIf: VETH_HOST, nsIf: VETH_NS, hostIp: HOST_ADDR, nsIp: NS_ADDR });
  loop = String((await sh('losetup', ['-r', '--show', '-f', guest])).stdout).trim();
  assert.match(loop, /^\/dev\/loop\d+$/);
}

/** Remove all of it, whatever failed before; then check that the image never changed. */
async function tearDown(): Promise<void> {
  for (const a of running) { a.proc.kill('SIGKILL'); await a.proc; }
  // every step runs whatever the one before it threw (a failed netns removal once left the loop behind too)
  const failed: unknown[] = [];
  const step = async (f: () => Promise<unknown>) => { try { await f(); } catch (e) { failed.push(e); } };
  await step(async () => link?.remove()); // the pair and the namespace, each checked gone
  await step(async () => { if (loop) await execa('losetup', ['-d', loop]); });
  await step(async () => { if (guest) assert.equal(await sha256(guest), guestSum, 'the guest image was never written'); });
  if (failed.length) throw failed.length === 1 ? failed[0] : new AggregateError(failed, failed.map(e => (e as Error).message).join('\n'));
}

// One suite around everything: its after hook cleans up before the file's guard looks.
describe('the P2V agent on a machine in a network namespace', () => {
  before(setUp);
  after(tearDown);

  it('json-string escapes quotes, backslashes and control characters and keeps UTF-8 valid', async () => {
    // the raw bytes of stdout, decoded strictly: anything but valid UTF-8 throws
    const enc = async (input: Buffer | string) => {
      const r = await execa('bash', [AGENT, 'json-string'], { input, encoding: 'buffer' });
      return new TextDecoder('utf-8', { fatal: true }).decode(r.stdout).trimEnd();
    };
    for (const s of ['plain', 'a "quoted" word', 'back\\slash \\" both', 'ctl \x01\x02\x1b\x1f tab\t nl\n cr\r bs\b ff\f del\x7f',
      'é € 😀 ünïcödé', 'two trailing newlines\n\n', '', '</script>\u2028']) {
      const out = await enc(s);
      assert.equal(JSON.parse(out), s, `round trip of ${JSON.stringify(s)}: ${out}`);
      assert.ok(!/[\x00-\x1f]/.test(out), `no raw control character in ${out}`);
    }
    assert.equal(await enc('x"y'), '"x\\"y"');
    assert.equal(await enc('\x01'), '"\\u0001"');
    // bytes that are not UTF-8 (a firmware string can hold anything) become U+FFFD, still valid JSON
    const bad = Buffer.from([0x61, 0xff, 0x62, 0xc3, 0x20, 0xed, 0xa0, 0x80, 0x63, 0xc3, 0xa9]);
    assert.equal(JSON.parse(await enc(bad)), 'a\ufffdb\ufffd \ufffd\ufffd\ufffdcé');
  });

  it('inventory: every field, memory, the namespace NIC, the loop disk, the firmware type', async () => {
    const r = await execa('ip', inNs(['bash', AGENT, 'inventory']), { stdin: 'ignore' });
    const inv = JSON.parse(String(r.stdout)) as Record<string, any>;
    assert.equal(inv.ferryInventory, 1);
    assert.ok(!Number.isNaN(Date.parse(inv.collectedAt)), inv.collectedAt);
    assert.equal(inv.hostname, (await readFile('/proc/sys/kernel/hostname', 'utf8')).trim());
    const has = (o: Record<string, unknown>, keys: string[], what: string) => {
      for (const k of keys) assert.ok(k in o, `${what} has "${k}" (null when unreadable, never missing)`);
    };
    has(inv, ['ferryInventory', 'collectedAt', 'hostname', 'system', 'firmware', 'cpu', 'memory', 'disks', 'storageControllers', 'nics', 'network', 'exports'], 'the inventory');
    has(inv.system, ['manufacturer', 'model', 'serial', 'assetTag', 'uuid'], 'system');
    has(inv.firmware, ['type', 'secureBoot'], 'firmware');
    has(inv.cpu, ['model', 'count', 'sockets', 'cores'], 'cpu');
    has(inv.memory, ['totalKiB', 'totalBytes', 'modules'], 'memory');
    has(inv.network, ['defaultGateway', 'routes', 'dns'], 'network');
    has(inv.network.dns, ['nameservers', 'search'], 'network.dns');
    assert.deepEqual(inv.exports, []);
    for (const d of inv.disks) has(d, ['path', 'sizeBytes', 'model', 'serial', 'bus', 'controller', 'driver', 'partitions'], `disk ${d.path}`);
    for (const c of inv.storageControllers) has(c, ['address', 'id', 'subsystem', 'class', 'driver'], `controller ${c.address}`);
    for (const n of inv.nics) has(n, ['name', 'mac', 'driver', 'pci', 'addresses'], `NIC ${n.name}`);

    assert.equal(inv.firmware.type, existsSync('/sys/firmware/efi') ? 'UEFI' : 'BIOS');
    const memTotal = Number(/^MemTotal:\s+(\d+) kB$/m.exec(await readFile('/proc/meminfo', 'utf8'))![1]);
    assert.equal(inv.memory.totalKiB, memTotal);
    assert.equal(inv.memory.totalBytes, memTotal * 1024);
    const cpus = (await readFile('/proc/cpuinfo', 'utf8')).split('\n').filter(l => /^processor\s*:/.test(l)).length;
    assert.equal(inv.cpu.count, cpus);
    assert.equal(typeof inv.cpu.model, 'string');

    // the namespace's NIC: the veth's MAC and address, nothing of the host's
    const link = JSON.parse(String((await sh('ip', ['-n', NS, '-j', 'link', 'show', VETH_NS])).stdout))[0] as { address: string };
    assert.deepEqual(inv.nics.map((n: any) => n.name), [VETH_NS]);
    const nic = inv.nics[0];
    assert.equal(nic.mac, link.address);
    assert.equal(nic.driver, 'veth');
    assert.equal(nic.pci, null);
    assert.deepEqual(nic.addresses.filter((a: any) => a.family === 'ipv4').map((a: any) => a.cidr), [`${NS_ADDR}/30`]);
    assert.ok(inv.network.routes.some((r: any) => r.destination === '10.231.0.0/30' && r.dev === VETH_NS), 'the connected route');
    assert.equal(inv.network.defaultGateway, null, 'the namespace has no default route');

    const disk = inv.disks.find((d: any) => d.path === loop);
    assert.ok(disk, `${loop} is in the disk list: ${inv.disks.map((d: any) => d.path).join(' ')}`);
    assert.equal(disk.sizeBytes, guestSize);
    assert.equal(disk.kind, 'loop');
    assert.equal(disk.readOnly, true);
    assert.equal(disk.backingFile, guest);
    // PCI ids of real controllers: vendor:device and subsystem as 4+4 hex digits
    for (const c of inv.storageControllers) {
      assert.match(c.id, /^[0-9a-f]{4}:[0-9a-f]{4}$/);
      assert.match(c.subsystem ?? '0000:0000', /^[0-9a-f]{4}:[0-9a-f]{4}$/);
    }
  });

  describe('serve: the printed convert command converts the disk over the network', () => {
    const converted: { name: string; target: string }[] = [];

    for (const protocol of ['nbd', 'iscsi'] as const) {
      it(`${protocol}: READY, convert as printed, verify, inventory beside the target; SIGTERM exits 0 and leaves nothing`, async () => {
        const d = join(dir, `agent-${protocol}`);
        const before = await serverPids();
        const agent = await startAgent(['--listen', NS_ADDR, '--disk', loop, '--protocol', protocol, '--dir', d]);
        const out = agent.stdout();
        const lines = out.trimEnd().split('\n');
        assert.equal(lines.at(-1), 'READY', 'READY is the last line');

        // the secret: a fresh 0600 file in the agent's format, never printed
        const secretFile = join(d, protocol === 'nbd' ? 'ferry.psk' : 'ferry.chap');
        const st = await stat(secretFile);
        assert.equal(st.mode & 0o777, 0o600, 'the secret file is mode 600');
        const secret = await readFile(secretFile, 'utf8');
        if (protocol === 'nbd') assert.match(secret, /^ferry:[0-9a-f]{64}\n$/);
        else assert.match(secret, /^[A-Za-z0-9]{16}$/);
        const key = protocol === 'nbd' ? secret.trim().slice('ferry:'.length) : secret;
        assert.ok(!out.includes(key) && !agent.stderr().includes(key), 'the secret is not printed');
        assert.match(out, /chmod 600/);

        // the serve-mode inventory names the export
        const inv = JSON.parse(await readFile(join(d, 'inventory.json'), 'utf8')) as Record<string, any>;
        assert.equal(inv.ferryInventory, 1);
        assert.equal(inv.exports.length, 1);
        assert.equal(inv.exports[0].disk, loop);
        assert.equal(inv.exports[0].sizeBytes, guestSize);

        // the printed commands
        const probe = lines.find(l => /^\s+ferry probe /.test(l));
        assert.ok(probe, out);
        const convert = lines.filter(l => /^\s+ferry convert /.test(l));
        assert.equal(convert.length, 1, out);
        const words = convert[0].trim().split(/\s+/);
        assert.ok(words.every(w => !/['"\\$]/.test(w)), `plain words: ${convert[0]}`);
        const [, , url, , ...opts] = words;
        assert.equal(url, inv.exports[0].url);
        if (protocol === 'nbd') {
          assert.equal(url, `nbds://${NS_ADDR}:10809/${loop.slice('/dev/'.length)}`);
          assert.deepEqual(opts, ['--tls-psk-file', secretFile, '--inventory', join(d, 'inventory.json')]);
        } else {
          assert.match(url, new RegExp(`^iscsi://ferry@${NS_ADDR.replace(/\./g, '\\.')}:3260/iqn\\.[^/]+/1$`));
          assert.deepEqual(opts, ['--chap-secret-file', secretFile, '--inventory', join(d, 'inventory.json')]);
        }
        const target = join(dir, `${protocol}.qcow2`);
        words[3] = target;
        const c = await ferry([...words.slice(1), '--no-progress']);
        assert.equal(c.exitCode, 0, `${words.join(' ')}\n${c.stdout}\n${c.stderr}`);
        assert.ok(!c.stdout.includes(key) && !c.stderr.includes(key));

        // the probe command works too
        const p = await ferry(probe.trim().split(/\s+/).slice(1));
        assert.equal(p.exitCode, 0, p.stderr);
        assert.match(p.stdout, protocol === 'nbd' ? new RegExp(`export '${loop.slice(5)}'`) : /LUN 1: DIRECT_ACCESS/);

        const saved = await stopAgent(agent);
        assert.ok(saved < 5, `the agent stopped within ${saved} s`);
        assert.deepEqual((await serverPids()).filter(x => !before.includes(x)), [], 'no nbdkit or tgtd left');
        assert.equal(existsSync(secretFile), false, 'the one-time secret is removed');
        assert.deepEqual((await readdir(d)).sort(), ['inventory.json'], 'only the inventory stays');
        assert.match(agent.stdout(), /^stopped/m);

        await assertSameFiles(guest, target);
        const v = await ferry(['verify', guest, target]);
        assert.equal(v.exitCode, 0, v.stdout + v.stderr);
        assert.match(v.stdout, /^equivalent: p1 ext4/);
        const copy = JSON.parse(await readFile(`${target}.inventory.json`, 'utf8')) as Record<string, unknown>;
        assert.deepEqual(copy, inv, 'TARGET.inventory.json is the agent\'s inventory');
        converted.push({ name: protocol, target });
      });
    }

    it('both converted disks boot to userspace with the guest\'s root UUID and hostname', async () => {
      assert.equal(converted.length, 2, 'both conversions ran');
      // two at a time: TCG is one core per guest
      const boots = await Promise.all(converted.map(t => bootImage({ image: t.target, format: 'qcow2', ...bootBudget(300_000) })));
      converted.forEach((t, i) => {
        const b = boots[i];
        const m = readMarker(b.serialLog, `${t.name} (ended by ${b.endedBy})`);
        assert.equal(m.root, ROOT_UUID);
        assert.equal(m.host, 'ferry-guest');
      });
    });
  });

  describe('serve: errors are clear, non-zero and leave nothing', () => {
    const fails = async (args: string[], exit: number, message: RegExp) => {
      const d = join(dir, `err-${Math.random().toString(36).slice(2)}`);
      const before = await serverPids();
      const r = await execa('ip', inNs(['bash', AGENT, 'serve', ...args, '--dir', d]), { reject: false, stdin: 'ignore' });
      assert.equal(r.exitCode, exit, String(r.stderr));
      assert.match(String(r.stderr), message);
      assert.doesNotMatch(String(r.stdout), /READY/);
      assert.equal(existsSync(d), false, 'no directory or secret was made');
      assert.deepEqual((await serverPids()).filter(x => !before.includes(x)), [], 'no server left');
    };

    it('a disk that does not exist', async () => {
      await fails(['--listen', NS_ADDR, '--disk', '/dev/does-not-exist'], 2, /^ferry-p2v-agent: --disk \/dev\/does-not-exist: no such device$/m);
    });

    it('an address that is not on this machine, an unknown protocol', async () => {
      await fails(['--listen', HOST_ADDR, '--disk', loop], 2, /--listen 10\.231\.0\.1 is not an address of this machine/);
      await fails(['--listen', NS_ADDR, '--disk', loop, '--protocol', 'smb'], 2, /--protocol must be nbd or iscsi/);
    });
  });
});
