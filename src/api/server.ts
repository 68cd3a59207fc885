// The HTTP API of the job service (fastify): submit, list, watch (server-sent
// events) and cancel jobs. It only translates HTTP to the runner and the store:
// the runner owns the queue, the steps and every resource a job holds.
//
// Every route needs `Authorization: Bearer TOKEN`, compared in constant time,
// or the console's session cookie (src/web/), except the machine routes
// (api/machines.ts), which check their own tokens, and the console's page,
// assets and login. Every response carries a Content-Security-Policy.
// The token never reaches a log line: requests are logged as method, path
// (without its query) and status, never with their headers.
import type { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { FerryError } from '../errors.js';
import { carries, digest, hasOwnAuth, unauthorized } from './auth.js';
import { machineRoutes, type MachineRouteOptions } from './machines.js';
import { catalogRoutes } from './catalog.js';
import { changesState, sameOrigin, setSecurityHeaders } from '../web/security.js';
import { Sessions } from '../web/session.js';
import { webRoutes } from '../web/routes.js';
import type { FieldError, JobRecord, JobSpec, JobState, ProgressEvent } from '../jobs/types.js';
import type { AnyJobStore } from '../store/types.js';
import { specProblems } from '../jobs/control.js';
import { redact } from '../sources/secrets.js';
import { documentedRoutes, idParamsSchema, jobSpecSchema, listQuerySchema, logsQuerySchema, openApiDocument, TERMINAL_STATES } from './openapi.js';

/** What the server needs of the job runner (src/jobs/runner.ts). */
export interface ApiRunner {
  /** queue a job; throws a FerryError with `fieldErrors` for a bad spec */
  submit(spec: JobSpec): JobRecord | string | Promise<JobRecord | string>;
  cancel(id: string): unknown;
  /** queue a failed or cancelled job again; throws JOB_STATE_CONFLICT otherwise */
  retry(id: string): unknown;
  /** emits 'event' with a ProgressEvent */
  readonly events: EventEmitter;
}

export interface ServerOptions {
  runner: ApiRunner;
  /** the embedded store (sync) or a shared one (async, src/store/): every call is awaited */
  store: Pick<AnyJobStore, 'get' | 'list' | 'logs'>;
  token: string;
  /** false: no log; else pino options (level, stream); default: info to stdout */
  logger?: false | { level?: string; stream?: NodeJS.WritableStream };
  /** how often an idle event stream gets a keep-alive comment (and its job's state is re-read) */
  keepAliveMs?: number;
  /** the machine registry's routes (agents, PXE boot); absent: none */
  machines?: MachineRouteOptions;
  /** serve HTTPS with this certificate and key (PEM) */
  tls?: { cert: Buffer | string; key: Buffer | string };
  /** how often the all-jobs event stream sends each running job's progress (default 1000 ms) */
  progressEveryMs?: number;
}

const VERSION = (() => {
  try {
    // dist/src/api/server.js -> the repository's package.json
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
})();

const isTerminal = (s: JobState) => TERMINAL_STATES.includes(s);

/** ajv's errors as the spec's dotted field names: '/register/cpus' -> 'register.cpus' */
function fieldErrorsOf(validation: NonNullable<FastifyError['validation']>): FieldError[] {
  return validation.map(v => {
    const base = v.instancePath.split('/').filter(Boolean).join('.');
    const p = v.params as { missingProperty?: string; additionalProperty?: string; allowedValues?: unknown[] };
    const child = p.missingProperty ?? p.additionalProperty;
    const field = child ? (base ? `${base}.${child}` : child) : base || '(body)';
    const message = p.missingProperty ? 'is required'
      : p.additionalProperty ? 'is not a known field'
      : p.allowedValues ? `must be one of ${p.allowedValues.join(', ')}`
      : v.message ?? 'is not valid';
    return { field, message };
  });
}

/** the runner's bad-spec error: a FerryError carrying field errors (on itself or in its details) */
function specErrorsOf(e: unknown): FieldError[] | undefined {
  const x = e as { fieldErrors?: FieldError[]; details?: { fieldErrors?: FieldError[] } } | null;
  const list = x?.fieldErrors ?? x?.details?.fieldErrors;
  return Array.isArray(list) && list.length ? list : undefined;
}

/** One listener on the runner for all event streams; remembers each running job's latest progress for late subscribers. */
class EventHub {
  private readonly subscribers = new Map<string, Set<(e: ProgressEvent) => void>>();
  private readonly lastProgress = new Map<string, ProgressEvent>();
  private readonly onEvent = (e: ProgressEvent) => {
    if (e.type === 'progress') this.lastProgress.set(e.jobId, e);
    else if (e.type === 'step' || (e.type === 'state' && e.state && isTerminal(e.state))) this.lastProgress.delete(e.jobId);
    for (const f of this.subscribers.get(e.jobId) ?? []) f(e);
    for (const f of this.everyone) f(e);
  };
  constructor(private readonly emitter: EventEmitter) { emitter.on('event', this.onEvent); }

  private readonly everyone = new Set<(e: ProgressEvent) => void>();
  /** every job's events (the all-jobs stream) */
  subscribeAll(f: (e: ProgressEvent) => void): () => void {
    this.everyone.add(f);
    return () => { this.everyone.delete(f); };
  }

  subscribe(jobId: string, f: (e: ProgressEvent) => void): () => void {
    let set = this.subscribers.get(jobId);
    if (!set) this.subscribers.set(jobId, set = new Set());
    set.add(f);
    return () => { set!.delete(f); if (!set!.size) this.subscribers.delete(jobId); };
  }

  latestProgress(jobId: string): ProgressEvent | undefined { return this.lastProgress.get(jobId); }
  close(): void { this.emitter.off('event', this.onEvent); }
}

export function buildServer(opts: ServerOptions): FastifyInstance {
  const { runner, store } = opts;
  const keepAliveMs = opts.keepAliveMs ?? 15_000;
  const expected = digest(opts.token);
  const logger = opts.logger === false ? false : {
    level: opts.logger?.level ?? 'info',
    ...(opts.logger?.stream ? { stream: opts.logger.stream } : {}),
    serializers: {
      req: (r: { method: string; url: string; ip: string }) => ({ method: r.method, path: r.url.split('?')[0], remoteAddress: r.ip }),
      res: (r: { statusCode: number }) => ({ statusCode: r.statusCode }),
    },
    // a second guard should a serializer ever change: headers are never written
    redact: { paths: ['req.headers', 'headers', 'authorization', '*.authorization'], censor: '***' },
  };
  const tls = opts.tls !== undefined;
  const app = Fastify({
    logger,
    ...(opts.tls ? { https: { cert: opts.tls.cert, key: opts.tls.key } } : {}),
    // report every problem of a spec; never drop or coerce what the client sent
    ajv: { customOptions: { allErrors: true, removeAdditional: false, coerceTypes: false, useDefaults: false, allowUnionTypes: true } },
    // the routes are fixed: keep the body small
    bodyLimit: 1 << 20,
  });

  // every route must be in the OpenAPI document (checked when the server gets ready)
  const routes: string[] = [];
  app.addHook('onRoute', r => {
    for (const m of [r.method].flat()) if (m !== 'HEAD') routes.push(`${m.toLowerCase()} ${r.url.replace(/:(\w+)/g, '{$1}')}`);
  });
  const doc = openApiDocument(VERSION, opts.machines !== undefined);
  app.addHook('onReady', async () => {
    const documented = documentedRoutes(doc);
    const missing = routes.filter(r => !documented.has(r));
    const stale = [...documented].filter(r => !routes.includes(r));
    if (missing.length || stale.length) throw new Error(`openapi.ts is out of date: undocumented ${missing.join(', ') || '-'}; no route for ${stale.join(', ') || '-'}`);
  });

  // the API token everywhere but on the machine routes that check their own (agents, firmware)
  // or the console's session cookie, which must come with this server's Origin on anything that changes state
  const sessions = new Sessions();
  app.addHook('onRequest', async (req, reply) => {
    setSecurityHeaders(reply, tls);
    if (hasOwnAuth(req) || carries(req, expected)) return;
    if (sessions.valid(req)) {
      if (changesState(req) && !sameOrigin(req)) {
        return reply.code(403).send({ error: 'CROSS_ORIGIN', message: 'a request with the session cookie must come from the console of this server' });
      }
      return;
    }
    return unauthorized(reply, 'send Authorization: Bearer TOKEN with the token from $FERRY_HOME/api-token');
  });

  app.setErrorHandler((e: FastifyError, req, reply) => {
    if (e.validation) {
      if (e.validationContext !== 'body') return reply.code(400).send({ error: 'BAD_REQUEST', message: e.message, fieldErrors: fieldErrorsOf(e.validation) });
      // a spec's every problem at once: the shape (schema) and the meaning (validateSpec), one entry per field
      const fieldErrors = new Map(fieldErrorsOf(e.validation).map(f => [f.field, f]));
      for (const f of specProblems(req.body)) fieldErrors.set(f.field, f);
      return reply.code(400).send({ error: 'BAD_SPEC', message: 'the job spec is not valid', fieldErrors: [...fieldErrors.values()] });
    }
    const fieldErrors = specErrorsOf(e);
    if (fieldErrors) return reply.code(400).send({ error: 'BAD_SPEC', message: redact(e.message), fieldErrors });
    if (e instanceof FerryError) {
      // 2 = usage; 7 tool, 8 permission: the service's own trouble; the rest: the request cannot be done
      const status = e.exitCode === 2 ? 400 : [7, 8].includes(e.exitCode) ? 500 : 422;
      return reply.code(status).send({ error: e.code, message: redact(e.message) });
    }
    if (e.statusCode && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.code(e.statusCode).send({ error: 'BAD_REQUEST', message: e.message });
    }
    req.log.error({ err: e }, 'internal error');
    return reply.code(500).send({ error: 'INTERNAL', message: 'internal error; see the service log' });
  });

  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}; see GET /openapi.json` }));

  const notFound = (reply: FastifyReply) => reply.code(404).send({ error: 'JOB_NOT_FOUND', message: 'no job with this id' });

  app.post<{ Body: JobSpec }>('/jobs', { schema: { body: jobSpecSchema } }, async (req, reply) => {
    const r = await runner.submit(req.body);
    const id = typeof r === 'string' ? r : r.id;
    const job = (await store.get(id)) ?? (typeof r === 'string' ? undefined : r);
    return reply.code(201).header('location', `/jobs/${encodeURIComponent(id)}`).send(job);
  });

  app.get<{ Querystring: { state?: JobState; limit?: string; offset?: string; order?: 'oldest' | 'newest' } }>('/jobs', { schema: { querystring: listQuerySchema } }, async req => {
    const { state, limit, offset, order } = req.query;
    const all = await store.list(state ? { state } : undefined);
    if (order === 'newest') all.reverse();
    const from = Number(offset ?? 0);
    const jobs = limit === undefined && !from ? all : all.slice(from, limit === undefined ? undefined : from + Number(limit));
    return { jobs, total: all.length };
  });

  app.get<{ Params: { id: string } }>('/jobs/:id', { schema: { params: idParamsSchema } }, async (req, reply) =>
    (await store.get(req.params.id)) ?? notFound(reply));

  app.post<{ Params: { id: string } }>('/jobs/:id/cancel', { schema: { params: idParamsSchema } }, async (req, reply) => {
    const { id } = req.params;
    const job = await store.get(id);
    if (!job) return notFound(reply);
    const finished = (j: JobRecord) => reply.code(409).send({ error: 'JOB_FINISHED', message: `job ${id} has already ended (${j.state})`, state: j.state });
    if (isTerminal(job.state)) return finished(job);
    try {
      await runner.cancel(id);
    } catch (e) {
      // it ended between our look and the runner's
      const now = await store.get(id);
      if (now && isTerminal(now.state)) return finished(now);
      throw e;
    }
    return reply.code(202).send(await store.get(id));
  });

  app.post<{ Params: { id: string } }>('/jobs/:id/retry', { schema: { params: idParamsSchema } }, async (req, reply) => {
    const { id } = req.params;
    if (!(await store.get(id))) return notFound(reply);
    try {
      await runner.retry(id);
    } catch (e) {
      // which states may be retried is the runner's rule (jobs/control.ts retryJob), not repeated here
      if (e instanceof FerryError && e.code === 'JOB_STATE_CONFLICT') return reply.code(409).send({ error: e.code, message: e.message, state: e.details.state });
      throw e;
    }
    return reply.code(202).send(await store.get(id));
  });

  app.get<{ Params: { id: string }; Querystring: { after?: string } }>('/jobs/:id/logs', { schema: { params: idParamsSchema, querystring: logsQuerySchema } }, async (req, reply) => {
    if (!(await store.get(req.params.id))) return notFound(reply);
    return { lines: (await store.logs(req.params.id, Number(req.query.after ?? 0))).map(l => ({ n: l.n, line: redact(l.line) })) };
  });

  app.get('/openapi.json', async () => doc);

  if (opts.machines) machineRoutes(app, opts.machines);
  catalogRoutes(app, store);
  webRoutes(app, { token: opts.token, sessions, tls });

  // ——— server-sent events ———
  const hub = new EventHub(runner.events);
  const streams = new Set<() => void>();
  app.addHook('preClose', async () => { for (const end of [...streams]) end(); });
  app.addHook('onClose', async () => hub.close());

  /** Take a reply over as a server-sent event stream: numbered events; it ends by end(), when the client goes, or at close. */
  const openStream = (reply: FastifyReply) => {
    reply.hijack();
    const res: ServerResponse = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    let seq = 0;
    const cleanups: (() => void)[] = [];
    const stream = {
      ended: false,
      send(event: string, data: unknown) { if (!stream.ended) res.write(`id: ${++seq}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`); },
      keepAlive() { if (!stream.ended) res.write(': keep-alive\n\n'); },
      onEnd(f: () => void) { cleanups.push(f); },
      end() {
        if (stream.ended) return;
        stream.ended = true;
        for (const f of cleanups) f();
        streams.delete(stream.end);
        res.end();
      },
    };
    streams.add(stream.end);
    res.on('close', stream.end);
    return stream;
  };

  // every job's state and step events, and each running job's progress at most once per period:
  // one connection for a table of many jobs
  const progressEveryMs = opts.progressEveryMs ?? 1000;
  app.get('/events', async (_req, reply) => {
    const stream = openStream(reply);
    let idle = 0;
    const pending = new Map<string, ProgressEvent>();
    const unsubscribe = hub.subscribeAll(e => {
      if (e.type === 'log') return;
      if (e.type === 'progress') { pending.set(e.jobId, e); return; }
      // a step or state change makes the latest progress stale
      pending.delete(e.jobId);
      stream.send(e.type, e);
    });
    const timer = setInterval(() => {
      for (const e of pending.values()) stream.send('progress', e);
      if (pending.size) idle = 0;
      else if ((idle += progressEveryMs) >= keepAliveMs) { idle = 0; stream.keepAlive(); }
      pending.clear();
    }, progressEveryMs);
    stream.onEnd(() => { clearInterval(timer); unsubscribe(); });
    stream.send('hello', { at: new Date().toISOString() });
    return reply;
  });

  app.get<{ Params: { id: string } }>('/jobs/:id/events', { schema: { params: idParamsSchema } }, async (req, reply) => {
    const { id } = req.params;
    // the embedded store answers in this tick (no await: no runner event can fall between the snapshot and the subscription)
    const got = store.get(id);
    const job = got instanceof Promise ? await got : got;
    if (!job) return notFound(reply);
    // an EventSource reconnecting to a finished job: 204 tells it to stop retrying
    if (isTerminal(job.state) && req.headers['last-event-id'] !== undefined) return reply.code(204).send();

    const stream = openStream(reply);
    const finish = (j: JobRecord) => {
      stream.send('state', { jobId: id, type: 'state', state: j.state, message: j.error?.message, at: j.updatedAt } satisfies ProgressEvent);
      stream.end();
    };
    // subscribe before the snapshot: both happen in this tick, so no event falls between them
    const unsubscribe = hub.subscribe(id, e => {
      stream.send(e.type, e);
      if (e.type === 'state' && e.state && isTerminal(e.state)) stream.end();
    });
    // keep-alive; and should the runner's last event have been missed, the store still tells
    const timer = setInterval(() => void (async () => {
      const now = await Promise.resolve(store.get(id)).catch(() => undefined); // a store away for a moment: the next tick asks again
      if (stream.ended) return;
      if (now && isTerminal(now.state)) return finish(now);
      stream.keepAlive();
    })(), keepAliveMs);
    stream.onEnd(() => { clearInterval(timer); unsubscribe(); });

    stream.send('job', job);
    if (isTerminal(job.state)) return finish(job);
    const last = hub.latestProgress(id);
    if (last) stream.send('progress', last);
    return reply;
  });

  return app;
}
