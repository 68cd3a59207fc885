// The HTTP API's contract against an in-test FAKE runner (same surface as
// src/jobs/runner.ts: the real submit, but no job ever runs) and the real SQLite store: auth, status
// codes, field errors, the event stream, logging without the token, and the
// token file. Fast and needs no root; test/api.test.ts runs the real service.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildServer, type ApiRunner } from '../src/api/server.js';
import { loadOrCreateToken } from '../src/api/token.js';
import { FerryError, jobStateConflict } from '../src/errors.js';
import { retryJob, submitJob } from '../src/jobs/control.js';
import { openJobStore } from '../src/jobs/sqlite-store.js';
import type { JobSpec, JobState, JobStore, ProgressEvent } from '../src/jobs/types.js';
import { parseListen } from '../src/cli/serve.js';
import { Api, readEvents } from './support/api-client.js';
import { tempDir } from './support/harness.js';

const home = await tempDir('ferry-api-unit-');

/** The fake: records jobs in the store, validates a little, and emits what the test tells it to. */
class FakeRunner implements ApiRunner {
  readonly events = new EventEmitter();
  constructor(private readonly store: JobStore) {}
  // the real submit (spec checks, profile lookup, busy targets); only running the job is faked
  submit(spec: JobSpec) { return submitJob(this.store, spec); }
  cancel(id: string) {
    const j = this.store.get(id)!;
    if (['done', 'failed', 'cancelled'].includes(j.state)) throw jobStateConflict(id, j.state, 'it cannot be cancelled');
    this.setState(id, 'cancelled');
  }
  retry(id: string) { return retryJob(this.store, id); }
  emit(e: Omit<ProgressEvent, 'at'>) { this.events.emit('event', { ...e, at: new Date().toISOString() }); }
  setState(id: string, state: JobState) {
    this.store.update(id, { state });
    this.emit({ jobId: id, type: 'state', state });
  }
}

const TOKEN = 'a'.repeat(64);
let store: JobStore, runner: FakeRunner, app: FastifyInstance, api: Api, base: string;
let logged = '';

before(async () => {
  store = openJobStore(home);
  runner = new FakeRunner(store);
  const stream = new Writable({ write(c, _e, cb) { logged += c.toString(); cb(); } });
  app = buildServer({ runner, store, token: TOKEN, logger: { level: 'debug', stream }, keepAliveMs: 100 });
  base = await app.listen({ host: '127.0.0.1', port: 0 });
  api = new Api(base, TOKEN);
});

after(async () => {
  await app?.close();
  store?.close();
});

// each job its own target: the real submit refuses a second job writing one target
let nth = 0;
const spec = (over: Partial<JobSpec> = {}): JobSpec => ({ source: '/var/tmp/none.raw', target: `/var/tmp/none-${++nth}.qcow2`, ...over });

