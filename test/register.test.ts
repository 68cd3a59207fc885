// Registration with the real libvirt daemons (issue 7): the Debian test guest
// converted by `ferry convert`, registered on qemu:///system with profile
// kvm-legacy and domain type qemu (TCG), started; its boot marker is read
// from the serial log file libvirt writes; then it is destroyed and
// undefined and no ferry-test domain is left. Bad input (an unreachable
// URI, a taken name, a disk QEMU's user cannot reach, a start that fails)
// gives typed errors and defines nothing.
//
// The daemons: virtlogd and libvirtd are started here when they are not
// running and stopped again afterwards only if this file started them.
import assert from 'node:assert/strict';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { domainStateOf, domainXmlOf, unregister } from '../src/register/libvirt.js';
import { buildDebianGuest, buildLegacyGuest } from './support/fixtures.js';
import { FERRY, ferry, guardMachine, sha256, tempDir } from './support/harness.js';

const URI = 'qemu:///system';
const SUFFIX = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
const NAME = `ferry-test-${SUFFIX}`;
const MARKER = /FERRY-BOOT-OK root=(\S+) host=(\S+)/;

guardMachine();
const dir = await tempDir();
// mkdtemp makes the dir 0700; libvirt's QEMU runs as libvirt-qemu and must pass through it to the image
await chmod(dir, 0o711);
const priv = await tempDir('ferrytest-priv-'); // stays 0700

const started: { name: string; pidfile: string }[] = [];
const running = async (name: string) => // not zombies: a daemon stopped earlier may linger as one until init reaps it
  (await execa('pgrep', ['-x', '-r', 'R,S,D,T', name], { reject: false })).exitCode === 0;

async function ensureDaemons(): Promise<void> {
  for (const [name, pidfile] of [['virtlogd', '/run/virtlogd.pid'], ['libvirtd', '/run/libvirtd.pid']] as const) {
    if (await running(name)) continue;
    await execa(name, ['-d']);
    started.push({ name, pidfile });
  }
  for (let i = 0; i < 100; i++) {
    if ((await execa('virsh', ['-c', URI, 'list', '--all', '--name'], { reject: false })).exitCode === 0) return;
    await new Promise(r => setTimeout(r, 100));
  }
  throw new Error('libvirtd did not answer on qemu:///system within 10 s');
}

async function stopStartedDaemons(): Promise<void> {
  for (const d of started.splice(0).reverse()) {
    const pid = Number((await readFile(d.pidfile, 'utf8').catch(() => '')).trim());
    if (!pid) continue;
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100; i++) {
      try { process.kill(pid, 0); } catch { break; }
      await new Promise(r => setTimeout(r, 100));
    }
  }
}

const domainNames = async () => (await execa('virsh', ['-c', URI, 'list', '--all', '--name'])).stdout.split('\n').map(s => s.trim()).filter(Boolean);
const testDomains = async () => (await domainNames()).filter(n => n.startsWith(`ferry-test-${SUFFIX}`));

async function registerJson(args: string[]): Promise<{ exitCode: number; result: Record<string, any>; stderr: string }> {
  const r = await ferry(['register', ...args, '--json']);
  const last = r.stdout.trim().split('\n').at(-1);
  return { exitCode: r.exitCode, result: last ? JSON.parse(last) : {}, stderr: r.stderr };
}

async function waitFor(file: string, re: RegExp, timeoutMs: number): Promise<RegExpExecArray | null> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const m = re.exec(await readFile(file, 'utf8').catch(() => ''));
    if (m) return m;
    await new Promise(r => setTimeout(r, 1000));
  }
  return null;
}

