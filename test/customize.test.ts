// `ferry customize`: two clones made from one template with --overlay, each
// with its own hostname, static address and --new-identity (plus an SSH key
// for root and a timezone), boot side by side on one bridge in a network
// namespace. Judged by the guests themselves on their serial consoles (this
// file's regexes over the fixture's probe and boot marker lines): different
// hostnames, the addresses given, different machine-ids and SSH host key
// fingerprints (neither the template's), and each pings the other. The files
// written are read back independently (qemu-img convert to raw, losetup,
// a read-only mount), the template's sha256 never changes, --dry-run writes
// nothing, and each bad input is a typed error that leaves nothing behind.
import assert from 'node:assert/strict';
import { lstat, mkdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa } from 'execa';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { buildCustomizeGuest, buildDataDisks } from './support/fixtures.js';
import { makeLab, type Lab } from './support/lab.js';

const TEMPLATE_MACHINE_ID = '0f3e2d1c4b5a69788796a5b4c3d2e1f0';
const IFACE = 'enp0s2'; // the lab's e1000e on q35
const CLONES = [
  { name: 'clone-a', ip: '10.234.0.21', mac: '52:54:00:c5:00:21', uuid: '3f1d2c3b-4a59-4e68-9d7c-0b1a2c3d4e21' },
  { name: 'clone-b', ip: '10.234.0.22', mac: '52:54:00:c5:00:22', uuid: '3f1d2c3b-4a59-4e68-9d7c-0b1a2c3d4e22' },
];

guardMachine();
const dir = await tempDir('ferrycustomize-');
let template = '', templateSum = '';
const keyFile = join(dir, 'id_ed25519');

before(async () => {
  template = await buildCustomizeGuest();
  templateSum = await sha256(template);
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'operator@ferry-test', '-f', keyFile]);
});
after(async () => { if (template) assert.equal(await sha256(template), templateSum, 'the template was never written'); });

interface GuestFile { text?: string; mode: number; uid: number; gid: number; link?: string }

/** Read files of an image's first partition without Ferry: qemu-img convert to raw, a read-only loop at the partition, mount ro. */
async function readGuest(image: string, format: string, paths: string[], also?: (mnt: string) => Promise<void>): Promise<Record<string, GuestFile | undefined>> {
  const work = join(dir, `read-${Date.now()}-${Math.random().toString(36).slice(2)}`);
  await mkdir(work);
  const raw = format === 'raw' ? image : join(work, 'disk.raw');
  if (format !== 'raw') await execa('qemu-img', ['convert', '-f', format, '-O', 'raw', image, raw]);
  const p1 = (JSON.parse(String((await execa('sfdisk', ['--json', raw])).stdout)).partitiontable.partitions as { start: number; size: number }[])[0];
  const loop = String((await execa('losetup', ['-f', '--show', '-r', '-o', String(p1.start * 512), '--sizelimit', String(p1.size * 512), raw])).stdout).trim();
  const mnt = join(work, 'mnt');
  await mkdir(mnt);
  try {
    await execa('mount', ['-t', 'ext4', '-o', 'ro,noload', loop, mnt]);
    try {
      const out: Record<string, GuestFile | undefined> = {};
      for (const p of paths) {
        const st = await lstat(join(mnt, p)).catch(() => undefined);
        if (!st) { out[p] = undefined; continue; }
        out[p] = {
          mode: st.mode & 0o7777, uid: st.uid, gid: st.gid,
          ...(st.isSymbolicLink() ? { link: await readlink(join(mnt, p)) } : st.isFile() ? { text: await readFile(join(mnt, p), 'utf8') } : {}),
        };
      }
      await also?.(mnt);
      return out;
    } finally { await execa('umount', [mnt]); }
  } finally { await execa('losetup', ['-d', loop]); }
}

const customizeArgs = (c: typeof CLONES[number], overlay: string) => [
  'customize', template, '--overlay', overlay, '--hostname', c.name, '--ip', `${IFACE}=${c.ip}/24`, '--new-identity',
  '--ssh-authorized-key', `${keyFile}.pub`, '--user', 'root', '--timezone', 'Europe/Berlin', '--json',
];

