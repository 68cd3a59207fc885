// The customization flags this part of issue 15 adds, for every command that
// customizes (`ferry customize`, later convert/reconfigure/register/deploy):
//   --domain-join SPEC        DOMAIN[,ou=OU][,user=USER,password-file=FILE] (Windows)
//   --run TOOL[@VERSION]      a registered tool run once at first boot (repeatable)
import type { Argv } from 'yargs';
import { parseDomainJoin } from '../customize/domain-join.js';
import type { Customization } from '../customize/identity.js';
import { parseToolRef } from '../customize/tools.js';

export function customizeToolOptions<T>(y: Argv<T>) {
  return y
    .option('domain-join', { type: 'string', describe: 'Windows: DOMAIN[,ou=OU][,user=USER,password-file=FILE] written into the answer file (the password file is mode 0600)' })
    .option('run', { type: 'string', array: true, describe: "a registered tool (see 'ferry tools list'), NAME or NAME@VERSION, run once at first boot; repeat for more" });
}

/** the parsed fields (usage errors before anything is opened) */
export function customizeToolFields(a: { 'domain-join'?: string; run?: (string | number)[] }): Pick<Customization, 'domainJoin' | 'run'> {
  const out: Pick<Customization, 'domainJoin' | 'run'> = {};
  if (a['domain-join'] !== undefined) out.domainJoin = parseDomainJoin(String(a['domain-join']));
  if (a.run?.length) out.run = a.run.map(r => parseToolRef(String(r), '--run'));
  return out;
}
