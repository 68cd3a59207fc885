// The console's sessions: the login form trades the API token for a random
// session id kept only in an HttpOnly, SameSite=Strict cookie (Secure under
// TLS). The token itself never goes into the cookie, a URL or the page's
// storage. Sessions live in memory: a restart of `ferry serve` logs everyone
// out, which is the safe way round. Ids are stored as digests, compared by
// map lookup of a SHA-256 (no timing on the secret itself).
import { randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { digest } from '../api/auth.js';

export const COOKIE = 'ferry_session';
const IDLE_MS = 12 * 3600_000;
const MAX_SESSIONS = 1000;

/** the value of one cookie of the request */
export function cookieOf(req: FastifyRequest, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

export class Sessions {
  private readonly seen = new Map<string, number>();
  constructor(private readonly idleMs = IDLE_MS) {}

  private key(id: string) { return digest(id).toString('hex'); }

  /** a new session id (the cookie's value) */
  open(): string {
    const now = Date.now();
    for (const [k, t] of this.seen) if (now - t > this.idleMs) this.seen.delete(k);
    // a flood of logins must not grow the map without bound: the oldest go first
    while (this.seen.size >= MAX_SESSIONS) this.seen.delete(this.seen.keys().next().value!);
    const id = randomBytes(32).toString('hex');
    this.seen.set(this.key(id), now);
    return id;
  }

  /** Does the request carry a live session? (and keeps it alive) */
  valid(req: FastifyRequest): boolean {
    const id = cookieOf(req, COOKIE);
    if (!id || !/^[0-9a-f]{64}$/.test(id)) return false;
    const k = this.key(id);
    const t = this.seen.get(k);
    if (t === undefined) return false;
    if (Date.now() - t > this.idleMs) { this.seen.delete(k); return false; }
    this.seen.set(k, Date.now());
    return true;
  }

  close(req: FastifyRequest): void {
    const id = cookieOf(req, COOKIE);
    if (id) this.seen.delete(this.key(id));
  }
}

export function sessionCookie(id: string, tls: boolean, maxAgeS = IDLE_MS / 1000): string {
  return `${COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeS}${tls ? '; Secure' : ''}`;
}
