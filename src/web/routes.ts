// The console's routes: the page shell at /, its hashed assets, and the login
// that trades the API token for a session cookie. The page then uses the same
// JSON API as any script (src/api/): the console has no data route of its own.
import type { FastifyInstance } from 'fastify';
import { digest, OWN_AUTH } from '../api/auth.js';
import { timingSafeEqual } from 'node:crypto';
import { loadAssets } from './assets.js';
import { sameOrigin } from './security.js';
import { sessionCookie, type Sessions } from './session.js';

export interface WebOptions { token: string; sessions: Sessions; tls: boolean }

export const loginBodySchema = {
  type: 'object', additionalProperties: false, required: ['token'],
  properties: { token: { type: 'string', maxLength: 200, description: 'the API token' } },
} as const;

export const assetParamsSchema = {
  type: 'object', required: ['name'],
  properties: { name: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,100}$' } },
} as const;

export function webRoutes(app: FastifyInstance, o: WebOptions): void {
  const assets = loadAssets();
  const expected = digest(o.token);

  // the shell holds no data: without a session it shows the login form
  app.get('/', { config: OWN_AUTH }, async (_req, reply) =>
    reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(assets.shell));

  app.get<{ Params: { name: string } }>('/assets/:name', { config: OWN_AUTH, schema: { params: assetParamsSchema } }, async (req, reply) => {
    const a = assets.files.get(req.params.name);
    if (!a) return reply.code(404).send({ error: 'NOT_FOUND', message: 'no such asset' });
    return reply.type(a.type).header('cache-control', 'public, max-age=31536000, immutable').send(a.body);
  });

  app.post<{ Body: { token: string } }>('/login', { config: OWN_AUTH, schema: { body: loginBodySchema } }, async (req, reply) => {
    // a login from another site would log the victim into the attacker's session: same rule as every form
    if (!sameOrigin(req)) return reply.code(403).send({ error: 'CROSS_ORIGIN', message: 'a login must come from the console of this server' });
    if (!timingSafeEqual(digest(req.body.token.trim()), expected)) {
      return reply.code(401).send({ error: 'UNAUTHORIZED', message: 'wrong token: give the token from $FERRY_HOME/api-token' });
    }
    return reply.header('set-cookie', sessionCookie(o.sessions.open(), o.tls)).code(204).send();
  });

  app.post('/logout', async (req, reply) => {
    o.sessions.close(req);
    return reply.header('set-cookie', sessionCookie('', o.tls, 0)).code(204).send();
  });

  app.get('/session', async () => ({ authenticated: true }));
}