let target: string;
let rootUuid: string;
let guestSum: string;
before(async () => {
  await ensureDaemons();
  const guest = await buildDebianGuest();
  guestSum = await sha256(guest);
  target = join(dir, 'debian.qcow2');
  const r = await ferry(['convert', guest, target, '--no-progress']);
  assert.equal(r.exitCode, 0, `convert failed:\n${r.stderr}`);
  const info = JSON.parse((await ferry(['info', target, '--json'])).stdout);
  rootUuid = info.partitions.find((p: { fs?: string }) => p.fs === 'ext4').uuid;
});
after(async () => {
  try {
    assert.equal(await sha256(await buildDebianGuest()), guestSum, 'the converted source is byte for byte unchanged');
  } finally {
    // whatever a failed test left: every domain of this run goes, then the daemons this file started
    for (const n of await testDomains().catch(() => [])) await unregister(URI, n, { removeLogs: true });
    await stopStartedDaemons();
  }
});

describe('a job that converts, verifies and registers (real libvirtd, TCG)', () => {
  it('the Debian guest converted in a job with a register: block is defined, started and boots', async () => {
    const name = `${NAME}-job`;
    const home = join(dir, 'job-home');
    const env = { FERRY_HOME: home };
    const spec = join(dir, 'job.json');
    const jobTarget = join(dir, 'job.qcow2');
    await writeFile(spec, JSON.stringify({ source: await buildDebianGuest(), target: jobTarget, profile: 'kvm-legacy', register: { libvirt: URI, name, start: true } }));
    // the runner without the HTTP API, as `ferry serve` runs it
    const worker = execa('node', [FERRY, 'jobs', 'run-worker'], { env, reject: false, stdin: 'ignore' });
    try {
      const r = await ferry(['jobs', 'submit', spec, '--wait'], { env });
      assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}`);
      const jobs = JSON.parse((await ferry(['jobs', 'list', '--json'], { env })).stdout);
      const job = (Array.isArray(jobs) ? jobs : jobs.jobs)[0];
      const steps = job.steps.map((x: { name: string }) => x.name);
      assert.ok(steps.indexOf('verify') >= 0 && steps.indexOf('verify') < steps.indexOf('register'), `register only after verify: ${steps.join(', ')}`);
      assert.ok(job.steps.every((x: { state: string }) => x.state === 'done'));
      assert.deepEqual(await testDomains().then(d => d.filter(n => n === name)), [name]);
      assert.match((await domainXmlOf(URI, name))!, new RegExp(`<source file='${jobTarget}'`));
      const m = await waitFor(`/var/log/libvirt/qemu/${name}-serial0.log`, MARKER, 300_000);
      assert.ok(m, 'the registered guest prints its boot marker');
      assert.equal(m![2], 'ferry-guest');
    } finally {
      worker.kill('SIGTERM');
      await worker;
      await unregister(URI, name, { removeLogs: true });
    }
    assert.deepEqual((await testDomains()).filter(n => n === name), [], 'destroyed and undefined');
  });

  it('a job whose register: names a taken domain fails with DOMAIN_EXISTS and leaves no target: before the copy, or at the end when the name was taken during it', async () => {
    const name = `${NAME}-jobtaken`;
    const home = join(dir, 'jobtaken-home');
    const env = { FERRY_HOME: home };
    const spec = join(dir, 'jobtaken.json');
    const jobTarget = join(dir, 'jobtaken.qcow2');
    const partial = join(dir, '.jobtaken.qcow2.ferry-partial');
    await writeFile(spec, JSON.stringify({ source: await buildDebianGuest(), target: jobTarget, register: { libvirt: URI, name } }));
    const worker = execa('node', [FERRY, 'jobs', 'run-worker'], { env, reject: false, stdin: 'ignore' });
    const show = async (id: string) => JSON.parse((await ferry(['jobs', 'show', id, '--json'], { env })).stdout);
    try {
      // taken before: the job fails before it copies anything
      assert.equal((await registerJson([target, '--libvirt', URI, '--name', name, '--profile', 'kvm-legacy'])).exitCode, 0);
      const xmlBefore = await domainXmlOf(URI, name);
      const r = await ferry(['jobs', 'submit', spec, '--wait'], { env });
      assert.equal(r.exitCode, 4, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, new RegExp(`DOMAIN_EXISTS: .*domain named '${name}'`));
      const early = await show(r.stdout.split('\n')[0].trim());
      assert.equal(early.state, 'failed');
      assert.equal(early.error.code, 'DOMAIN_EXISTS');
      assert.deepEqual(early.steps.filter((x: { state: string }) => x.state !== 'pending'), [], 'no step ran');
      assert.equal(await domainXmlOf(URI, name), xmlBefore, 'the existing domain is unchanged');
      await unregister(URI, name, { removeLogs: true });

      // free at the start, taken while the job copies: it fails at registration and removes the target it made
      const id = (await ferry(['jobs', 'submit', spec], { env })).stdout.trim();
      for (const t0 = Date.now(); !(await show(id)).steps.some((x: { name: string; state: string }) => x.name.startsWith('copy') && x.state === 'running'); await new Promise(res => setTimeout(res, 200))) {
        assert.ok(Date.now() - t0 < 120_000, 'the job never started copying');
      }
      // a bare definition, quick enough to be there long before the copy ends
      await writeFile(join(dir, 'taken.xml'), `<domain type='qemu'><name>${name}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>`);
      await execa('virsh', ['-c', URI, 'define', join(dir, 'taken.xml')]);
      const takenXml = await domainXmlOf(URI, name);
      let job;
      for (const t0 = Date.now(); !['done', 'failed', 'cancelled'].includes((job = await show(id)).state); await new Promise(res => setTimeout(res, 300))) {
        assert.ok(Date.now() - t0 < 180_000, 'the job did not end');
      }
      assert.equal(job.state, 'failed');
      assert.equal(job.error.code, 'DOMAIN_EXISTS');
      assert.deepEqual(job.steps.filter((x: { state: string }) => x.state !== 'done').map((x: { name: string }) => x.name), ['register'], 'it failed at registration, after commit');
      assert.match((await ferry(['jobs', 'logs', id], { env })).stdout, /removed .*jobtaken\.qcow2: the job failed at registration/);
      assert.equal(await domainXmlOf(URI, name), takenXml, 'the domain defined meanwhile is unchanged');
    } finally {
      worker.kill('SIGTERM');
      await worker;
      await unregister(URI, name, { removeLogs: true });
    }
    for (const f of [jobTarget, partial, `${jobTarget}.inventory.json`]) {
      assert.equal(await stat(f).then(() => true, () => false), false, `${f} was left`);
    }
  });
});

describe('ferry register on qemu:///system (real libvirtd, TCG)', () => {
  it('defines the domain from the kvm-legacy profile, starts it, and the guest boots: marker in the serial log', async () => {
    const serialLog = join(dir, `${NAME}-serial0.log`);
    const t0 = Date.now();
    const r = await registerJson([target, '--libvirt', URI, '--name', NAME, '--profile', 'kvm-legacy', '--start', '--serial-log', serialLog]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.result.name, NAME);
    assert.equal(r.result.started, true);
    assert.equal(r.result.domainType, 'qemu');
    assert.match(r.result.uuid, /^[0-9a-f-]{36}$/);
    try {
      // what libvirt made of the XML: TCG, i440fx, IDE disk by path, e1000 with the MAC, serial to the file
      const xml = (await domainXmlOf(URI, NAME))!;
      assert.match(xml, /<domain type='qemu'/);
      assert.match(xml, /machine='pc-i440fx-[\d.]+'/);
      assert.match(xml, new RegExp(`<source file='${target}'`));
      assert.match(xml, /<target dev='hda' bus='ide'\/>/);
      assert.match(xml, /<model type='e1000'\/>/);
      assert.match(xml, new RegExp(`<mac address='${r.result.hardware.nic.mac}'/>`));
      assert.equal(r.result.hardware.nic.macSource, 'generated', 'the Debian test guest binds no MAC');
      assert.match(xml, new RegExp(`<serial type='file'>\\s*<source path='${serialLog}'`));
      assert.match(xml, /<memory unit='KiB'>1048576<\/memory>/);
      assert.match(xml, /<vcpu placement='static'>1<\/vcpu>/);

      const m = await waitFor(serialLog, MARKER, 300_000);
      assert.ok(m, `no boot marker in ${serialLog}:\n${(await readFile(serialLog, 'utf8').catch(() => '')).slice(-2000)}`);
      assert.equal(m[1], rootUuid, 'the guest runs from the converted root file system');
      assert.equal(m[2], 'ferry-guest');
      process.stderr.write(`# registered guest printed its marker ${((Date.now() - t0) / 1000).toFixed(1)} s after ferry register\n`);
    } finally {
      assert.equal(await unregister(URI, NAME, { removeLogs: true }), true);
    }
    assert.deepEqual(await testDomains(), [], 'no ferry-test domain is left (virsh list --all)');
    assert.equal(await domainStateOf(URI, NAME), undefined);
    assert.equal(await stat(join('/var/log/libvirt/qemu', `${NAME}.log`)).catch(() => 'gone'), 'gone', "libvirt's log of the domain went with it");
  });

  it('keeps the MAC the guest binds its interface to (legacy guest, defined without starting)', async () => {
    const legacy = await buildLegacyGuest();
    const name = `${NAME}-mac`;
    const r = await registerJson([legacy.disk, '--libvirt', URI, '--name', name, '--profile', 'kvm-virtio', '--memory', '512M', '--cpus', '2']);
    try {
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.result.started, false);
      assert.equal(r.result.state, 'shutoff');
      assert.equal(r.result.hardware.nic.mac, legacy.manifest.macBinding.mac.toLowerCase());
      assert.equal(r.result.hardware.nic.macSource, 'guest');
      const xml = (await domainXmlOf(URI, name))!;
      assert.match(xml, new RegExp(`<mac address='${legacy.manifest.macBinding.mac.toLowerCase()}'/>`));
      assert.match(xml, /machine='pc-q35-[\d.]+'/);
      assert.match(xml, /<target dev='vda' bus='virtio'\/>/);
      assert.match(xml, /<model type='virtio'\/>/);
      assert.match(xml, /<memory unit='KiB'>524288<\/memory>/);
      assert.match(xml, /<vcpu placement='static'>2<\/vcpu>/);
      assert.match(xml, /<driver name='qemu' type='raw'\/>/);
    } finally {
      await unregister(URI, name, { removeLogs: true });
    }
  });

  it('a given --mac wins over the guest binding', async () => {
    const name = `${NAME}-given`;
    const r = await registerJson([target, '--libvirt', URI, '--name', name, '--profile', 'kvm-legacy', '--mac', '52:54:00:AB:CD:EF']);
    try {
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.result.hardware.nic.mac, '52:54:00:ab:cd:ef');
      assert.equal(r.result.hardware.nic.macSource, 'given');
    } finally {
      await unregister(URI, name, { removeLogs: true });
    }
  });

  describe('bad input: typed errors, nothing defined', () => {
    it('an unreachable libvirt URI (a socket that does not exist): LIBVIRT_UNREACHABLE, exit 9, naming the URI', async () => {
      const before = await domainNames();
      const uri = `qemu:///system?socket=${join(dir, 'no-such-libvirt-sock')}`;
      const r = await registerJson([target, '--libvirt', uri, '--name', `${NAME}-unreach`]);
      assert.equal(r.exitCode, 9, r.stderr);
      assert.equal(r.result.code, 'LIBVIRT_UNREACHABLE');
      assert.equal(r.result.uri, uri);
      assert.ok(r.stderr.includes(uri), r.stderr);
      assert.deepEqual(await domainNames(), before);
    });

    it('a domain name already taken: DOMAIN_EXISTS, exit 4; the existing domain is not replaced', async () => {
      const name = `${NAME}-taken`;
      const first = await registerJson([target, '--libvirt', URI, '--name', name, '--profile', 'kvm-legacy']);
      assert.equal(first.exitCode, 0, first.stderr);
      try {
        const xmlBefore = await domainXmlOf(URI, name);
        const r = await registerJson([target, '--libvirt', URI, '--name', name, '--profile', 'kvm-virtio', '--start']);
        assert.equal(r.exitCode, 4, r.stderr);
        assert.equal(r.result.code, 'DOMAIN_EXISTS');
        assert.equal(r.result.name, name);
        assert.match(r.stderr, new RegExp(`domain named '${name}'`));
        assert.equal(await domainXmlOf(URI, name), xmlBefore, 'the existing domain is unchanged');
        assert.equal(await domainStateOf(URI, name), 'shutoff', 'and was not started');
      } finally {
        await unregister(URI, name, { removeLogs: true });
      }
    });

    it("an image QEMU's user cannot reach (a 0700 directory): DISK_NOT_ACCESSIBLE, exit 8", async () => {
      const before = await domainNames();
      const hidden = join(priv, 'hidden.qcow2');
      await execa('cp', ['--sparse=always', target, hidden]);
      const r = await registerJson([hidden, '--libvirt', URI, '--name', `${NAME}-hidden`, '--profile', 'kvm-legacy', '--start']);
      assert.equal(r.exitCode, 8, r.stderr);
      assert.equal(r.result.code, 'DISK_NOT_ACCESSIBLE');
      assert.equal(r.result.dir, priv);
      assert.deepEqual(await domainNames(), before);
    });

    it('a start that fails (serial log in a missing directory): LIBVIRT_FAILED, the defined domain is undefined again', async () => {
      const before = await domainNames();
      const r = await registerJson([target, '--libvirt', URI, '--name', `${NAME}-nostart`, '--profile', 'kvm-legacy', '--start',
        '--serial-log', join(dir, 'missing-dir', 'serial.log')]);
      assert.equal(r.exitCode, 7, r.stderr);
      assert.equal(r.result.code, 'LIBVIRT_FAILED');
      assert.match(r.stderr, /nothing was left defined/);
      assert.deepEqual(await domainNames(), before);
      assert.equal(await stat(`/var/log/libvirt/qemu/${NAME}-nostart.log`).catch(() => 'gone'), 'gone', "nor libvirt's log of it");
    });

    it('usage errors: a bad name, an unknown profile, a physical profile, a partial or missing image, a bad --memory', async () => {
      const partial = join(dir, '.debian.qcow2.ferry-partial');
      await execa('cp', ['--sparse=always', target, partial]);
      const cases: [string[], string, number][] = [
        [[target, '--libvirt', URI, '--name', 'bad name!'], 'USAGE', 2],
        [[target, '--libvirt', URI, '--name', `${NAME}-x`, '--profile', 'nope'], 'UNKNOWN_PROFILE', 2],
        [[target, '--libvirt', URI, '--name', `${NAME}-x`, '--profile', 'physical', '--mac', '52:54:00:00:00:01'], 'USAGE', 2],
        [[partial, '--libvirt', URI, '--name', `${NAME}-x`], 'USAGE', 2],
        [[join(dir, 'missing.qcow2'), '--libvirt', URI, '--name', `${NAME}-x`], 'SOURCE_MISSING', 3],
        [[target, '--libvirt', URI, '--name', `${NAME}-x`, '--memory', 'lots'], 'USAGE', 2],
      ];
      for (const [args, code, exit] of cases) {
        const r = await registerJson(args);
        assert.equal(r.result.code, code, `${args.join(' ')}: ${r.stderr}`);
        assert.equal(r.exitCode, exit);
      }
      assert.deepEqual(await testDomains(), []);
    });
  });
});