describe('two clones of one template, customized with --overlay, boot side by side', () => {
  const overlays = CLONES.map(c => join(dir, `${c.name}.qcow2`));
  const results: Record<string, any>[] = [];
  let templateFingerprint = '';
  let lab: Lab | undefined;

  before(async () => {
    const runs = await Promise.all(CLONES.map((c, i) => ferry(customizeArgs(c, overlays[i]))));
    for (const r of runs) {
      assert.equal(r.exitCode, 0, r.stderr);
      results.push(JSON.parse(r.stdout));
    }
    await readGuest(template, 'raw', [], async mnt => {
      templateFingerprint = String((await execa('ssh-keygen', ['-lf', join(mnt, 'etc/ssh/ssh_host_ed25519_key.pub')])).stdout).split(' ')[1];
    });
    assert.match(templateFingerprint, /^SHA256:/);
  });
  after(async () => { await lab?.remove(); });

  it('reports every change (file, before, after, why) and leaves the template byte for byte as it was', async () => {
    const files = results[0].changes.map((c: any) => c.file);
    for (const f of ['/etc/hostname', '/etc/hosts', '/etc/network/interfaces', '/etc/machine-id', '/etc/ssh/ssh_host_ed25519_key', '/etc/ssh/ssh_host_rsa_key.pub',
      '/etc/systemd/system/ferry-ssh-hostkeys.service', '/root/.ssh/authorized_keys', '/etc/localtime', '/etc/timezone']) {
      assert.ok(files.includes(f), `the report names ${f}: ${files.join(', ')}`);
    }
    for (const c of results[0].changes) for (const k of ['before', 'after', 'reason']) assert.equal(typeof c[k], 'string', `${c.file}: ${k}`);
    const hostname = results[0].changes.find((c: any) => c.file === '/etc/hostname');
    assert.deepEqual([hostname.before.trim(), hostname.after.trim()], ['ferry-guest', 'clone-a']);
    assert.ok(!JSON.stringify(results[0]).includes('PRIVATE KEY'), 'no key material in the report');
    assert.equal(results[0].overlay, overlays[0]);
    assert.equal(await sha256(template), templateSum);
    const info = JSON.parse(String((await execa('qemu-img', ['info', '--output=json', overlays[0]])).stdout));
    assert.equal(info['backing-filename'], template);
  });

  it('the overlay holds the files asked for, with owner and mode (read without Ferry)', async () => {
    const paths = ['etc/hostname', 'etc/hosts', 'etc/network/interfaces', 'etc/machine-id', 'etc/ssh/ssh_host_ed25519_key', 'etc/ssh/ssh_host_rsa_key',
      'etc/systemd/system/ferry-ssh-hostkeys.service', 'etc/systemd/system/multi-user.target.wants/ferry-ssh-hostkeys.service',
      'root/.ssh', 'root/.ssh/authorized_keys', 'etc/localtime', 'etc/timezone', 'usr/share/zoneinfo/Europe/Berlin'];
    const f = await readGuest(overlays[0], 'qcow2', paths);
    assert.equal(f['etc/hostname']?.text, 'clone-a\n');
    assert.match(f['etc/hosts']!.text!, /^127\.0\.1\.1\s+clone-a$/m);
    assert.doesNotMatch(f['etc/hosts']!.text!, /ferry-guest/);
    assert.match(f['etc/network/interfaces']!.text!, /auto enp0s2\niface enp0s2 inet static\n\s+address 10\.234\.0\.21\/24/);
    assert.equal(f['etc/machine-id']?.text, '', 'an empty machine-id: systemd makes a new one at boot');
    assert.equal(f['etc/ssh/ssh_host_ed25519_key'], undefined);
    assert.equal(f['etc/ssh/ssh_host_rsa_key'], undefined);
    const unit = f['etc/systemd/system/ferry-ssh-hostkeys.service']!.text!;
    assert.match(unit, /^Before=.*\bssh\.service/m);
    assert.match(unit, /^ExecStart=\/usr\/bin\/ssh-keygen -A$/m);
    assert.match(unit, /^ConditionPathExists=!\/etc\/ssh\/ssh_host_ed25519_key$/m);
    assert.equal(f['etc/systemd/system/multi-user.target.wants/ferry-ssh-hostkeys.service']?.link, '/etc/systemd/system/ferry-ssh-hostkeys.service');
    const pub = (await readFile(`${keyFile}.pub`, 'utf8')).trim();
    const ak = f['root/.ssh/authorized_keys']!;
    assert.ok(ak.text!.split('\n').includes(pub), 'the key is in root\'s authorized_keys');
    assert.deepEqual([ak.mode, ak.uid, ak.gid], [0o600, 0, 0]);
    assert.equal(f['root/.ssh']!.mode, 0o700);
    assert.equal(f['etc/localtime']?.link, '../usr/share/zoneinfo/Europe/Berlin');
    assert.ok(f['usr/share/zoneinfo/Europe/Berlin']?.text !== undefined, 'the link leads to a zone file of the guest');
    assert.equal(f['etc/timezone']?.text, 'Europe/Berlin\n');
  });

  it('both boot on one bridge: own hostnames, the addresses given, new machine-ids and SSH host keys, and they reach each other', async () => {
    lab = await makeLab(dir, { isolated: true });
    const machines = await Promise.all(CLONES.map((c, i) => lab!.start({ name: c.name, disk: overlays[i], mac: c.mac, uuid: c.uuid, serial: `FERRY-CL-${i}`, boot: 'disk', memoryMiB: 768 })));
    const seen = await Promise.all(machines.map(async m => {
      const probe = await m.waitFor(/FERRY-PROBE host=(\S+) machine-id=(\S*) ssh-ed25519=(\S+) ping=(\S+)/, 240_000);
      const marker = await m.waitFor(/FERRY-BOOT-OK root=\S+ host=(\S+) net=(\S+)/, 60_000);
      return { host: probe[1], machineId: probe[2], fingerprint: probe[3], ping: probe[4], markerHost: marker[1], net: marker[2] };
    }));
    for (const [i, c] of CLONES.entries()) {
      const s = seen[i];
      assert.equal(s.host, c.name);
      assert.equal(s.markerHost, c.name);
      assert.equal(s.net, `${IFACE}:${c.ip}/24`);
      assert.match(s.machineId, /^[0-9a-f]{32}$/, `${c.name}: systemd made a machine-id`);
      assert.notEqual(s.machineId, TEMPLATE_MACHINE_ID);
      assert.match(s.fingerprint, /^SHA256:/, `${c.name}: the host keys were made at first boot`);
      assert.notEqual(s.fingerprint, templateFingerprint, `${c.name}: not the template's host key`);
      const peer = CLONES[1 - i].ip;
      assert.equal(s.ping, `${peer}:ok`, `${c.name} reaches ${peer}`);
    }
    assert.notEqual(seen[0].machineId, seen[1].machineId);
    assert.notEqual(seen[0].fingerprint, seen[1].fingerprint);
    await lab.remove();
    lab = undefined;
  });
});

