// A small client for the job service's HTTP API in tests: JSON requests with
// the bearer token, a server-sent-events reader, and `ferry serve` as a child
// process (its address read from the line it prints, its output kept so a test
// can search it for the token).
import { execa, type ResultPromise } from 'execa';
import { FERRY } from './harness.js';

export interface Reply<T = any> { status: number; body: T; headers: Headers }

export class Api {
  constructor(readonly base: string, readonly token: string | undefined) {}

  async req<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply<T>> {
    const h: Record<string, string> = { ...(this.token !== undefined ? { authorization: `Bearer ${this.token}` } : {}), ...headers };
    if (body !== undefined) h['content-type'] = 'application/json';
    const r = await fetch(this.base + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let parsed: unknown = text;
    try { parsed = text ? JSON.parse(text) : undefined; } catch { /* not JSON */ }
    return { status: r.status, body: parsed as T, headers: r.headers };
  }

  get<T = any>(path: string) { return this.req<T>('GET', path); }
  post<T = any>(path: string, body?: unknown) { return this.req<T>('POST', path, body); }
}

export interface SseEvent { id?: string; event: string; data: any }
export interface SseResult { status: number; contentType: string | null; events: SseEvent[]; comments: string[]; ended: boolean }

/**
 * Read GET path as server-sent events until the server ends the stream (ended)
 * or timeoutMs passes (not ended; the connection is dropped).
 */
export async function readEvents(api: Api, path: string, opts: {
  timeoutMs?: number; headers?: Record<string, string>; onEvent?: (e: SseEvent) => void;
  /** drop the connection after this event (the result is then not `ended`) */
  stopWhen?: (e: SseEvent) => boolean;
} = {}): Promise<SseResult> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), opts.timeoutMs ?? 60_000);
  const events: SseEvent[] = [], comments: string[] = [];
  let ended = false, status = 0, contentType: string | null = null;
  try {
    const r = await fetch(api.base + path, { headers: { ...(api.token ? { authorization: `Bearer ${api.token}` } : {}), ...opts.headers }, signal: ac.signal });
    status = r.status;
    contentType = r.headers.get('content-type');
    if (!r.body) return { status, contentType, events, comments, ended: true };
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const e: Partial<SseEvent> & { data?: any } = {};
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) comments.push(line.slice(1).trim());
          else if (line.startsWith('event:')) e.event = line.slice(6).trim();
          else if (line.startsWith('id:')) e.id = line.slice(3).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
        }
        if (data.length) {
          const ev = { id: e.id, event: e.event ?? 'message', data: JSON.parse(data.join('\n')) };
          events.push(ev);
          opts.onEvent?.(ev);
          if (opts.stopWhen?.(ev)) { ac.abort(); return { status, contentType, events, comments, ended: false }; }
        }
      }
    }
    ended = true;
  } catch (e) {
    if ((e as Error).name !== 'AbortError') throw e;
  } finally {
    clearTimeout(timer);
  }
  return { status, contentType, events, comments, ended };
}

export interface Serve {
  child: ResultPromise;
  pid: number;
  base: string;
  tokenPath: string;
  /** everything the process wrote to stdout and stderr so far */
  output(): string;
  /** SIGTERM, wait for the exit (SIGKILL after timeoutMs); resolves to the exit code */
  stop(timeoutMs?: number): Promise<number | undefined>;
}

/** Start `ferry serve ARGS` with env; resolves once it printed its listening line. */
export async function startServe(args: string[], env: Record<string, string>, timeoutMs = 30_000): Promise<Serve> {
  // stop() decides when to SIGKILL (execa's own default would after 5 s, mid-way through a clean stop)
  const child = execa('node', [FERRY, 'serve', ...args], { env, reject: false, stdin: 'ignore', buffer: false, all: true, forceKillAfterDelay: false });
  let out = '';
  child.all!.on('data', (d: Buffer) => { out += d.toString(); });
  const serve: Serve = {
    child, pid: child.pid!, base: '', tokenPath: '',
    output: () => out,
    async stop(ms = 60_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), ms);
      const r = await child;
      clearTimeout(timer);
      return r.exitCode;
    },
  };
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const m = /listening on (https?:\/\/\S+) \(token in (\S+)\)/.exec(out);
    if (m) return Object.assign(serve, { base: m[1], tokenPath: m[2] });
    if (child.exitCode !== null) throw new Error(`ferry serve exited (${child.exitCode}) before listening:\n${out}`);
    await new Promise(r => setTimeout(r, 50));
  }
  await serve.stop(5000);
  throw new Error(`ferry serve did not print its listening line within ${timeoutMs} ms:\n${out}`);
}

/** the peak resident set (VmHWM) and the current one (VmRSS) of a process, in bytes */
export async function memoryOf(pid: number): Promise<{ hwm: number; rss: number } | undefined> {
  const { readFile } = await import('node:fs/promises');
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  if (!status) return undefined;
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}
