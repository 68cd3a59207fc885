// The machine registry end to end: a real `ferry serve` (FERRY_HOME in a temp
// dir) driven over HTTP as an agent and as the operator would; the registry
// opened from this process on the same SQLite file plays the deploy job (it
// may run in another process than the API); `ferry machines` through the real
// CLI. Then `ferry pxe serve` (dnsmasq) on one end of a veth pair, with
// busybox's DHCP and TFTP clients in a network namespace on the other.
import assert from 'node:assert/strict';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createSocket } from 'node:dgram';
import { request } from 'node:http';
import { execa, type ResultPromise } from 'execa';
import { MachineRegistry } from '../src/machines/registry.js';
import { Api, startServe, type Serve } from './support/api-client.js';
import { FERRY, ferry, guardMachine, sha256, tempDir, tmpdir } from './support/harness.js';
import { makeNetnsLink, type NetnsLink } from './support/netns.js';

let serve: Serve | undefined;
let registry: MachineRegistry | undefined;
let apiToken = '', enrolToken = '';
const agentTokens: string[] = [];
// registered first: the service must be gone before the guard and the temp dir's removal
after(async () => {
  registry?.close();
  if (!serve) return;
  const code = await serve.stop();
  assert.equal(code, 0, `ferry serve exit status; its output:\n${serve.output()}`);
});
guardMachine();
const dir = await tempDir('ferry-machines-');
const home = join(dir, 'home');
const agentDir = join(dir, 'agent');
const env = { FERRY_HOME: home };

let api: Api, enrol: Api;
const UUID_A = '4c4c4544-0042-3510-8056-b4c04f4e3032';
const MAC_A1 = '52:54:00:aa:00:01', MAC_A2 = '52:54:00:aa:00:02', MAC_B = '52:54:00:bb:00:01';

const inventory = (o: { uuid?: string | null; macs: string[]; serial?: string }) => ({
  ferryInventory: 1,
  hostname: 'box',
  system: { manufacturer: 'Dell Inc.', model: 'PowerEdge R640', serial: o.serial ?? 'SN-1', uuid: o.uuid ?? null },
  nics: [...o.macs.map((mac, i) => ({ name: `eno${i + 1}`, mac, virtual: false })), { name: 'virbr0', mac: '52:54:00:99:99:99', virtual: true }],
  disks: [{ name: 'sda', path: '/dev/sda', sizeBytes: 480103981056, model: 'PERC H730P', serial: 'DISK-SN-1' }],
});

const machineCount = async () => (await api.get('/machines')).body.machines.length as number;

async function register(body: unknown, token = enrolToken) {
  const r = await new Api(api.base, token).req('POST', '/machines/register', body);
  if (r.status < 300) agentTokens.push(r.body.agentToken);
  return r;
}