describe('without boots: --dry-run, the untouched template, bad input', () => {
  it('--dry-run lists the changes and writes nothing (neither the image nor the overlay)', async () => {
    const overlay = join(dir, 'dry.qcow2');
    const r = await ferry(['customize', template, '--overlay', overlay, '--hostname', 'dry-one', '--new-identity', '--dry-run', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.dryRun, true);
    assert.ok(out.changes.some((c: any) => c.file === '/etc/hostname' && c.after.trim() === 'dry-one'));
    assert.equal(await stat(overlay).catch(() => undefined), undefined, 'no overlay');
    const text = await ferry(['customize', template, '--timezone', 'Europe/Berlin', '--dry-run']);
    assert.equal(text.exitCode, 0, text.stderr);
    assert.match(text.stdout, /\/etc\/localtime: .* -> -> \.\.\/usr\/share\/zoneinfo\/Europe\/Berlin/);
    assert.match(text.stdout, /nothing was written/);
    assert.equal(await sha256(template), templateSum);
  });

  it('a conversion customizes on the way (convert --hostname --new-identity --timezone)', async () => {
    const target = join(dir, 'converted.qcow2');
    const r = await ferry(['convert', template, target, '--mode', 'block', '--no-verify', '--no-progress', '--hostname', 'converted-1', '--new-identity', '--timezone', 'Europe/Berlin', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    const result = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.ok(result.customized.some((c: any) => c.file === '/etc/hostname'), JSON.stringify(result.customized));
    const f = await readGuest(target, 'qcow2', ['etc/hostname', 'etc/machine-id', 'etc/ssh/ssh_host_ed25519_key', 'etc/localtime']);
    assert.equal(f['etc/hostname']?.text, 'converted-1\n');
    assert.equal(f['etc/machine-id']?.text, '');
    assert.equal(f['etc/ssh/ssh_host_ed25519_key'], undefined);
    assert.equal(f['etc/localtime']?.link, '../usr/share/zoneinfo/Europe/Berlin');
    // refused on the source before the target exists
    const bad = join(dir, 'converted-bad.qcow2');
    const refused = await ferry(['convert', template, bad, '--mode', 'block', '--no-verify', '--no-progress', '--timezone', 'Nowhere/Zone']);
    assert.match(refused.stderr, /^ferry: CUSTOMIZE_UNKNOWN_TIMEZONE: /);
    assert.equal(await stat(bad).catch(() => undefined), undefined, 'no target');
  });

  it('refuses each bad input with a typed error before writing: image unchanged, no overlay left', async () => {
    const notKey = join(dir, 'not-a-key.pub');
    await writeFile(notKey, 'ssh-ed25519 this-is-not-base64-of-a-key user@host\n');
    const privateKey = keyFile;
    const noOs = (await buildDataDisks()).mbr;
    const noOsSum = await sha256(noOs);
    const cases: { args: string[]; image?: string; code: string; re: RegExp }[] = [
      { args: ['--ip', `${IFACE}=10.234.0.300/24`], code: 'USAGE', re: /is not an IPv4 address/ },
      { args: ['--ip', `${IFACE}=fe80::1/64`], code: 'USAGE', re: /not an IPv4 address/ },
      { args: ['--hostname', 'bad_name!'], code: 'USAGE', re: /--hostname bad_name!/ },
      { args: ['--ssh-authorized-key', `${keyFile}.pub`, '--user', 'nosuchuser'], code: 'CUSTOMIZE_UNKNOWN_USER', re: /no user nosuchuser/ },
      { args: ['--ssh-authorized-key', notKey, '--user', 'root'], code: 'USAGE', re: /not an OpenSSH public key/ },
      { args: ['--ssh-authorized-key', privateKey, '--user', 'root'], code: 'USAGE', re: /not an OpenSSH public key/ },
      { args: ['--ssh-authorized-key', `${keyFile}.pub`], code: 'USAGE', re: /needs --user/ },
      { args: ['--timezone', 'Mars/Olympus_Mons'], code: 'CUSTOMIZE_UNKNOWN_TIMEZONE', re: /no zone Mars\/Olympus_Mons/ },
      { args: ['--timezone', '../../etc/passwd'], code: 'USAGE', re: /--timezone/ },
      { args: ['--hostname', 'fine'], image: noOs, code: 'NO_OS_FOUND', re: /no operating system/ },
      { args: [], code: 'USAGE', re: /nothing to customize/ },
    ];
    // run side by side: most wait on node's start-up and the image's open, not on a CPU
    const runs = await Promise.all(cases.map((c, i) => ferry(['customize', c.image ?? template, '--overlay', join(dir, `bad-${i}.qcow2`), ...c.args])));
    for (const [i, c] of cases.entries()) {
      const overlay = join(dir, `bad-${i}.qcow2`);
      const r = runs[i];
      const what = `${c.args.join(' ')}: exit ${r.exitCode} ${r.stderr}`;
      assert.notEqual(r.exitCode, 0, what);
      assert.match(r.stderr, new RegExp(`^ferry: ${c.code}: `), what);
      assert.match(r.stderr, c.re, what);
      assert.doesNotMatch(r.stderr, /internal error/, what);
      assert.equal(await stat(overlay).catch(() => undefined), undefined, `${what}: no overlay left`);
    }
    // an in-place customization refused on the guest's content writes nothing either
    const inPlace = await ferry(['customize', template, '--timezone', 'Nowhere/Zone']);
    assert.match(inPlace.stderr, /CUSTOMIZE_UNKNOWN_TIMEZONE/);
    assert.equal(await sha256(template), templateSum);
    assert.equal(await sha256(noOs), noOsSum);
  });
});
