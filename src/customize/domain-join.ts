// `--domain-join SPEC`: the request to join a Windows clone to a domain,
// written into the answer file Windows setup/sysprep reads (never joined here).
//
//   SPEC = DOMAIN[,ou=OU][,user=USER,password-file=FILE]
//
// DOMAIN is the DNS (or NetBIOS) domain name. OU is the organizational unit's
// distinguished name, which has commas of its own: a comma starts a new key
// only where one of the keys (lower case: ou=, user=, password-file=) follows,
// so write the DN's attributes upper case (OU=Servers,DC=example,DC=com).
// USER is DOMAIN\name, name@domain or name; the password is read from FILE
// (mode 0600, like every secret file Ferry reads) and appears only in the
// answer file, never in a log, report or error. Without user and password the
// answer file asks for an unsecure join to a pre-staged computer account.
import { readFile } from 'node:fs/promises';
import { usageError } from '../errors.js';
import { checkSecretFile } from '../sources/secrets.js';

export interface DomainJoin {
  domain: string;
  ou?: string;
  user?: string;
  passwordFile?: string;
}

const DOMAIN_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const USER_RE = /^[^\s"<>&'\\/@]{1,104}(\\[^\s"<>&'\\/@]{1,104}|@[a-z0-9.-]{1,253})?$/i;
const KEYS = ['ou', 'user', 'password-file'] as const;

export function parseDomainJoin(spec: string): DomainJoin {
  const hint = 'write it as DOMAIN[,ou=OU][,user=USER,password-file=FILE], e.g. example.com,ou=OU=Servers,DC=example,DC=com,user=EXAMPLE\\joiner,password-file=/root/join.pw';
  const parts = spec.trim().split(/,(?=(?:ou|user|password-file)=)/);
  const domain = parts.shift() ?? '';
  if (!DOMAIN_RE.test(domain)) throw usageError(`--domain-join ${spec}: '${domain}' is not a domain name; ${hint}`);
  const j: DomainJoin = { domain };
  const seen = new Set<string>();
  for (const p of parts) {
    const at = p.indexOf('=');
    const key = p.slice(0, at) as (typeof KEYS)[number];
    const value = p.slice(at + 1);
    if (seen.has(key)) throw usageError(`--domain-join: ${key}= is given twice`);
    seen.add(key);
    if (!value) throw usageError(`--domain-join: ${key}= has no value; ${hint}`);
    if (/[\r\n\0<>&"]/.test(value)) throw usageError(`--domain-join: ${key}= holds a character an answer file cannot carry (<, >, &, ", line breaks)`);
    if (key === 'ou') j.ou = value;
    else if (key === 'user') {
      if (!USER_RE.test(value)) throw usageError(`--domain-join: user=${value} is not an account name (DOMAIN\\name, name@domain or name)`);
      j.user = value;
    } else j.passwordFile = value;
  }
  if (!!j.user !== !!j.passwordFile) throw usageError('--domain-join: give user= and password-file= together (or neither, for a pre-staged computer account)');
  return j;
}

/** the join password, read once before anything is written (checked like every secret file) */
export async function readJoinPassword(j: DomainJoin): Promise<string | undefined> {
  if (!j.passwordFile) return undefined;
  await checkSecretFile(j.passwordFile, '--domain-join password-file=');
  const text = (await readFile(j.passwordFile, 'utf8')).replace(/\r?\n$/, '');
  if (!text || /[\r\n\0]/.test(text)) throw usageError(`--domain-join password-file=${j.passwordFile}: the file must hold the password on one line`);
  return text;
}

/** a user given as DOMAIN\name or name@domain → the domain and name the answer file's Credentials take */
export function splitUser(j: DomainJoin): { domain: string; name: string } | undefined {
  if (!j.user) return undefined;
  const bs = j.user.indexOf('\\');
  if (bs > 0) return { domain: j.user.slice(0, bs), name: j.user.slice(bs + 1) };
  const at = j.user.indexOf('@');
  if (at > 0) return { domain: j.user.slice(at + 1), name: j.user.slice(0, at) };
  return { domain: j.domain, name: j.user };
}
