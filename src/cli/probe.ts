// `ferry probe URL`: what a server offers. For NBD the exports (nbdinfo
// --list), for iSCSI the targets and LUNs of a portal (iscsi-ls); each disk
// is then opened read-only like a source and described as `ferry info` does.
import { workDir } from '../blockdev/mount.js';
import { authFailed, authRequired, exportMissing, FerryError, lunMissing, notRoot, targetMissing, usageError } from '../errors.js';
import { describeDisk, type DiskInfo } from '../info.js';
import { parseEndpoint } from '../sources/endpoint.js';
import {
  chapRefused, checkCredentials, detailsOf, listIscsi, listNbdExports, mutualWhat, openNetworkSource, targetNotAuthenticated, whereOf, type IscsiEndpoint, type NbdEndpoint,
} from '../sources/network.js';
import { networkCredentials, redact } from '../sources/secrets.js';
import { withScope } from '../util/scope.js';
import { formatInfo, human } from './text.js';

interface ProbeError { code: string; message: string }

export interface ProbedExport { name: string; description?: string; size: number; url: string; disk?: DiskInfo; error?: ProbeError }
export interface ProbedLun { lun: number; type: string; size?: number; sizeText?: string; url: string; disk?: DiskInfo; error?: ProbeError }
export interface ProbedTarget { iqn: string; portal: string; luns: ProbedLun[]; error?: ProbeError }
export interface ProbeResult { url: string; kind: 'nbd' | 'iscsi'; exports?: ProbedExport[]; targets?: ProbedTarget[] }

type IscsiProbe = { host: string; port: number; user?: string; iqn?: string; lun?: number };

/** iscsi://[USER@]HOST[:PORT][/IQN[/LUN]]: a portal, one target, or one LUN. */
export function parseIscsiProbe(spec: string): IscsiProbe {
  let u: URL;
  try { u = new URL(spec); } catch { throw usageError('cannot parse the iSCSI URL; write iscsi://[USER@]HOST[:PORT][/IQN[/LUN]]'); }
  const parts = u.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length > 2 || (parts.length === 2 && !/^\d+$/.test(parts[1]))) {
    throw usageError('probe takes iscsi://[USER@]HOST[:PORT], iscsi://HOST/IQN or iscsi://HOST/IQN/LUN');
  }
  return {
    host: u.hostname, port: u.port ? Number(u.port) : 3260, user: u.username ? decodeURIComponent(u.username) : undefined,
    iqn: parts[0], lun: parts.length === 2 ? Number(parts[1]) : undefined,
  };
}

const asProbeError = (e: unknown): ProbeError => e instanceof FerryError
  ? { code: e.code, message: redact(e.message) }
  : { code: 'INTERNAL', message: redact((e as Error).message) };

export async function probe(spec: string): Promise<ProbeResult> {
  if (process.getuid?.() !== 0) throw notRoot();
  const scheme = /^([a-z+]+):\/\//.exec(spec)?.[1];
  if (scheme === 'iscsi') return probeIscsi(spec, parseIscsiProbe(spec));
  if (scheme === 'nbd' || scheme === 'nbds' || scheme === 'nbd+unix') return probeNbd(spec, parseEndpoint(spec) as NbdEndpoint);
  throw usageError('probe takes an nbd://, nbds://, nbd+unix:// or iscsi:// URL');
}

async function probeNbd(spec: string, ep: NbdEndpoint): Promise<ProbeResult> {
  const c = networkCredentials();
  checkCredentials(ep, c);
  const listed = await listNbdExports(ep, c);
  const wanted = ep.export ? listed.filter(x => x.name === ep.export) : listed;
  if (ep.export && !wanted.length) {
    throw exportMissing(whereOf(ep), ep.export, listed.map(x => x.name), detailsOf(ep));
  }
  const base = new URL(spec);
  const exports: ProbedExport[] = [];
  for (const x of wanted) {
    const u = new URL(base.href);
    u.pathname = `/${encodeURIComponent(x.name)}`;
    const url = u.href;
    const one: ProbedExport = { name: x.name, description: x.description, size: x.size, url };
    try {
      one.disk = await withScope(async scope => {
        const work = await workDir(scope);
        const disk = await openNetworkSource(scope, { ...ep, url, export: x.name }, work, 'probe', { requireDisk: false, credentials: c });
        return describeDisk(url, disk, work);
      });
    } catch (e) {
      one.error = asProbeError(e);
    }
    exports.push(one);
  }
  return { url: spec, kind: 'nbd', exports };
}