/** a raw body (not JSON-encoded by the client) */
async function postRaw(path: string, body: string, token: string, contentType = 'application/json') {
  const r = await fetch(api.base + path, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': contentType }, body });
  return { status: r.status, body: await r.json().catch(() => undefined) as any };
}

before(async () => {
  serve = await startServe(['--listen', '127.0.0.1:0', '--agent-dir', agentDir, '--log-level', 'info'], env);
  apiToken = (await readFile(serve.tokenPath, 'utf8')).trim();
  enrolToken = (await readFile(join(home, 'enrol-token'), 'utf8')).trim();
  api = new Api(serve.base, apiToken);
  enrol = new Api(serve.base, enrolToken);
  registry = new MachineRegistry(home);
});

describe('machine registry behind ferry serve', () => {
  let idA = '', tokenA = '', idB = '', tokenB = '';

  it('keeps the enrolment token in FERRY_HOME/enrol-token, mode 0600, apart from the API token', async () => {
    assert.equal((await stat(join(home, 'enrol-token'))).mode & 0o777, 0o600);
    assert.match(enrolToken, /^[0-9a-f]{64}$/);
    assert.notEqual(enrolToken, apiToken);
    const other = join(dir, 'home-unsafe');
    await mkdir(other);
    await writeFile(join(other, 'enrol-token'), `${'0'.repeat(64)}\n`, { mode: 0o640 });
    const r = await ferry(['serve', '--listen', '127.0.0.1:0'], { env: { FERRY_HOME: other } });
    assert.equal(r.exitCode, 8);
    assert.match(r.stderr, /^ferry: ENROL_TOKEN_UNSAFE: the enrolment token file .*enrol-token can be read or written by its group .*chmod 600/m);
  });

  it('registers a machine (201), and the same SMBIOS UUID again updates it (200, same id, MACs merged)', async () => {
    const r1 = await register(inventory({ uuid: UUID_A.toUpperCase(), macs: [MAC_A1] }));
    assert.equal(r1.status, 201, JSON.stringify(r1.body));
    assert.match(r1.body.id, /^m-[0-9a-f]{8}$/);
    assert.match(r1.body.agentToken, /^[0-9a-f]{64}$/);
    assert.equal(r1.body.state, 'discovered');
    const r2 = await register(inventory({ uuid: UUID_A, macs: [MAC_A2], serial: 'SN-2' }));
    assert.equal(r2.status, 200);
    assert.equal(r2.body.id, r1.body.id);
    assert.notEqual(r2.body.agentToken, r1.body.agentToken);
    assert.equal(await machineCount(), 1);
    const m = (await api.get(`/machines/${r1.body.id}`)).body.machine;
    assert.deepEqual(m.macs, [MAC_A1, MAC_A2], 'MACs of physical NICs only, merged');
    assert.equal(m.smbiosUuid, UUID_A);
    assert.equal(m.serial, 'SN-2');
    [idA, tokenA] = [r2.body.id, r2.body.agentToken];
  });

  it('knows a machine without a UUID by any of its MACs', async () => {
    const r1 = await register(inventory({ macs: [MAC_B] }));
    assert.equal(r1.status, 201);
    const r2 = await register(inventory({ uuid: '00000000-0000-0000-0000-000000000000', macs: ['52:54:00:bb:00:02', MAC_B] }));
    assert.equal(r2.status, 200, 'an all-zero UUID is no UUID');
    assert.equal(r2.body.id, r1.body.id);
    assert.equal(await machineCount(), 2);
    assert.deepEqual((await api.get(`/machines/${r1.body.id}`)).body.machine.macs, [MAC_B, '52:54:00:bb:00:02']);
    [idB, tokenB] = [r2.body.id, r2.body.agentToken];
  });

  it('401 without the enrolment token, with a wrong one or with the API token: nothing recorded; the enrolment token works nowhere else', async () => {
    const before = await api.get('/machines');
    for (const t of [undefined, '0'.repeat(64), apiToken]) {
      const r = await new Api(api.base, t).req('POST', '/machines/register', inventory({ uuid: 'aaaaaaaa-0000-4000-8000-000000000001', macs: ['52:54:00:cc:00:01'] }));
      assert.equal(r.status, 401, `token ${t === apiToken ? 'API' : t}`);
      assert.equal(r.body.error, 'UNAUTHORIZED');
    }
    assert.deepEqual((await api.get('/machines')).body, before.body);
    for (const [m, p] of [['GET', '/machines'], ['GET', `/machines/${idA}`], ['DELETE', `/machines/${idA}`], ['GET', '/jobs'], ['GET', '/openapi.json'], ['GET', `/machines/${idA}/work?wait=0`]] as const) {
      assert.equal((await enrol.req(m, p)).status, 401, `${m} ${p} with the enrolment token`);
    }
    assert.equal(await machineCount(), 2);
  });

  it('400 INVENTORY_INVALID for garbage, nothing recorded', async () => {
    const before = (await api.get('/machines')).body;
    const bodies: [string, string][] = [
      ['not JSON', 'this is not json'],
      ['a JSON array', '[1,2,3]'],
      ['no ferryInventory', JSON.stringify({ system: {}, nics: [], disks: [] })],
      ['another schema', JSON.stringify({ ...inventory({ uuid: UUID_A, macs: [MAC_A1] }), ferryInventory: 2 })],
      ['nics not an array', JSON.stringify({ ...inventory({ uuid: UUID_A, macs: [MAC_A1] }), nics: 'eth0' })],
      ['no system', JSON.stringify({ ferryInventory: 1, nics: [], disks: [] })],
      ['a bad MAC', JSON.stringify(inventory({ uuid: UUID_A, macs: ['zz:zz'] }))],
      ['no UUID and no MAC', JSON.stringify(inventory({ macs: [] }))],
      ['empty', ''],
    ];
    for (const [what, body] of bodies) {
      const r = await postRaw('/machines/register', body, enrolToken);
      assert.equal(r.status, 400, what);
      assert.equal(r.body?.error, 'INVENTORY_INVALID', what);
    }
    assert.equal((await postRaw('/machines/register', 'x', enrolToken, 'text/plain')).status, 400);
    assert.deepEqual((await api.get('/machines')).body, before);
  });

  it('work: a long poll answers wait after its time, and work set (from another process) at once; reports are recorded', async () => {
    const agent = new Api(api.base, tokenA);
    let t = Date.now();
    const idle = await agent.get(`/machines/${idA}/work?wait=1`);
    assert.equal(idle.status, 200);
    assert.deepEqual(idle.body, { action: 'wait' });
    assert.ok(Date.now() - t >= 900 && Date.now() - t < 4000, `waited ${Date.now() - t} ms`);
    assert.equal(registry!.mustGet(idA).state, 'ready', 'a polling agent makes its machine ready');
    assert.equal(registry!.mustGet(idA).peer, '127.0.0.1');

    const pskKey = 'ab'.repeat(32);
    t = Date.now();
    const poll = agent.get(`/machines/${idA}/work?wait=30`);
    await new Promise(r => setTimeout(r, 500));
    const { pskFile } = registry!.setWork(idA, { action: 'export', ticket: 't-1', disk: '/dev/sda', writable: true, port: 10809, exportName: 'sda', pskIdentity: 'ferry', pskKey });
    const got = await poll;
    assert.ok(Date.now() - t < 3000, `the work came after ${Date.now() - t} ms`);
    assert.deepEqual(got.body, { action: 'export', ticket: 't-1', disk: '/dev/sda', writable: true, port: 10809, exportName: 'sda', pskIdentity: 'ferry', pskKey });
    // the key: a 0600 file in --tls-psk-file's format, never in the database
    assert.equal(pskFile, join(home, 'machines', idA, 'psk-t-1'));
    assert.equal((await stat(pskFile!)).mode & 0o777, 0o600);
    assert.equal(await readFile(pskFile!, 'utf8'), `ferry:${pskKey}\n`);
    for (const f of (await readdir(home)).filter(n => n.startsWith('ferry.db'))) {
      assert.ok(!(await readFile(join(home, f))).includes(pskKey), `the PSK key is in ${f}`);
    }
    // handed out again until reported done
    assert.equal((await agent.get(`/machines/${idA}/work?wait=0`)).body.ticket, 't-1');
    const waiting = registry!.waitForStatus(idA, 't-1', ['exporting'], 10_000);
    assert.equal((await agent.post(`/machines/${idA}/status`, { ticket: 't-1', state: 'exporting' })).status, 204);
    assert.equal((await waiting).state, 'exporting');
    assert.equal(registry!.statusOf(idA, 't-1')?.state, 'exporting');
    assert.deepEqual((await agent.get(`/machines/${idA}/work?wait=0`)).body, { action: 'wait' });

    registry!.setWork(idA, { action: 'unexport', ticket: 't-1' });
    assert.deepEqual((await agent.get(`/machines/${idA}/work?wait=0`)).body, { action: 'unexport', ticket: 't-1' });
    assert.equal((await agent.post(`/machines/${idA}/status`, { ticket: 't-1', state: 'unexported' })).status, 204);
    assert.equal((await registry!.waitForStatus(idA, 't-1', ['unexported'], 1000)).state, 'unexported');
    await assert.rejects(stat(pskFile!), 'the key file goes once unexported');

    registry!.setWork(idA, { action: 'export', ticket: 't-2', disk: '/dev/sda', writable: false, port: 10809, exportName: 'sda', pskIdentity: 'ferry', pskKey });
    assert.equal((await agent.post(`/machines/${idA}/status`, { ticket: 't-2', state: 'failed', message: 'nbdkit: no such disk' })).status, 204);
    await assert.rejects(registry!.waitForStatus(idA, 't-2', ['exporting'], 1000), (e: any) => e.code === 'AGENT_FAILED' && /no such disk/.test(e.message));
    await assert.rejects(registry!.waitForStatus(idA, 't-3', ['exporting'], 300), (e: any) => e.code === 'AGENT_TIMEOUT');

    registry!.setWork(idA, { action: 'boot-disk' });
    assert.deepEqual((await agent.get(`/machines/${idA}/work`)).body, { action: 'boot-disk' });
    assert.equal((await agent.post(`/machines/${idA}/status`, { state: 'booting-disk' })).status, 204);
    assert.equal(registry!.statusOf(idA, null)?.state, 'booting-disk');
    for (const bad of [{ state: 'dancing' }, { ticket: 't-1' }, { state: 'exporting' }, [1]]) {
      const r = await agent.post(`/machines/${idA}/status`, bad);
      assert.equal(r.status, 400, JSON.stringify(bad));
      assert.equal(r.body.error, 'STATUS_INVALID');
    }
    const events = registry!.history(idA).map(h => h.event);
    for (const e of ['agent-ready', 'work', 'agent-exporting', 'agent-unexported', 'agent-failed', 'agent-booting-disk']) assert.ok(events.includes(e), `${e} in ${events}`);
  });

  it("refuses another machine's token and the old token after registering again", async () => {
    assert.equal((await new Api(api.base, tokenA).get(`/machines/${idB}/work?wait=0`)).status, 401);
    const again = await register(inventory({ uuid: UUID_A, macs: [MAC_A1] }));
    assert.equal(again.status, 200);
    assert.equal((await new Api(api.base, tokenA).get(`/machines/${idA}/work?wait=0`)).status, 401);
    assert.equal((await new Api(api.base, tokenA).post(`/machines/${idA}/status`, { state: 'booting-disk' })).status, 401);
    tokenA = again.body.agentToken;
    assert.equal((await new Api(api.base, tokenA).get(`/machines/${idA}/work?wait=0`)).status, 200);
  });

  it('begin: one job at a time (MACHINE_BUSY names the machine, its state and the job), then finish', async () => {
    const m = registry!.begin(idA, 'deploying', 'job-1', 'web-01.qcow2');
    assert.equal(m.state, 'deploying');
    assert.throws(() => registry!.begin(idA, 'capturing', 'job-2'), (e: any) =>
      e.code === 'MACHINE_BUSY' && e.exitCode === 4 && e.message.includes(idA) && e.message.includes('deploying') && e.message.includes('job-1'));
    assert.throws(() => registry!.forget(idA), (e: any) => e.code === 'MACHINE_BUSY');
    // its agent polling does not free it
    await new Api(api.base, tokenA).get(`/machines/${idA}/work?wait=0`);
    assert.equal(registry!.mustGet(idA).state, 'deploying');
    assert.equal(registry!.finish(idA, 'deployed', 'deployed').state, 'deployed');
    assert.equal(registry!.mustGet(idA).image, 'web-01.qcow2');
    assert.equal(registry!.begin(idA, 'capturing', 'job-3').jobId, 'job-3');
    registry!.finish(idA, 'failed', 'capture-failed');
    assert.throws(() => registry!.begin('m-00000000', 'capturing', 'job-4'), (e: any) => e.code === 'MACHINE_NOT_FOUND');
  });

  it('the first boot of a deployed system: a one-time boot token', async () => {
    const token = registry!.issueBootToken(idA);
    assert.equal(registry!.mustGet(idA).bootTokenPending, true);
    for (const t of [undefined, tokenA, apiToken, 'f'.repeat(64)]) {
      assert.equal((await new Api(api.base, t).post(`/machines/${idA}/booted`)).status, 401);
    }
    assert.equal((await new Api(api.base, token).post(`/machines/${idA}/booted`)).status, 204);
    assert.equal((await new Api(api.base, token).post(`/machines/${idA}/booted`)).status, 401, 'once only');
    const first = registry!.history(idA).filter(h => h.event === 'first-boot');
    assert.equal(first.length, 1);
    assert.equal(first[0].detail, 'from 127.0.0.1');
    assert.equal(registry!.mustGet(idA).bootTokenPending, false);
  });

  it('GET /boot/ipxe: the agent for an unknown machine, sanboot for one that boots from its disk', async () => {
    const anon = new Api(api.base, undefined);
    const unknown = await anon.get('/boot/ipxe?mac=52:54:00:ff:ff:ff&uuid=11111111-2222-3333-4444-555555555555');
    assert.equal(unknown.status, 200);
    assert.match(unknown.headers.get('content-type') ?? '', /^text\/plain/);
    assert.equal(unknown.body, ['#!ipxe',
      `kernel ${api.base}/boot/vmlinuz initrd=initrd.img ferry.server=${api.base} ferry.enrol=${enrolToken} console=ttyS0,115200 console=tty0`,
      `initrd ${api.base}/boot/initrd.img`, 'boot', ''].join('\n'));
    registry!.setBootTarget(idA, 'disk');
    const sanboot = '#!ipxe\nsanboot --no-describe --drive 0x80 || exit\n';
    assert.equal((await anon.get(`/boot/ipxe?uuid=${UUID_A}`)).body, sanboot);
    assert.equal((await anon.get(`/boot/ipxe?mac=${MAC_A2.toUpperCase()}`)).body, sanboot);
    registry!.setBootTarget(idA, 'agent');
    assert.match((await anon.get(`/boot/ipxe?mac=${MAC_A2}`)).body, /^kernel /m);
    // a Host header that would put text of its own into the script
    const url = new URL(api.base);
    const status = await new Promise<number>((res, rej) => request({ host: url.hostname, port: url.port, path: '/boot/ipxe', headers: { host: 'evil${x} #' } }, r => { r.resume(); res(r.statusCode!); }).on('error', rej).end());
    assert.equal(status, 400);
  });

  it('GET /boot/initrd.img and /boot/vmlinuz: 503 AGENT_NOT_BUILT without the agent, its bytes with it', async () => {
    const anon = new Api(api.base, undefined);
    const r = await anon.get('/boot/initrd.img');
    assert.equal(r.status, 503);
    assert.equal(r.body.error, 'AGENT_NOT_BUILT');
    await mkdir(agentDir);
    const initrd = Buffer.alloc(3 * 2 ** 20 + 7, 0);
    for (let i = 0; i < initrd.length; i += 4096) initrd[i] = (i / 4096) & 0xff;
    await writeFile(join(agentDir, 'initrd.img'), initrd);
    await writeFile(join(agentDir, 'vmlinuz'), 'kernel bytes');
    const got = await fetch(`${api.base}/boot/initrd.img`);
    assert.equal(got.status, 200);
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(initrd));
    assert.equal(await (await fetch(`${api.base}/boot/vmlinuz`)).text(), 'kernel bytes');
  });

  it('openapi.json documents the machine routes', async () => {
    const paths = Object.keys((await api.get('/openapi.json')).body.paths);
    for (const p of ['/machines/register', '/machines/{id}/work', '/machines/{id}/status', '/machines/{id}/booted', '/boot/ipxe', '/boot/vmlinuz', '/boot/initrd.img', '/machines', '/machines/{id}']) {
      assert.ok(paths.includes(p), p);
    }
  });

  it('ferry machines list --json | show | forget, on the same FERRY_HOME', async () => {
    const list = await ferry(['machines', 'list', '--json'], { env });
    assert.equal(list.exitCode, 0, list.stderr);
    const all = JSON.parse(list.stdout);
    assert.equal(all.length, 2);
    const a = all.find((m: any) => m.id === idA);
    assert.equal(a.state, 'failed');
    assert.deepEqual(a.macs, [MAC_A1, MAC_A2]);
    assert.equal(a.smbiosUuid, UUID_A);
    assert.equal(a.serial, 'SN-1');
    assert.deepEqual(a.disks, [{ path: '/dev/sda', sizeBytes: 480103981056, model: 'PERC H730P', serial: 'DISK-SN-1' }]);
    assert.equal(a.inventory, undefined);
    const text = await ferry(['machines', 'list'], { env });
    assert.match(text.stdout, new RegExp(`^${idA}\\s+failed\\s+${MAC_A1},${MAC_A2}`, 'm'));
    const show = await ferry(['machines', 'show', idA, '--json'], { env });
    assert.equal(show.exitCode, 0, show.stderr);
    const s = JSON.parse(show.stdout);
    assert.equal(s.machine.inventory.system.model, 'PowerEdge R640');
    assert.ok(s.history.some((h: any) => h.event === 'deploy-started' && h.jobId === 'job-1' && h.image === 'web-01.qcow2'));
    assert.match((await ferry(['machines', 'show', idA], { env })).stdout, /first-boot/);
    const forget = await ferry(['machines', 'forget', idA], { env });
    assert.equal(forget.exitCode, 0, forget.stderr);
    assert.equal(await machineCount(), 1);
    const gone = await ferry(['machines', 'show', idA], { env });
    assert.equal(gone.exitCode, 2);
    assert.match(gone.stderr, /^ferry: MACHINE_NOT_FOUND: /);
    assert.equal((await api.get(`/machines/${idA}`)).status, 404);
    assert.equal((await api.req('DELETE', `/machines/${idA}`)).status, 404);
    assert.equal((await new Api(api.base, tokenA).get(`/machines/${idA}/work?wait=0`)).status, 401);
  });

  it('deploy and capture job specs through POST /jobs: checked field by field, one job per machine', async () => {
    const bad = await api.post('/jobs', { kind: 'deploy', source: '/var/tmp/none.raw', target: '/var/tmp/x.qcow2', customize: { hostname: 'h', colour: 'red' } });
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    assert.deepEqual(bad.body.fieldErrors.map((f: { field: string }) => f.field).sort(), ['customize.colour', 'machine', 'target']);
    const cap = await api.post('/jobs', { kind: 'capture', source: '/var/tmp/none.raw', machine: 'box' });
    assert.equal(cap.status, 400, JSON.stringify(cap.body));
    assert.deepEqual(cap.body.fieldErrors.map((f: { field: string }) => f.field).sort(), ['machine', 'source', 'target']);
    const spec = { kind: 'deploy', source: '/var/tmp/none.raw', machine: idB, customize: { hostname: 'web-01', ip: ['eth0=192.0.2.10/24,gw=192.0.2.1'] } };
    const ok = await api.post('/jobs', spec);
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.deepEqual(ok.body.spec, spec);
    assert.equal(ok.body.sourceHost, `machine:${idB}`);
    // the first may still be queued or already failing (there is no such image): a second waits for nothing, it is refused
    const first = (await api.get(`/jobs/${ok.body.id}`)).body;
    if (first.state === 'queued' || first.state === 'running') {
      const twice = await api.post('/jobs', { ...spec, customize: { hostname: 'web-02' } });
      // the first can fail on its missing image between the look and the second submit: then the machine is free again
      const firstNow = (await api.get(`/jobs/${ok.body.id}`)).body;
      if (twice.status === 201) assert.ok(!['queued', 'running'].includes(firstNow.state), `a second job was accepted while the first is ${firstNow.state}`);
      else { assert.equal(twice.status, 422, JSON.stringify(twice.body)); assert.equal(twice.body.error, 'MACHINE_BUSY'); }
    }
    // the job fails on the missing image before the machine is taken
    let job = first;
    for (let i = 0; i < 100 && !['done', 'failed', 'cancelled'].includes(job.state); i++) {
      await new Promise(r => setTimeout(r, 200));
      job = (await api.get(`/jobs/${ok.body.id}`)).body;
    }
    assert.equal(job.state, 'failed', JSON.stringify(job));
    assert.notEqual(registry!.mustGet(idB).state, 'deploying');
  });

  it('a long poll ends when the server stops; no token reached its output', async () => {
    assert.ok(registry!.authenticateAgent(idB, tokenB));
    const t = Date.now();
    const poll = new Api(api.base, tokenB).get(`/machines/${idB}/work?wait=60`);
    await new Promise(r => setTimeout(r, 500));
    const s = serve!;
    serve = undefined;
    const code = await s.stop(20_000);
    const r = await poll;
    assert.equal(code, 0);
    assert.deepEqual(r.body, { action: 'wait' });
    assert.ok(Date.now() - t < 10_000, `the poll lasted ${Date.now() - t} ms`);
    for (const secret of [apiToken, enrolToken, ...agentTokens]) assert.ok(!s.output().includes(secret), 'a token is in the service output');
  });
});

