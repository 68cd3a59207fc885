// The `customize` block of a job spec (convert and deploy jobs, POST /jobs):
// the same choices as the command-line options, in a form a client can send
// (an authorized key is its text, not a file on the client).
import { FerryError } from '../errors.js';
import { checkCustomization, isEmptyCustomization, parseIpOption, type Customization } from './identity.js';
import { checkTimezoneName, isPublicKeyLine } from './linux.js';
import { parseDomainJoin, type DomainJoin } from './domain-join.js';
import { parseToolRef, toolLabel } from './tools.js';

export interface CustomizeSpec {
  hostname?: string;
  ip?: string[];
  dhcp?: string[];
  newIdentity?: boolean;
  sshAuthorizedKey?: { user: string; keys: string[] };
  timezone?: string;
  /** as --domain-join: DOMAIN[,ou=OU][,user=USER,password-file=FILE], the file on the host that runs the job */
  domainJoin?: string;
  /** as --run: registered tools, NAME[@VERSION] */
  run?: string[];
}

export const CUSTOMIZE_SPEC_FIELDS = ['hostname', 'ip', 'dhcp', 'newIdentity', 'sshAuthorizedKey', 'timezone', 'domainJoin', 'run'];

/** a parsed --domain-join back into its SPEC form */
const domainJoinText = (j: DomainJoin) => [j.domain, ...(j.ou ? [`ou=${j.ou}`] : []), ...(j.user ? [`user=${j.user}`, `password-file=${j.passwordFile}`] : [])].join(',');

/** every problem with a spec's customize block, as (field, message) */
export function customizeSpecErrors(v: unknown, err: (field: string, message: string) => void): void {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) { err('customize', `must be a mapping with ${CUSTOMIZE_SPEC_FIELDS.join(', ')}`); return; }
  const o = v as Record<string, unknown>;
  const catching = (field: string, f: () => void) => { try { f(); } catch (e) { err(field, e instanceof FerryError ? e.message : String(e)); } };
  for (const [k, x] of Object.entries(o)) {
    const field = `customize.${k}`;
    if (k === 'hostname' || k === 'timezone') { if (typeof x !== 'string' || !x.trim()) err(field, 'must be a non-empty string'); }
    else if (k === 'domainJoin') {
      if (typeof x !== 'string' || !x.trim()) err(field, 'must be DOMAIN[,ou=OU][,user=USER,password-file=FILE]');
      else catching(field, () => parseDomainJoin(x));
    } else if (k === 'ip' || k === 'dhcp' || k === 'run') {
      if (!Array.isArray(x) || x.some(s => typeof s !== 'string')) err(field, 'must be a list of strings');
      else if (k === 'ip') for (const s of x as string[]) catching(field, () => parseIpOption(s));
      else if (k === 'run') for (const s of x as string[]) catching(field, () => parseToolRef(s, 'run'));
    } else if (k === 'newIdentity') { if (typeof x !== 'boolean') err(field, 'must be true or false'); }
    else if (k === 'sshAuthorizedKey') {
      const a = x as { user?: unknown; keys?: unknown };
      if (typeof x !== 'object' || x === null || typeof a.user !== 'string' || !a.user || !Array.isArray(a.keys) || !a.keys.length) err(field, 'must be a mapping with user (a guest user) and keys (OpenSSH public key lines)');
      else if ((a.keys as unknown[]).some(l => typeof l !== 'string' || !isPublicKeyLine(l))) err(`${field}.keys`, 'must be OpenSSH public key lines ("ssh-ed25519 AAAA… comment")');
    } else err(field, `unknown; the fields are ${CUSTOMIZE_SPEC_FIELDS.join(', ')}`);
  }
  if (typeof o.timezone === 'string') catching('customize.timezone', () => checkTimezoneName(o.timezone as string));
  if (typeof o.hostname === 'string' || Array.isArray(o.dhcp)) catching('customize', () => checkCustomization({ hostname: o.hostname as string | undefined, dhcp: Array.isArray(o.dhcp) ? o.dhcp as string[] : [] }));
}

/** a (validated) spec block → the customization; undefined when it asks for nothing */
export function customizationFromSpec(s: CustomizeSpec | undefined): Customization | undefined {
  if (!s) return undefined;
  const c: Customization = {
    hostname: s.hostname, ip: (s.ip ?? []).map(parseIpOption), dhcp: s.dhcp ?? [], newIdentity: s.newIdentity || undefined, timezone: s.timezone,
    authorizedKey: s.sshAuthorizedKey && { user: s.sshAuthorizedKey.user, file: '(job spec)', keys: s.sshAuthorizedKey.keys },
    domainJoin: s.domainJoin ? parseDomainJoin(s.domainJoin) : undefined,
    run: s.run?.length ? s.run.map(r => parseToolRef(r, 'run')) : undefined,
  };
  checkCustomization(c);
  return isEmptyCustomization(c) ? undefined : c;
}

/** the command line's customization as a spec block (convert --detach) */
export function customizationToSpec(c: Customization | undefined): CustomizeSpec | undefined {
  if (!c) return undefined;
  return {
    ...(c.hostname ? { hostname: c.hostname } : {}),
    ...(c.ip?.length ? { ip: c.ip.map(i => `${i.iface}=${i.address}/${i.prefix}${i.gateway ? `,gw=${i.gateway}` : ''}${i.dns.map(d => `,dns=${d}`).join('')}`) } : {}),
    ...(c.dhcp?.length ? { dhcp: c.dhcp } : {}),
    ...(c.newIdentity ? { newIdentity: true } : {}),
    ...(c.authorizedKey ? { sshAuthorizedKey: { user: c.authorizedKey.user, keys: c.authorizedKey.keys } } : {}),
    ...(c.timezone ? { timezone: c.timezone } : {}),
    ...(c.domainJoin ? { domainJoin: domainJoinText(c.domainJoin) } : {}),
    ...(c.run?.length ? { run: c.run.map(r => r.version ? toolLabel({ name: r.name, version: r.version }) : r.name) } : {}),
  };
}
