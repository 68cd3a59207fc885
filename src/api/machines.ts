// The machine routes of `ferry serve`: the agent's side of src/agent/README.md
// (register, long-polled work, status), the deployed system's first-boot
// report, the PXE boot files, and the operator's view of the registry.
//
// Each route says who may call it, and the global API-token check skips them
// (OWN_AUTH) except the operator's:
//   POST /machines/register            the enrolment token (only there)
//   GET  /machines/{id}/work, POST …/status   that machine's agent token
//   POST /machines/{id}/booted         that machine's one-time boot token
//   GET  /boot/*                       nothing: firmware cannot send a token
//   GET/DELETE /machines[/{id}]        the API token
// The iPXE script carries the enrolment token to the agent's kernel command
// line: whoever reaches /boot/ipxe can enrol a machine, so serve it only on
// the provisioning network.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { FerryError, machineNotFound } from '../errors.js';
import { MachineRegistry } from '../machines/registry.js';
import { WAIT } from '../machines/types.js';
import { bearerOf, carries, digest, OWN_AUTH, unauthorized } from './auth.js';
import { bootQuerySchema, idParamsSchema, waitQuerySchema } from './openapi.js';

export interface MachineRouteOptions {
  registry: MachineRegistry;
  /** the token of $FERRY_HOME/enrol-token */
  enrolToken: string;
  /** where vmlinuz and initrd.img are ($FERRY_HOME/agent by default) */
  agentDir: string;
  /** the base URL agents reach this server at; default: the URL each request came in on (its Host header) */
  publicUrl?: string;
}

const DEFAULT_WAIT_S = 20;
const MAX_WAIT_S = 60;
const WORK_POLL_MS = 250;
export const AGENT_FILES = ['vmlinuz', 'initrd.img'] as const;
const HOST_RE = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

type IdReq = FastifyRequest<{ Params: { id: string } }>;

/** the address a request came from, IPv4-mapped IPv6 written as IPv4 */
const peerOf = (req: FastifyRequest) => (req.socket.remoteAddress ?? req.ip).replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1');

/** the registry's rule-breaking calls (bad status, unknown machine) as the replies the agent expects */
function ferryErrorReply(reply: FastifyReply, e: unknown): FastifyReply {
  if (!(e instanceof FerryError)) throw e;
  const status = e.code === 'MACHINE_NOT_FOUND' ? 404 : e.code === 'MACHINE_BUSY' ? 409 : e.exitCode === 2 ? 400 : 500;
  return reply.code(status).send({ error: e.code, message: e.message });
}

