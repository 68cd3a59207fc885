// Deploy (V2P) and capture (P2V) end to end with real parts: a "physical
// machine" (qemu: q35, AHCI disk, e1000e NIC, SMBIOS strings, network boot
// first) on a bridge inside a network namespace with `ferry pxe serve`
// (dnsmasq) and `ferry serve` on that bridge. The machine PXE-boots the Ferry
// agent (iPXE from Debian's ipxe-qemu ROM), registers; the virtio-only Debian
// test guest from the catalog is deployed onto its 8 GiB SATA disk with a new
// hostname and address — the first attempt cut by powering the machine off
// mid-copy, its retry after the machine network-boots again completing — and
// it boots from that disk and prints its marker. Then
// the same machine is captured back into a qcow2 that both Ferry's verify and
// the independent comparison find equivalent to what was on the disk, and that
// boots as a VM. Judged by the serial console (this file's own regexes),
// blkid, sfdisk and debugfs on the machine's disk; the template never changes.
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa, type ResultPromise } from 'execa';
import { FERRY, ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { bootBudget } from './support/boot-budget.js';
import { buildDebianGuest } from './support/fixtures.js';
import { independentCompare } from './support/independent.js';
import { LAN_ADDR, makeLab, type Lab, type Machine, type MachineSpec } from './support/lab.js';
import { bootImage } from '../src/verify/boot.js';

const ROOT_UUID = '1b7c4f2a-9d3e-4e51-8a60-f0e1d2c3b4a5';
const MAC = '52:54:00:f3:72:01';
const UUID = '7f1d2c3b-4a59-4e68-9d7c-0b1a2c3d4e5f';
const SERIAL = 'FERRY-SN-0001';
const HOSTNAME = 'deployed-01';
const PORT = 8470;

guardMachine();
const dir = await tempDir('ferrydeploy-');
const home = join(dir, 'home');
// a machine that stops answering is given up after 10 s (30 by default)
const env = { FERRY_HOME: home, FERRY_RECONNECT_SECONDS: '10' };

let lab: Lab | undefined;
let template = '', templateSum = '';
let serve: ResultPromise | undefined, pxe: ResultPromise | undefined;
let serveOut = '', pxeOut = '';
let machineId = '';
const machineDisk = join(dir, 'machine-disk.qcow2');
const spec: MachineSpec = { name: 'box1', disk: machineDisk, mac: MAC, uuid: UUID, serial: SERIAL, manufacturer: 'Ferry Labs', product: 'Bare Metal 1' };
let machine: Machine | undefined;

/** a long-running process inside the lab; resolves once its output matches ready */
async function startInLab(args: string[], ready: RegExp, sink: (s: string) => void): Promise<{ p: ResultPromise }> {
  const p = execa('ip', lab!.inNs('node', [FERRY, ...args]), { env, reject: false, stdin: 'ignore', buffer: false, all: true, forceKillAfterDelay: false });
  let out = '';
  p.all!.on('data', (d: Buffer) => { out += String(d); sink(out); });
  const deadline = Date.now() + 60_000;
  while (!ready.test(out)) {
    if (p.exitCode !== null || Date.now() > deadline) throw new Error(`ferry ${args[0]} did not start:\n${out}`);
    await new Promise(r => setTimeout(r, 100));
  }
  // wrapped: an async function would wait for the process itself if it returned it
  return { p };
}

async function stop(p: ResultPromise | undefined): Promise<void> {
  if (!p || p.exitCode !== null) return;
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
  await p;
  clearTimeout(t);
}

async function machinesJson(): Promise<any[]> {
  const r = await ferry(['machines', 'list', '--json'], { env });
  assert.equal(r.exitCode, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe('deploy and capture through the network-booted agent', () => {
  before(async () => {
    template = await buildDebianGuest();
    templateSum = await sha256(template);
    const added = await ferry(['images', 'add', template, '--name', 'debian-template'], { env });
    assert.equal(added.exitCode, 0, added.stderr);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', machineDisk, '8G']);
    lab = await makeLab(dir);
    serve = (await startInLab(['serve', '--listen', `0.0.0.0:${PORT}`, '--log-level', 'warn'], /listening on/, s => { serveOut = s; })).p;
    // built once the service has made its enrolment token: PXE gets the kernel and initrd, and the ISO
    // (the capture boots it, as virtual media) carries the server's URL and that token
    const built = await ferry(['agent', 'build', '--server', `http://${LAN_ADDR}:${PORT}`, '--enrol-token-file', join(home, 'enrol-token')], { env });
    assert.equal(built.exitCode, 0, built.stderr);
    pxe = (await startInLab(['pxe', 'serve', '--interface', 'br0', '--dhcp-range', '10.234.0.100,10.234.0.150', '--server', `http://${LAN_ADDR}:${PORT}`], /ready/, s => { pxeOut = s; })).p;
  });

  after(async () => {
    await stop(pxe);
    await stop(serve);
    await lab?.remove();
    if (template) assert.equal(await sha256(template), templateSum, 'the template image was never written');
  });

  it('the machine PXE-boots the agent and registers with its own inventory', async () => {
    machine = await lab!.start(spec);
    const m = await machine.waitFor(/FERRY-AGENT: registered (m-[0-9a-f]+)/, 300_000);
    machineId = m[1];
    const list = await machinesJson();
    assert.equal(list.length, 1, JSON.stringify(list));
    const rec = list[0];
    assert.equal(rec.id, machineId);
    assert.equal(rec.smbiosUuid, UUID);
    assert.equal(rec.serial, SERIAL);
    assert.ok(rec.macs.map((x: string) => x.toLowerCase()).includes(MAC), JSON.stringify(rec.macs));
    assert.equal(rec.disks.length, 1, JSON.stringify(rec.disks));
    assert.equal(rec.disks[0].sizeBytes, 8 * 2 ** 30);
    assert.ok(['discovered', 'ready'].includes(rec.state), rec.state);
  });

  it('refuses bad input before anything is written: tokens, garbage, firmware, size, drivers', async () => {
    assert.ok(machineId, 'registered first');
    const base = `http://${lab!.addr}:${PORT}`;
    const enrol = (await readFile(join(home, 'enrol-token'), 'utf8')).trim();
    const real = (JSON.parse((await ferry(['machines', 'show', machineId, '--json'], { env })).stdout)).machine.inventory;
    const post = (token: string | undefined, body: string) => fetch(`${base}/machines/register`, {
      method: 'POST', body, headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    });
    const before = (await machinesJson()).length;
    assert.equal((await post('0'.repeat(64), JSON.stringify(real))).status, 401);
    assert.equal((await post(undefined, JSON.stringify(real))).status, 401);
    assert.equal((await post(enrol, '{"ferryInventory":1,"nics":"no"}')).status, 400);
    assert.equal((await post(enrol, 'not json')).status, 400);
    assert.equal((await machinesJson()).length, before, 'nothing recorded');

    // other "machines" registered by an API client, each unfit in one way
    let n = 0;
    const variant = async (change: (inv: any) => void): Promise<string> => {
      const inv = JSON.parse(JSON.stringify(real));
      n++;
      inv.system.uuid = `00000000-0000-4000-8000-00000000000${n}`;
      for (const nic of inv.nics) nic.mac = `02:00:00:00:00:0${n}`;
      change(inv);
      const r = await post(enrol, JSON.stringify(inv));
      const text = await r.text();
      assert.equal(r.status, 201, text);
      return (JSON.parse(text) as { id: string }).id;
    };
    const deploy = (id: string, extra: string[] = []) => ferry(['deploy', 'debian-template', '--machine', id, ...extra], { env });
    const uefi = await variant(inv => { inv.firmware.type = 'UEFI'; });
    const r1 = await deploy(uefi);
    assert.equal(r1.exitCode, 5, r1.stderr);
    assert.match(r1.stderr, /FIRMWARE_MISMATCH: .*BIOS.*UEFI/);
    const small = await variant(inv => { inv.disks[0].sizeBytes = 256 * 2 ** 20; });
    const r2 = await deploy(small, ['--dry-run']);
    assert.equal(r2.exitCode, 5, r2.stderr);
    assert.match(r2.stderr, /DOES_NOT_FIT: the data of .* needs at least \d+ bytes but disk \/dev\/sda of machine m-\w+ has 268435456/);
    const odd = await variant(inv => { inv.nics[0].pci.modalias = 'pci:v00001234d0000ABCDsv00001234sd00000001bc02sc00i00'; });
    const r3 = await deploy(odd, ['--dry-run']);
    assert.equal(r3.exitCode, 5, r3.stderr);
    assert.match(r3.stderr, /DRIVER_MISSING: .*PCI device 1234:abcd/);
    // the failed job took nothing from the real machine, and none of these has an agent that was asked to export
    for (const id of [uefi, small, odd]) {
      const show = JSON.parse((await ferry(['machines', 'show', id, '--json'], { env })).stdout);
      assert.equal(show.machine.work, null, `no work was handed to ${id}`);
    }
  });

  it('deploys the catalog image with a new identity; powered off mid-copy the job fails naming the machine; a retry after it boots again completes and the machine boots it', async () => {
    assert.ok(machineId, 'registered first');
    // one deploy carries both checks: the first attempt is cut by a power-off, its retry is the round trip
    // the machine takes its address from the lab's DHCP server (ferry pxe serve's dnsmasq): the template
    // has ifupdown without a DHCP client, so systemd-networkd is given the interface
    const ident = ['--hostname', HOSTNAME, '--dhcp', 'enp0s2'];
    const dry = await ferry(['deploy', 'debian-template', '--machine', machineId, ...ident, '--dry-run', '--json'], { env });
    assert.equal(dry.exitCode, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout);
    assert.equal(plan.disk.sizeBytes, 8 * 2 ** 30);
    // the preview names, file by file, what re-fit and customization would change: the machine's drivers in the initramfs, the hostname
    const changed = (plan.changes as { file: string; after: string }[]);
    assert.ok(changed.some(c => /initrd/.test(c.file) && /\b(ahci|e1000e)\b/.test(c.after)), JSON.stringify(changed));
    assert.ok(changed.some(c => c.file === '/etc/hostname' && c.after.includes(HOSTNAME)), JSON.stringify(changed));
    assert.ok(changed.some(c => c.file === '/etc/systemd/network/10-ferry-enp0s2.network' && /DHCP=yes/.test(c.after)), JSON.stringify(changed));
    const sub = await ferry(['deploy', 'debian-template', '--machine', machineId, ...ident, '--detach'], { env });
    assert.equal(sub.exitCode, 0, sub.stderr);
    const jobId = sub.stdout.trim();
    // a second deploy to the same machine while the first runs: refused, nothing queued
    const second = await ferry(['deploy', 'debian-template', '--machine', machineId, '--hostname', 'other'], { env });
    assert.equal(second.exitCode, 4, second.stderr);
    assert.match(second.stderr, /MACHINE_BUSY/);
    // the agent that registered is still up and waiting: it gets the export
    await machine!.waitFor(/FERRY-AGENT: exporting \/dev\/sda rw/, 300_000);
    const cut = await waitForJob(jobId, 300_000, copying); // the copy is under way: bytes counted
    assert.equal(cut.state, 'running', `the job was still running when the machine lost power: ${JSON.stringify(cut.error)}`);
    await machine!.powerOff();
    const failed = await waitForJob(jobId, 300_000);
    assert.equal(failed.state, 'failed');
    assert.equal(failed.error.code, 'MACHINE_LOST', JSON.stringify(failed.error));
    assert.match(failed.error.message, new RegExp(machineId));
    assert.equal((await machinesJson()).find(x => x.id === machineId).state, 'failed');

    machine = await lab!.start(spec);
    const from = (await machine.console()).length;
    const retry = await ferry(['jobs', 'retry', jobId], { env });
    assert.equal(retry.exitCode, 0, retry.stderr);
    const job = await waitForJob(jobId, 300_000);
    assert.equal(job.state, 'done', JSON.stringify(job.error) + serveOut.slice(-2000));
    // this file's own reading of the deployed system's console
    const mark = await machine.waitFor(/FERRY-BOOT-OK root=(\S+) host=(\S+) net=(\S+)/, 300_000, from);
    assert.equal(mark[1], ROOT_UUID);
    assert.equal(mark[2], HOSTNAME);
    // an address leased from the lab's range (ferry pxe serve --dhcp-range 10.234.0.100,10.234.0.150)
    const leased = /^enp0s2:(10\.234\.0\.(\d+))\/24$/.exec(mark[3]);
    assert.ok(leased && Number(leased[2]) >= 100 && Number(leased[2]) <= 150, `a DHCP address on enp0s2: ${mark[3]}`);
    const show = JSON.parse((await ferry(['machines', 'show', machineId, '--json'], { env })).stdout);
    assert.equal(show.machine.state, 'deployed');
    assert.ok(show.history.some((h: { event: string; detail: string }) => h.event === 'first-boot' && h.detail.includes(leased![1])), JSON.stringify(show.history));
    await waitForExit(machine);
    // the machine's disk, read without Ferry: the root fs keeps its UUID and fills the 8 GiB disk
    const raw = join(dir, 'check.raw');
    await execa('qemu-img', ['convert', '-O', 'raw', machineDisk, raw]);
    const table = JSON.parse(String((await execa('sfdisk', ['--json', raw])).stdout)).partitiontable;
    const lastEnd = Math.max(...table.partitions.map((p: { start: number; size: number }) => p.start + p.size));
    assert.ok(lastEnd * 512 > 7.9 * 2 ** 30, `the partitions end at ${lastEnd * 512}: the 2 GiB template was fitted to the 8 GiB disk`);
    const loop = String((await execa('losetup', ['-r', '--show', '-f', '-o', String(table.partitions[0].start * 512), '--sizelimit', String(table.partitions[0].size * 512), raw])).stdout).trim();
    try {
      assert.equal(String((await execa('blkid', ['-s', 'UUID', '-o', 'value', loop])).stdout).trim(), ROOT_UUID);
      const cat = async (path: string) => String((await execa('debugfs', ['-R', `cat ${path}`, loop])).stdout);
      assert.equal((await cat('/etc/hostname')).trim(), HOSTNAME);
      const machineIdFile = (await cat('/etc/machine-id')).trim();
      assert.match(machineIdFile, /^[0-9a-f]{32}$/);
      assert.notEqual(machineIdFile, TEMPLATE_MACHINE_ID, 'a fresh machine-id');
      assert.doesNotMatch(await cat('/etc/network/interfaces'), /iface enp0s2/, 'ifupdown no longer configures the interface');
      assert.match(await cat('/etc/systemd/network/10-ferry-enp0s2.network'), /\[Match\]\nName=enp0s2\n[\s\S]*DHCP=yes/);
      const link = String((await execa('debugfs', ['-R', 'stat /etc/systemd/system/multi-user.target.wants/systemd-networkd.service', loop])).stdout);
      assert.match(link, /Fast link dest: "\/lib\/systemd\/system\/systemd-networkd\.service"|Type: symlink/, link);
    } finally {
      await execa('losetup', ['-d', loop]);
      await execa('rm', ['-f', raw]);
    }
  });

  it('captures the machine back, booted from the agent ISO: equivalent to what was on its disk, the disk left untouched, and it boots as a VM', async () => {
    assert.ok(machineId, 'registered first');
    // what the disk holds now (after the deployed system's own boot), kept for the comparison
    const snapshot = join(dir, 'deployed.qcow2');
    await copyFile(machineDisk, snapshot);
    const out = join(dir, 'captured.qcow2');
    const sub = await ferry(['capture', '--machine', machineId, out, '--detach'], { env });
    assert.equal(sub.exitCode, 0, sub.stderr);
    await waitForStep(sub.stdout.trim(), 'request export');
    // the operator mounts the agent's ISO as virtual media and powers the machine on: it boots the ISO, not PXE
    machine = await lab!.start({ ...spec, cdrom: join(home, 'agent', 'ferry-agent.iso') });
    const job = await waitForJob(sub.stdout.trim(), 300_000);
    assert.equal(job.state, 'done', JSON.stringify(job.error) + serveOut.slice(-2000));
    const log = await machine.console();
    assert.match(log, /FERRY-AGENT: exporting \/dev\/sda ro/);
    assert.match(log, /Ferry agent/, 'GRUB of the ISO showed its menu');
    assert.doesNotMatch(log, /iPXE/, 'the agent came from the ISO, not from the network');
    // told to boot from its disk, the machine restarts into the ISO again: the disk is never booted here,
    // so after power-off it must read exactly as before the capture (qemu-img's own comparison of what a
    // guest sees): the agent and the capture wrote nothing to it
    await machine.powerOff();
    const cmp = await execa('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', snapshot, machineDisk], { reject: false });
    assert.equal(cmp.exitCode, 0, `the machine's disk changed during the capture: ${cmp.stdout}${cmp.stderr}`);
    assert.ok(JSON.parse(await readFile(`${out}.inventory.json`, 'utf8')).system.serial === SERIAL, 'the machine\'s inventory is kept beside the capture');
    const v = await ferry(['verify', snapshot, out], { env });
    assert.equal(v.exitCode, 0, v.stdout + v.stderr);
    assert.deepEqual(await independentCompare(snapshot, 'qcow2', out, 'qcow2'), []);
    const boot = await bootImage({ image: out, format: 'qcow2', ...bootBudget(300_000) });
    const mark = /FERRY-BOOT-OK root=(\S+) host=(\S+)/.exec(boot.serialLog);
    assert.ok(mark, boot.serialLog.slice(-2000));
    assert.equal(mark[1], ROOT_UUID);
    assert.equal(mark[2], HOSTNAME);
  });
});

const TEMPLATE_MACHINE_ID = '0f3e2d1c4b5a69788796a5b4c3d2e1f0';

/**
 * Poll `ferry jobs show ID --json` until the job ends (or `until` holds). The
 * job is given up on only once nothing moved for idleMs: no step changed, no
 * progress bytes, nothing new on the machine's console (it boots under TCG, at
 * whatever speed the host leaves it). A slow job on a busy host is still moving.
 */
async function waitForJob(id: string, idleMs: number, until?: (job: any) => boolean): Promise<any> {
  let last = '', lastChange = Date.now();
  for (;;) {
    const r = await ferry(['jobs', 'show', id, '--json'], { env });
    assert.equal(r.exitCode, 0, r.stderr);
    const job = JSON.parse(r.stdout);
    if (['done', 'failed', 'cancelled'].includes(job.state) || until?.(job)) return job;
    const seen = JSON.stringify([job.state, job.steps, machine && !machine.exited() ? (await machine.console()).length : 0]);
    if (seen !== last) { last = seen; lastChange = Date.now(); }
    if (Date.now() - lastChange > idleMs) throw new Error(`job ${id} still ${job.state}, nothing moved for ${idleMs / 1000} s: ${JSON.stringify(job.steps)}`);
    await new Promise(r2 => setTimeout(r2, 2000));
  }
}
/** some step of the job has copied bytes */
const copying = (job: any) => job.steps.some((s: { progress?: { bytes: number } }) => (s.progress?.bytes ?? 0) > 0);

/** poll until the job runs `step` (the machine's next network boot gets the agent from then on) */
async function waitForStep(id: string, step: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const job = JSON.parse((await ferry(['jobs', 'show', id, '--json'], { env })).stdout);
    if (job.steps.some((s: { name: string; state: string }) => s.name === step && s.state !== 'pending')) return;
    if (job.state !== 'queued' && job.state !== 'running') throw new Error(`job ${id} ended (${job.state}) before ${step}: ${JSON.stringify(job.error)}`);
    if (Date.now() > deadline) throw new Error(`job ${id} did not reach ${step}`);
    await new Promise(r => setTimeout(r, 1000));
  }
}

/** the deployed system powers the machine off after its marker: wait for qemu to end */
async function waitForExit(m: Machine): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!m.exited() && Date.now() < deadline) await new Promise(r => setTimeout(r, 500));
  if (!m.exited()) await m.powerOff();
}