describe('HTTP API with a fake runner', () => {
  it('401 without the token, with a wrong one, or another scheme; the token works with any case of "Bearer"', async () => {
    for (const t of [undefined, 'b'.repeat(64), TOKEN.slice(1), '']) {
      const r = await new Api(base, t).get('/jobs');
      assert.equal(r.status, 401, `token ${t}`);
      assert.equal(r.body.error, 'UNAUTHORIZED');
      assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer/);
    }
    assert.equal((await api.req('GET', '/jobs', undefined, { authorization: `Basic ${TOKEN}` })).status, 401);
    assert.equal((await new Api(base, undefined).req('GET', '/jobs', undefined, { authorization: `bearer ${TOKEN}` })).status, 200);
    // unknown paths and the document need the token too
    assert.equal((await new Api(base, undefined).get('/nope')).status, 401);
    assert.equal((await new Api(base, undefined).get('/openapi.json')).status, 401);
    assert.equal((await new Api(base, undefined).get('/jobs/x/events')).status, 401);
  });

  it('openapi.json is OpenAPI 3.1 and describes every route', async () => {
    const r = await api.get('/openapi.json');
    assert.equal(r.status, 200);
    assert.equal(r.body.openapi, '3.1.0');
    const ops = Object.entries(r.body.paths as Record<string, object>).flatMap(([p, o]) => Object.keys(o).map(m => `${m} ${p}`)).sort();
    assert.deepEqual(ops, ['get /', 'get /assets/{name}', 'get /drivers', 'get /events', 'get /images', 'get /images/{name}',
      'get /jobs', 'get /jobs/{id}', 'get /jobs/{id}/events', 'get /jobs/{id}/logs', 'get /openapi.json', 'get /profiles', 'get /session',
      'post /jobs', 'post /jobs/{id}/cancel', 'post /jobs/{id}/retry', 'post /login', 'post /logout']);
    assert.ok(r.body.components.schemas.JobSpec.properties.register);
    assert.deepEqual(r.body.components.securitySchemes.bearer, { type: 'http', scheme: 'bearer', description: 'the token in $FERRY_HOME/api-token' });
  });

  it('POST /jobs: 201 with the record and its Location; GET /jobs/{id}; GET /jobs?state=', async () => {
    const sent = spec({ options: { verify: true } });
    const r = await api.post('/jobs', sent);
    assert.equal(r.status, 201);
    assert.match(r.body.id, /^\w+$/);
    assert.equal(r.body.state, 'queued');
    assert.equal(r.headers.get('location'), `/jobs/${r.body.id}`);
    const g = await api.get(`/jobs/${r.body.id}`);
    assert.equal(g.status, 200);
    assert.deepEqual(g.body.spec, sent);
    const q = await api.get('/jobs?state=queued');
    assert.ok(q.body.jobs.some((j: any) => j.id === r.body.id));
    assert.ok((await api.get('/jobs?state=done')).body.jobs.every((j: any) => j.state === 'done'));
    const bad = await api.get('/jobs?state=sleeping');
    assert.equal(bad.status, 400);
    assert.equal(bad.body.fieldErrors[0].field, 'state');
  });

  it('bad specs: 400 BAD_SPEC with every field error, from the schema and from the runner', async () => {
    const r = await api.post('/jobs', { source: '/x', options: { mode: 'copy', speed: 3 }, register: { libvirt: 'qemu:///system', cpus: 0 }, extra: 1 });
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'BAD_SPEC');
    const fields = r.body.fieldErrors.map((f: any) => f.field).sort();
    assert.deepEqual(fields, ['extra', 'options.mode', 'options.speed', 'register.cpus', 'register.name', 'target']);
    assert.ok(r.body.fieldErrors.every((f: any) => typeof f.message === 'string' && f.message));
    const v = await api.post('/jobs', spec({ source: 'relative.raw' }));
    assert.equal(v.status, 400);
    assert.deepEqual(v.body.fieldErrors, [{ field: 'source', message: 'must be an absolute path, not relative.raw' }]);
    const p = await api.post('/jobs', spec({ profile: 'no-such-profile' }));
    assert.equal(p.status, 400);
    assert.deepEqual(p.body.fieldErrors.map((f: any) => f.field), ['profile']);
    assert.match(p.body.fieldErrors[0].message, /no hardware profile named 'no-such-profile'/);
    assert.equal((await api.req('POST', '/jobs', undefined, { 'content-type': 'application/json' })).status, 400, 'empty body');
    const notJson = await fetch(base + '/jobs', { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: '{"source":' });
    assert.equal(notJson.status, 400);
  });

  it('404 NOT_FOUND for unknown routes', async () => {
    const r = await api.get('/nothing-here?x=1');
    assert.deepEqual([r.status, r.body.error], [404, 'NOT_FOUND']);
    assert.equal((await api.req('DELETE', '/jobs/x')).status, 404);
  });

  it('404 JOB_NOT_FOUND for unknown ids on every job route', async () => {
    for (const [m, p] of [['GET', '/jobs/nope'], ['GET', '/jobs/nope/events'], ['POST', '/jobs/nope/cancel'], ['POST', '/jobs/nope/retry'], ['GET', '/jobs/nope/logs']] as const) {
      const r = await api.req(m, p);
      assert.equal(r.status, 404, `${m} ${p}`);
      assert.equal(r.body.error, 'JOB_NOT_FOUND');
    }
  });

  it('cancel: 202 for a queued job, 409 once it has ended', async () => {
    const { body: job } = await api.post('/jobs', spec());
    const c = await api.post(`/jobs/${job.id}/cancel`);
    assert.equal(c.status, 202);
    assert.equal(c.body.state, 'cancelled');
    const again = await api.post(`/jobs/${job.id}/cancel`);
    assert.equal(again.status, 409);
    assert.equal(again.body.error, 'JOB_FINISHED');
    assert.equal(again.body.state, 'cancelled');
  });

  it('retry: 202 for a failed job, which is queued again with its runs counted afresh; 409 for a queued one', async () => {
    const { body: job } = await api.post('/jobs', spec());
    const early = await api.post(`/jobs/${job.id}/retry`);
    assert.deepEqual([early.status, early.body.error, early.body.state], [409, 'JOB_STATE_CONFLICT', 'queued']);
    store.update(job.id, { state: 'failed', attempts: 3, error: { code: 'SOURCE_MISSING', message: 'gone', exitCode: 3 } });
    const r = await api.post(`/jobs/${job.id}/retry`);
    assert.equal(r.status, 202);
    assert.equal(r.body.state, 'queued');
    assert.equal(r.body.attempts, 0);
    assert.equal(r.body.error, undefined);
  });

  it('logs: every line numbered; ?after= gives only the newer ones', async () => {
    const { body: job } = await api.post('/jobs', spec());
    store.appendLog(job.id, 'first');
    store.appendLog(job.id, 'second');
    const all = await api.get(`/jobs/${job.id}/logs`);
    assert.equal(all.status, 200);
    // the real submit logs what was submitted first
    assert.deepEqual(all.body.lines.map((l: any) => l.line), [`submitted: ${job.spec.source} -> ${job.spec.target}`, 'first', 'second']);
    const newer = await api.get(`/jobs/${job.id}/logs?after=${all.body.lines[1].n}`);
    assert.deepEqual(newer.body.lines, [all.body.lines[2]]);
    assert.equal((await api.get(`/jobs/${job.id}/logs?after=soon`)).status, 400);
  });

  it('events: the current state first, then live events with keep-alives, ending with the job', async () => {
    const { body: job } = await api.post('/jobs', spec());
    store.update(job.id, { state: 'running' });
    runner.emit({ jobId: job.id, type: 'step', step: 'copy' });
    runner.emit({ jobId: job.id, type: 'progress', step: 'copy', bytes: 10, total: 100, rate: 5, etaSeconds: 18 });
    const seen: string[] = [];
    const stream = readEvents(api, `/jobs/${job.id}/events`, {
      timeoutMs: 10_000,
      onEvent: e => seen.push(e.event),
    });
    await waitFor(() => seen.length >= 2);
    await new Promise(r => setTimeout(r, 250)); // a few keep-alives
    runner.emit({ jobId: job.id, type: 'progress', step: 'copy', bytes: 100, total: 100, rate: 5, etaSeconds: 0 });
    runner.emit({ jobId: 'other', type: 'progress', bytes: 1 });
    runner.emit({ jobId: job.id, type: 'step', step: 'verify' });
    runner.setState(job.id, 'done');
    const r = await stream;
    assert.equal(r.status, 200);
    assert.match(r.contentType ?? '', /^text\/event-stream/);
    assert.ok(r.ended, 'the server ended the stream');
    assert.deepEqual(r.events.map(e => e.event), ['job', 'progress', 'progress', 'step', 'state']);
    assert.equal(r.events[0].data.id, job.id);
    assert.equal(r.events[0].data.state, 'running');
    assert.equal(r.events[1].data.bytes, 10, 'the latest progress is replayed');
    assert.equal(r.events.at(-1)!.data.state, 'done');
    assert.ok(r.comments.includes('keep-alive'));
    assert.ok(r.events.every(e => e.data.jobId === undefined || e.data.jobId === job.id));
  });

  it('events of a finished job: its record and final state, then the end; a reconnect gets 204', async () => {
    const { body: job } = await api.post('/jobs', spec());
    runner.setState(job.id, 'failed');
    const r = await readEvents(api, `/jobs/${job.id}/events`, { timeoutMs: 5000 });
    assert.ok(r.ended);
    assert.deepEqual(r.events.map(e => [e.event, e.data.state]), [['job', 'failed'], ['state', 'failed']]);
    const again = await readEvents(api, `/jobs/${job.id}/events`, { timeoutMs: 5000, headers: { 'last-event-id': '2' } });
    assert.equal(again.status, 204);
  });

  it('a missed final event: the stream still ends once the store says the job ended', async () => {
    const { body: job } = await api.post('/jobs', spec());
    const stream = readEvents(api, `/jobs/${job.id}/events`, { timeoutMs: 5000 });
    await new Promise(r => setTimeout(r, 150));
    store.update(job.id, { state: 'done' }); // no event
    const r = await stream;
    assert.ok(r.ended);
    assert.equal(r.events.at(-1)!.data.state, 'done');
  });

  it('many streams share one listener on the runner', async () => {
    const { body: job } = await api.post('/jobs', spec());
    const streams = Array.from({ length: 20 }, () => readEvents(api, `/jobs/${job.id}/events`, { timeoutMs: 5000 }));
    await new Promise(r => setTimeout(r, 200));
    assert.equal(runner.events.listenerCount('event'), 1);
    runner.setState(job.id, 'cancelled');
    for (const r of await Promise.all(streams)) assert.deepEqual(r.events.map(e => e.event), ['job', 'state']);
  });

  it('the log has requests but never the token or the Authorization header', async () => {
    await api.get(`/jobs?state=queued&access_token=${TOKEN}`); // even a client putting it in the query
    assert.match(logged, /"statusCode":200/);
    assert.match(logged, /"path":"\/jobs"/);
    assert.ok(!logged.includes(TOKEN), 'token in the log');
    assert.ok(!/authorization/i.test(logged), 'Authorization header in the log');
  });
});