export function machineRoutes(app: FastifyInstance, o: MachineRouteOptions): void {
  const { registry } = o;
  const enrolDigest = digest(o.enrolToken);
  // long polls answer `wait` at once when the server closes
  const closing = new AbortController();
  app.addHook('preClose', async () => closing.abort());

  const agentAuth = async (req: IdReq, reply: FastifyReply) => {
    const token = bearerOf(req);
    if (!registry.authenticateAgent(req.params.id, token ?? '') || token === undefined) {
      return unauthorized(reply, 'send Authorization: Bearer AGENT_TOKEN with the token of your last registration (register again if it was superseded)');
    }
  };

  // ——— the agent ———
  // its own scope: the body is parsed here, so that anything unreadable is INVENTORY_INVALID (and checked only after the token)
  void app.register(async scope => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));
    scope.post('/machines/register', {
      config: OWN_AUTH,
      onRequest: async (req, reply) => {
        if (!carries(req, enrolDigest)) return unauthorized(reply, 'send Authorization: Bearer ENROL_TOKEN with the token from $FERRY_HOME/enrol-token');
      },
    }, async (req, reply) => {
      let doc: unknown;
      try {
        doc = JSON.parse(typeof req.body === 'string' ? req.body : '');
      } catch (e) {
        return reply.code(400).send({ error: 'INVENTORY_INVALID', message: `the body is not JSON (${(e as Error).message}); send the agent's inventory` });
      }
      try {
        const host = req.headers.host ?? '';
        const r = registry.register(doc, peerOf(req), o.publicUrl ?? (HOST_RE.test(host) ? `http://${host}` : null));
        return reply.code(r.created ? 201 : 200).send({ id: r.machine.id, agentToken: r.agentToken, state: r.machine.state });
      } catch (e) {
        return ferryErrorReply(reply, e);
      }
    });
  });

  app.get<{ Params: { id: string }; Querystring: { wait?: string } }>('/machines/:id/work', {
    config: OWN_AUTH, onRequest: agentAuth, schema: { params: idParamsSchema, querystring: waitQuerySchema },
  }, async (req, reply) => {
    const { id } = req.params;
    const waitS = Math.min(MAX_WAIT_S, Number(req.query.wait ?? DEFAULT_WAIT_S));
    const deadline = Date.now() + waitS * 1000;
    try {
      registry.seen(id, peerOf(req));
      // the work may be set by a job in another process: the database is polled
      for (;;) {
        const work = registry.workFor(id);
        if (work) return work;
        if (Date.now() >= deadline || closing.signal.aborted || req.socket.destroyed) return WAIT;
        await sleep(Math.min(WORK_POLL_MS, deadline - Date.now()), undefined, { signal: closing.signal }).catch(() => {});
      }
    } catch (e) {
      return ferryErrorReply(reply, e);
    }
  });

  app.post<{ Params: { id: string }; Body: unknown }>('/machines/:id/status', {
    config: OWN_AUTH, onRequest: agentAuth, schema: { params: idParamsSchema },
  }, async (req, reply) => {
    try {
      registry.reportStatus(req.params.id, req.body);
    } catch (e) {
      return ferryErrorReply(reply, e);
    }
    return reply.code(204).send();
  });

  // ——— the deployed system ———
  app.post<{ Params: { id: string } }>('/machines/:id/booted', { config: OWN_AUTH, schema: { params: idParamsSchema } }, async (req, reply) => {
    if (!registry.redeemBootToken(req.params.id, bearerOf(req) ?? '', peerOf(req))) {
      return unauthorized(reply, 'send Authorization: Bearer BOOT_TOKEN with the one-time token the deploy put into the system');
    }
    return reply.code(204).send();
  });

  // ——— PXE boot (no auth) ———
  app.get<{ Querystring: { mac?: string; uuid?: string } }>('/boot/ipxe', { config: OWN_AUTH, schema: { querystring: bootQuerySchema } }, async (req, reply) => {
    const host = req.headers.host ?? '';
    // the URL goes into a script iPXE expands: only a plain host[:port] may come from the request
    if (!o.publicUrl && !HOST_RE.test(host)) return reply.code(400).send({ error: 'BAD_REQUEST', message: 'the Host header is not HOST[:PORT]; start ferry serve with --public-url' });
    const server = o.publicUrl ?? `http://${host}`;
    const m = registry.lookup(req.query);
    reply.type('text/plain; charset=utf-8');
    if (m?.bootTarget === 'disk') return '#!ipxe\nsanboot --no-describe --drive 0x80 || exit\n';
    return ['#!ipxe',
      `kernel ${server}/boot/vmlinuz initrd=initrd.img ferry.server=${server} ferry.enrol=${o.enrolToken} console=ttyS0,115200 console=tty0`,
      `initrd ${server}/boot/initrd.img`,
      'boot', ''].join('\n');
  });

  for (const name of AGENT_FILES) {
    app.get(`/boot/${name}`, { config: OWN_AUTH }, async (_req, reply) => {
      const path = join(o.agentDir, name);
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) return reply.code(503).send({ error: 'AGENT_NOT_BUILT', message: `${path} does not exist: run ferry agent build` });
      return reply.type('application/octet-stream').header('content-length', st.size).send(createReadStream(path));
    });
  }

  // ——— the operator (API token) ———
  app.get('/machines', async () => ({ machines: registry.list().map(({ inventory: _, ...m }) => m) }));

  app.get<{ Params: { id: string } }>('/machines/:id', { schema: { params: idParamsSchema } }, async (req, reply) => {
    const machine = registry.get(req.params.id);
    if (!machine) return ferryErrorReply(reply, machineNotFound(req.params.id));
    return { machine, history: registry.history(machine.id) };
  });

  app.delete<{ Params: { id: string } }>('/machines/:id', { schema: { params: idParamsSchema } }, async (req, reply) => {
    try {
      registry.forget(req.params.id);
    } catch (e) {
      return ferryErrorReply(reply, e);
    }
    return reply.code(204).send();
  });
}