describe('ferry pxe serve', () => {
  const NS = 'ferry-pxe-t', HOST_IF = 'fpxe-h', NS_IF = 'fpxe-n', HOST_IP = '10.213.9.1';
  const SERVER = 'http://10.213.9.1:18470';
  let link: NetnsLink | undefined;
  let pxe: ResultPromise | undefined;
  let out = '';
  const script = join(dir, 'udhcpc.sh');
  // its own run journals: what other ferry processes on this machine left is not this test's business
  const runEnv = { FERRY_RUN_DIR: join(dir, 'runs') };

  before(async () => {
    link = await makeNetnsLink({ ns: NS, hostIf: HOST_IF, nsIf: NS_IF, hostIp: HOST_IP, prefix: 24 });
    // udhcpc's script: keep what it was told, and take the address on `bound`
    await writeFile(script, `#!/bin/sh\nenv > "$ENV_OUT.$1"\n[ "$1" = bound ] && busybox ip addr add "$ip/$mask" dev "$interface"\nexit 0\n`, { mode: 0o755 });
  });
  after(async () => {
    await stopPxe();
    await link?.remove();
  });

  /** one DHCP exchange from the namespace; what udhcpc's script got on `bound` */
  async function dhcp(extra: string[], tag: string): Promise<Record<string, string>> {
    const envOut = join(dir, `env-${tag}`);
    await execa('ip', ['netns', 'exec', NS, 'env', `ENV_OUT=${envOut}`, 'busybox', 'udhcpc', '-i', NS_IF, '-n', '-q', '-f', '-t', '5', '-T', '1', '-s', script, ...extra], { stdin: 'ignore' });
    const text = await readFile(`${envOut}.bound`, 'utf8');
    await execa('ip', ['-n', NS, 'addr', 'flush', 'dev', NS_IF], { stdin: 'ignore' });
    return Object.fromEntries(text.split('\n').filter(l => l.includes('=')).map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  }

  it('refuses an unknown interface and one without an IPv4 address', async () => {
    const none = await ferry(['pxe', 'serve', '--interface', 'nosuch0', '--dhcp-range', '10.0.0.1,10.0.0.2']);
    assert.equal(none.exitCode, 2);
    assert.match(none.stderr, /^ferry: INTERFACE_MISSING: there is no network interface nosuch0/);
    const r = await execa('ip', ['netns', 'exec', NS, 'node', FERRY, 'pxe', 'serve', '--interface', NS_IF], { reject: false, stdin: 'ignore' });
    assert.equal(r.exitCode, 2);
    assert.match(String(r.stderr), /INTERFACE_NO_IPV4: interface fpxe-n has no IPv4 address/);
    const outside = await ferry(['pxe', 'serve', '--interface', HOST_IF, '--dhcp-range', '10.213.8.10,10.213.8.20']);
    assert.equal(outside.exitCode, 2);
    assert.match(outside.stderr, /USAGE: .*not in fpxe-h's subnet/);
  });

  it("fails with dnsmasq's own message when dnsmasq cannot start (TFTP port taken), leaving nothing", async () => {
    // a socket without SO_REUSEADDR on the TFTP port: dnsmasq cannot bind it
    const sock = createSocket('udp4');
    await new Promise<void>((res, rej) => { sock.once('error', rej); sock.bind(69, HOST_IP, () => res()); });
    try {
      const r = await ferry(['pxe', 'serve', '--interface', HOST_IF, '--dhcp-range', '10.213.9.130,10.213.9.140']);
      assert.equal(r.exitCode, 7, r.stderr);
      assert.match(r.stderr, /^ferry: TOOL_FAILED: dnsmasq failed \(exit \d+\): dnsmasq: failed to create listening socket for 10\.213\.9\.1: Address already in use$/m);
    } finally {
      sock.close();
    }
    assert.deepEqual((await readdir(tmpdir())).filter(f => f.startsWith('ferry-pxe-')), []);
  });

  /** its exit status; it must stop on SIGTERM alone */
  async function stopPxe(): Promise<number | undefined> {
    if (!pxe || pxe.exitCode !== null) return pxe?.exitCode ?? undefined;
    pxe.kill('SIGTERM');
    const timer = setTimeout(() => pxe!.kill('SIGKILL'), 10_000);
    const r = await pxe;
    clearTimeout(timer);
    return r.exitCode;
  }

  /** wait until the service's output matches */
  async function outputMatches(re: RegExp, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!re.test(out)) {
      assert.ok(Date.now() < deadline, `no ${re} in the output of ferry pxe serve:\n${out}`);
      await new Promise(r => setTimeout(r, 100));
    }
  }

  /** `ferry pxe serve ARGS` on the host end, once it says it is ready */
  async function startPxe(args: string[]): Promise<void> {
    await stopPxe();
    out = '';
    pxe = execa('node', [FERRY, 'pxe', 'serve', '--interface', HOST_IF, ...args], { reject: false, stdin: 'ignore', buffer: false, all: true, forceKillAfterDelay: false, env: runEnv });
    pxe.all!.on('data', (d: Buffer) => { out += d.toString(); });
    await outputMatches(/ferry pxe serve: ready on fpxe-h/, 20_000);
  }

  it('proxy DHCP (the default): answers a PXE client with a PXE offer and no address', async () => {
    await startPxe([]);
    assert.match(out, /proxy DHCP on 10\.213\.9\.0\/255\.255\.255\.0/);
    // udhcpc takes no lease from a proxy: it is the server's answer that counts
    await execa('ip', ['netns', 'exec', NS, 'busybox', 'udhcpc', '-i', NS_IF, '-n', '-q', '-f', '-t', '2', '-T', '1', '-s', '/bin/true',
      '-V', 'PXEClient:Arch:00000:UNDI:002001', '-x', '93:0000'], { reject: false, stdin: 'ignore' });
    await outputMatches(/PXE\(fpxe-h\) [0-9a-f:]+ proxy/);
    await outputMatches(/sent size: +\d+ option: 43 vendor-encap/);
    assert.equal(await stopPxe(), 0, out);
  });

  it('hands out an address of the range, iPXE over TFTP to firmware and the script URL to iPXE', async () => {
    await startPxe(['--dhcp-range', '10.213.9.100,10.213.9.120', '--server', SERVER]);

    const bios = await dhcp([], 'bios');
    const n = Number(bios.ip.split('.')[3]);
    assert.ok(bios.ip.startsWith('10.213.9.') && n >= 100 && n <= 120, `address ${bios.ip}`);
    assert.equal(bios.siaddr, HOST_IP);
    assert.equal(bios.boot_file, 'undionly.kpxe');

    const efi = await dhcp(['-x', '93:0007'], 'efi');
    assert.equal(efi.boot_file, 'ipxe.efi');

    const ipxe = await dhcp(['-x', '77:69505845'], 'ipxe');
    assert.equal(ipxe.boot_file, `${SERVER}/boot/ipxe?mac=\${net0/mac}&uuid=\${uuid}`);

    // TFTP, with an address of its own again
    await execa('ip', ['-n', NS, 'addr', 'add', `${bios.ip}/24`, 'dev', NS_IF], { stdin: 'ignore' });
    const got = join(dir, 'undionly.kpxe');
    await execa('ip', ['netns', 'exec', NS, 'busybox', 'tftp', '-g', '-r', 'undionly.kpxe', '-l', got, HOST_IP], { stdin: 'ignore' });
    assert.equal(await sha256(got), await sha256('/usr/lib/ipxe/undionly.kpxe'));
  });

  it('SIGKILL leaves dnsmasq running; cleanup --dry-run names it, the next ferry command stops it and removes its dir', async () => {
    const dnsmasqPid = String((await execa('pgrep', ['-P', String(pxe!.pid), '-x', 'dnsmasq'], { reject: false })).stdout).trim();
    assert.match(dnsmasqPid, /^\d+$/, 'dnsmasq runs as its child');
    pxe!.kill('SIGKILL');
    await pxe;
    assert.equal((await execa('kill', ['-0', dnsmasqPid], { reject: false })).exitCode, 0, 'dnsmasq outlived the killed command');
    const dry = await ferry(['cleanup', '--dry-run'], { env: runEnv });
    assert.match(dry.stdout, new RegExp(`would remove process .*dnsmasq\\.conf \\(pid ${dnsmasqPid}\\)`), dry.stdout);
    assert.match(dry.stdout, /would remove file .*ferry-pxe-/);
    const next = await ferry(['machines', 'list', '--json'], { env: { ...env, ...runEnv } });
    assert.equal(next.exitCode, 0, next.stderr);
    assert.match(next.stderr, /cleaned up after a killed run/);
    assert.equal((await execa('kill', ['-0', dnsmasqPid], { reject: false })).exitCode, 1, 'dnsmasq is gone');
    assert.deepEqual((await readdir(tmpdir())).filter(f => f.startsWith('ferry-pxe-')), [], 'its private dir is gone');
    await startPxe(['--dhcp-range', '10.213.9.100,10.213.9.120', '--server', SERVER]);
  });

  it('SIGTERM stops dnsmasq and leaves nothing behind', async () => {
    const dnsmasqPid = String((await execa('pgrep', ['-P', String(pxe!.pid), '-x', 'dnsmasq'], { reject: false })).stdout).trim();
    assert.match(dnsmasqPid, /^\d+$/, 'dnsmasq runs as its child');
    pxe!.kill('SIGTERM');
    const r = await pxe!;
    assert.equal(r.exitCode, 0, out);
    assert.match(out, /ferry pxe serve: stopped/);
    assert.equal((await execa('kill', ['-0', dnsmasqPid], { reject: false })).exitCode, 1, 'dnsmasq is gone');
    assert.deepEqual((await readdir(tmpdir())).filter(f => f.startsWith('ferry-pxe-')), [], 'its private dir is gone');
    await link!.remove();
    link = undefined;
  });
});