describe('closing the server', () => {
  it('ends open event streams so close() does not hang', async () => {
    const s2 = openJobStore(home);
    const r2 = new FakeRunner(s2);
    const a2 = buildServer({ runner: r2, store: s2, token: TOKEN, logger: false });
    const b2 = await a2.listen({ host: '127.0.0.1', port: 0 });
    const job = s2.create(spec(), 'local');
    const stream = readEvents(new Api(b2, TOKEN), `/jobs/${job.id}/events`, { timeoutMs: 5000 });
    await new Promise(r => setTimeout(r, 150));
    const t0 = Date.now();
    await a2.close();
    assert.ok(Date.now() - t0 < 2000, `close took ${Date.now() - t0} ms`);
    const r = await stream;
    assert.ok(r.ended);
    assert.equal(r2.events.listenerCount('event'), 0);
    s2.close();
  });
});

describe('--listen', () => {
  it('reads HOST:PORT and [IPV6]:PORT, and tells loopback from the rest', () => {
    assert.deepEqual(parseListen('127.0.0.1:8470'), { host: '127.0.0.1', port: 8470, loopback: true });
    assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0, loopback: true });
    assert.deepEqual(parseListen('localhost:1'), { host: 'localhost', port: 1, loopback: true });
    assert.deepEqual(parseListen('0.0.0.0:8470'), { host: '0.0.0.0', port: 8470, loopback: false });
    assert.deepEqual(parseListen('[::]:8470'), { host: '::', port: 8470, loopback: false });
    for (const bad of ['8470', '127.0.0.1', '127.0.0.1:99999', ':8470', 'host:port', '::1:8470']) {
      assert.throws(() => parseListen(bad), { code: 'USAGE' }, bad);
    }
  });
});

