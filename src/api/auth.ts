// Bearer tokens of the API: the operator's API token on most routes, the
// enrolment, agent and boot tokens on the machine routes (src/api/machines.ts).
// Compared as SHA-256 digests in constant time, so neither content nor length
// leaks; a token never reaches a log line or a reply.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** the token of `Authorization: Bearer TOKEN` (any case of "Bearer"), or undefined */
export function bearerOf(req: FastifyRequest): string | undefined {
  return /^Bearer +([^\s]+) *$/i.exec(req.headers.authorization ?? '')?.[1];
}

export const digest = (token: string) => createHash('sha256').update(token).digest();

/** Does the request carry the token whose digest is `expected`? */
export function carries(req: FastifyRequest, expected: Buffer): boolean {
  const given = bearerOf(req);
  return timingSafeEqual(digest(given ?? ''), expected) && given !== undefined;
}

export async function unauthorized(reply: FastifyReply, message: string): Promise<FastifyReply> {
  await reply.code(401).header('www-authenticate', 'Bearer realm="ferry"').send({ error: 'UNAUTHORIZED', message });
  return reply;
}

/** Route config of a route that authenticates by itself (the global API-token check skips it). */
export const OWN_AUTH = { ownAuth: true } as const;
export const hasOwnAuth = (req: FastifyRequest) => (req.routeOptions.config as { ownAuth?: boolean } | undefined)?.ownAuth === true;
