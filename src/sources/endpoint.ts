// SOURCE and TARGET arguments are endpoints: a local path today; nbd:// and
// iscsi:// URLs are parsed here so every command speaks the same forms.
import { resolve } from 'node:path';
import { usageError } from '../errors.js';

export type Endpoint =
  | { kind: 'file'; path: string }
  | { kind: 'nbd'; url: string; host?: string; port?: number; export: string; tls: boolean; socket?: string }
  | { kind: 'iscsi'; url: string; host: string; port: number; iqn: string; lun: number; user?: string };

export function parseEndpoint(spec: string): Endpoint {
  const m = /^([a-z+]+):\/\//.exec(spec);
  if (!m) return { kind: 'file', path: resolve(spec) };
  const scheme = m[1];
  let u: URL;
  try { u = new URL(spec); } catch { throw usageError(`cannot parse ${spec} as a URL`); }
  switch (scheme) {
    case 'file':
      return { kind: 'file', path: decodeURIComponent(u.pathname) };
    case 'nbd': case 'nbds': case 'nbd+unix':
      return {
        kind: 'nbd', url: spec, tls: scheme === 'nbds',
        host: u.hostname || undefined, port: u.port ? Number(u.port) : scheme === 'nbd+unix' ? undefined : 10809,
        export: decodeURIComponent(u.pathname.replace(/^\//, '')), socket: u.searchParams.get('socket') ?? undefined,
      };
    case 'iscsi': {
      const parts = u.pathname.split('/').filter(Boolean);
      if (parts.length !== 2 || !/^\d+$/.test(parts[1])) throw usageError(`iSCSI URLs look like iscsi://[USER@]HOST[:PORT]/IQN/LUN, not ${spec}`);
      return {
        kind: 'iscsi', url: spec, host: u.hostname, port: u.port ? Number(u.port) : 3260,
        iqn: decodeURIComponent(parts[0]), lun: Number(parts[1]), user: u.username || undefined,
      };
    }
    default:
      throw usageError(`unknown scheme ${scheme}:// in ${spec}; use a path, nbd://, nbd+unix:// or iscsi://`);
  }
}

export function describeEndpoint(e: Endpoint): string {
  return e.kind === 'file' ? e.path : e.url.replace(/\/\/[^@/]*@/, '//');
}