describe('the token file', () => {
  it('is made 0600 with 64 hex digits on first use, then reused', async () => {
    const h = join(home, 'tok1');
    const a = await loadOrCreateToken(h);
    assert.ok(a.created);
    assert.match(a.token, /^[0-9a-f]{64}$/);
    assert.equal((await stat(a.path)).mode & 0o777, 0o600);
    assert.equal((await readFile(a.path, 'utf8')).trim(), a.token);
    const b = await loadOrCreateToken(h);
    assert.deepEqual([b.created, b.token, b.path], [false, a.token, a.path]);
  });

  it('two first starts at once agree on one token', async () => {
    const h = join(home, 'tok2');
    const all = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateToken(h)));
    assert.equal(new Set(all.map(x => x.token)).size, 1);
    assert.equal(all.filter(x => x.created).length, 1);
  });

  it('refuses a file others can read, and one that holds no token', async () => {
    const h = join(home, 'tok3');
    const a = await loadOrCreateToken(h);
    await chmod(a.path, 0o644);
    await assert.rejects(loadOrCreateToken(h), (e: FerryError) => e.code === 'API_TOKEN_UNSAFE' && e.message.includes(`chmod 600 ${a.path}`) && !e.message.includes(a.token));
    await chmod(a.path, 0o640);
    await assert.rejects(loadOrCreateToken(h), { code: 'API_TOKEN_UNSAFE' });
    await writeFile(a.path, 'short\n', { mode: 0o600 });
    await chmod(a.path, 0o600);
    await assert.rejects(loadOrCreateToken(h), { code: 'API_TOKEN_INVALID' });
  });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise(r => setTimeout(r, 20));
  }
}