async function probeIscsi(spec: string, p: IscsiProbe): Promise<ProbeResult> {
  const c = networkCredentials();
  const check = (lun: number, iqn: string): IscsiEndpoint => {
    const auth = p.user ? `${encodeURIComponent(p.user)}@` : '';
    const ep: IscsiEndpoint = { kind: 'iscsi', url: `iscsi://${auth}${p.host}:${p.port}/${iqn}/${lun}`, host: p.host, port: p.port, iqn, lun, user: p.user };
    checkCredentials(ep, c);
    return ep;
  };
  check(0, p.iqn ?? 'iqn.probe:x');
  let listed = await listIscsi(p, c, true);
  if (p.iqn) {
    const mine = listed.filter(t => t.iqn === p.iqn);
    if (!mine.length) {
      throw targetMissing(`${p.host}:${p.port}`, p.iqn, listed.map(t => t.iqn), { host: p.host, port: p.port, target: p.iqn });
    }
    listed = mine;
  }
  // a login failure on every target asked for is the answer itself: say it as the typed error
  if (listed.length && listed.every(t => t.error && targetNotAuthenticated(t.error))) {
    const which = listed.length === 1 ? `iSCSI target ${listed[0].iqn} at ${p.host}:${p.port}` : `every iSCSI target at ${p.host}:${p.port}`;
    throw authFailed(await mutualWhat(p, c, which), `${targetNotAuthenticated(listed[0].error!)}; check the target's user name and password in --mutual-chap-secret-file`,
      { host: p.host, port: p.port, targets: listed.map(t => t.iqn), user: p.user });
  }
  if (listed.length && listed.every(t => t.error && /Authentication failure/i.test(t.error))) {
    const which = listed.length === 1 ? `iSCSI target ${listed[0].iqn} at ${p.host}:${p.port}` : `every iSCSI target at ${p.host}:${p.port}`;
    const details = { host: p.host, port: p.port, targets: listed.map(t => t.iqn), user: p.user };
    if (!c.chapSecretFile) throw authRequired(which, `CHAP authentication; write iscsi://USER@${p.host}:${p.port}${p.iqn ? `/${p.iqn}` : ''} and give --chap-secret-file FILE`, details);
    throw chapRefused(which, p.user, c, details);
  }
  const targets: ProbedTarget[] = [];
  for (const t of listed) {
    const target: ProbedTarget = { iqn: t.iqn, portal: t.portal, luns: [] };
    if (t.error) target.error = { code: 'ISCSI_LOGIN_FAILED', message: redact(t.error) };
    const luns = (t.luns ?? []).filter(l => p.lun === undefined || l.lun === p.lun);
    if (p.lun !== undefined && !luns.length && !t.error) {
      throw lunMissing(`${p.host}:${p.port}`, t.iqn, p.lun, (t.luns ?? []).filter(l => l.type === 'DIRECT_ACCESS').map(l => String(l.lun)), { host: p.host, port: p.port, target: t.iqn, lun: p.lun });
    }
    for (const l of luns) {
      const ep = check(l.lun, t.iqn);
      const one: ProbedLun = { lun: l.lun, type: l.type, sizeText: l.size, url: ep.url };
      if (l.type === 'DIRECT_ACCESS') {
        try {
          one.disk = await withScope(async scope => {
            const work = await workDir(scope);
            const disk = await openNetworkSource(scope, ep, work, 'probe', { requireDisk: false, credentials: c });
            return describeDisk(ep.url, disk, work);
          });
          one.size = one.disk.virtualSize;
        } catch (e) {
          one.error = asProbeError(e);
        }
      }
      target.luns.push(one);
    }
    targets.push(target);
  }
  return { url: spec, kind: 'iscsi', targets };
}

const indent = (text: string, n: number) => text.trimEnd().split('\n').map(l => ' '.repeat(n) + l).join('\n');

export function formatProbe(r: ProbeResult): string {
  const out: string[] = [];
  if (r.kind === 'nbd') {
    const xs = r.exports ?? [];
    out.push(`${r.url}: ${xs.length} export${xs.length === 1 ? '' : 's'}`);
    for (const x of xs) {
      out.push(`  export '${x.name}'${x.description ? ` (${x.description})` : ''}: ${human(x.size)}  ${x.url}`);
      if (x.disk) out.push(indent(formatInfo(x.disk), 4));
      if (x.error) out.push(`    cannot read it: ${x.error.code}: ${x.error.message}`);
    }
  } else {
    const ts = r.targets ?? [];
    out.push(`${r.url}: ${ts.length} target${ts.length === 1 ? '' : 's'}`);
    for (const t of ts) {
      out.push(`  target ${t.iqn} (portal ${t.portal})`);
      if (t.error) out.push(`    cannot log in: ${t.error.message}`);
      for (const l of t.luns) {
        out.push(`    LUN ${l.lun}: ${l.type}${l.size !== undefined ? `, ${human(l.size)}` : l.sizeText ? `, ${l.sizeText}` : ''}${l.type === 'DIRECT_ACCESS' ? `  ${l.url}` : ''}`);
        if (l.disk) out.push(indent(formatInfo(l.disk), 6));
        if (l.error) out.push(`      cannot read it: ${l.error.code}: ${l.error.message}`);
      }
    }
  }
  return out.join('\n') + '\n';
}
