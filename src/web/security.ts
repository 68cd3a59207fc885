// Headers every response of `ferry serve` carries, and the cross-site check
// for the console's cookie. A browser sends the session cookie by itself, so a
// state-changing request authenticated by it must come from a page of this
// very server: its Origin header must name this server (browsers send Origin
// on every POST/DELETE). A bearer token is never sent by a browser on its own,
// so requests carrying one are not checked.
import type { FastifyReply, FastifyRequest } from 'fastify';

/** no inline script or style, nothing from elsewhere, no framing */
export const CSP = [
  "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
  "object-src 'none'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

/** Set on the raw response, so replies that bypass fastify's send (the event streams) carry them too. */
export function setSecurityHeaders(reply: FastifyReply, tls: boolean): void {
  const r = reply.raw;
  r.setHeader('content-security-policy', CSP);
  r.setHeader('x-content-type-options', 'nosniff');
  r.setHeader('referrer-policy', 'no-referrer');
  r.setHeader('x-frame-options', 'DENY');
  if (tls) r.setHeader('strict-transport-security', 'max-age=31536000');
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);
export const changesState = (req: FastifyRequest) => !SAFE.has(req.method);

/** Does the request's Origin name this server (scheme, host and port as the browser reached it)? */
export function sameOrigin(req: FastifyRequest): boolean {
  const origin = req.headers.origin;
  const host = req.headers.host;
  if (!origin || !host) return false;
  return origin === `${req.protocol}://${host}`;
}
