// The customization options every command that writes an image accepts
// (customize, convert, reconfigure, register): the same names, the same checks.
//   --domain-join SPEC        DOMAIN[,ou=OU][,user=USER,password-file=FILE] (Windows)
//   --run TOOL[@VERSION]      a registered tool run once at first boot (repeatable)
import type { Argv } from 'yargs';
import { parseDomainJoin } from '../customize/domain-join.js';
import { checkCustomization, isEmptyCustomization, parseIpOption, type Customization } from '../customize/identity.js';
import { parseToolRef } from '../customize/tools.js';
import { readAuthorizedKey } from '../customize/linux.js';
import { usageError } from '../errors.js';

const many = (v: unknown) => (v === undefined ? [] : [v].flat().map(String));

export function customizeOptions<T>(y: Argv<T>): Argv<T> {
  return y
    .option('hostname', { type: 'string', describe: 'the name the system gets (/etc/hostname, /etc/hosts, …)' })
    .option('ip', { type: 'string', array: true, describe: 'IF=ADDRESS/PREFIX[,gw=G][,dns=D]: a static address (repeatable)' })
    .option('dhcp', { type: 'string', array: true, describe: 'IF takes its address by DHCP (repeatable)' })
    .option('new-identity', { type: 'boolean', describe: 'a new machine-id at first boot, new SSH host keys, no random seed, DHCP leases or persistent-net rules' })
    .option('ssh-authorized-key', { type: 'string', describe: "an OpenSSH public key file appended to --user's ~/.ssh/authorized_keys" })
    .option('user', { type: 'string', describe: 'with --ssh-authorized-key: the guest user' })
    .option('timezone', { type: 'string', describe: 'a zone of the guest\'s tzdata, e.g. Europe/Berlin' })
    .option('domain-join', { type: 'string', describe: 'Windows: DOMAIN[,ou=OU][,user=USER,password-file=FILE] written into the answer file (the password file is mode 0600)' })
    .option('run', { type: 'string', array: true, describe: "a registered tool (see 'ferry tools list'), NAME or NAME@VERSION, run once at first boot; repeat for more" }) as unknown as Argv<T>;
}

/** the options as a Customization (the key file read and checked), or undefined when none was given */
export async function customizationFromArgs(a: Record<string, unknown>): Promise<Customization | undefined> {
  if (a.user !== undefined && a['ssh-authorized-key'] === undefined) throw usageError('--user goes with --ssh-authorized-key FILE');
  const c: Customization = {
    hostname: a.hostname as string | undefined,
    ip: many(a.ip).map(parseIpOption),
    dhcp: many(a.dhcp),
    newIdentity: a['new-identity'] === true || undefined,
    authorizedKey: a['ssh-authorized-key'] !== undefined ? await readAuthorizedKey(String(a['ssh-authorized-key']), a.user as string | undefined) : undefined,
    timezone: a.timezone as string | undefined,
    domainJoin: a['domain-join'] !== undefined ? parseDomainJoin(String(a['domain-join'])) : undefined,
    run: many(a.run).length ? many(a.run).map(r => parseToolRef(r, '--run')) : undefined,
  };
  checkCustomization(c);
  return isEmptyCustomization(c) ? undefined : c;
}
