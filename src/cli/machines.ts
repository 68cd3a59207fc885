// `ferry machines list | show ID | forget ID`: the machine registry, read
// directly from $FERRY_HOME/ferry.db (as `ferry jobs` reads the job store);
// `ferry serve` fills it as agents register.
import type { Argv } from 'yargs';
import { ferryHome } from '../catalog/db.js';
import { MachineRegistry } from '../machines/registry.js';
import type { HistoryEntry, MachineRecord } from '../machines/types.js';
import { commandGroup } from './group.js';
import { table } from './table.js';

const out = (s: string) => process.stdout.write(s);

function withRegistry<T>(fn: (r: MachineRegistry) => T): T {
  const r = new MachineRegistry(ferryHome());
  try { return fn(r); } finally { r.close(); }
}

const gib = (n: number | null) => (n === null ? '?' : `${(n / 2 ** 30).toFixed(1)} GiB`);

/** what `list --json` gives of each machine: who it is and its disks, not the whole inventory */
const summary = ({ inventory: _, work: __, ...m }: MachineRecord) => m;

function showText(m: MachineRecord, history: HistoryEntry[]): string {
  return [
    `machine ${m.id}: ${m.state}${m.jobId ? ` (job ${m.jobId}${m.image ? `, ${m.image}` : ''})` : m.image ? ` (${m.image})` : ''}`,
    `  SMBIOS uuid ${m.smbiosUuid ?? '-'}, serial ${m.serial ?? '-'}`,
    `  MACs ${m.macs.join(', ') || '-'}`,
    `  boots ${m.bootTarget === 'disk' ? 'from its disk' : 'the agent'}; last seen ${m.lastSeenAt ?? 'never'}${m.peer ? ` from ${m.peer}` : ''}`,
    '  disks:',
    ...m.disks.map(d => `    ${d.path ?? '?'}  ${gib(d.sizeBytes)}  ${d.model ?? '-'}  serial ${d.serial ?? '-'}`),
    '  history:',
    ...history.map(h => `    ${h.at}  ${h.event.padEnd(16)} ${h.state}${h.jobId ? ` job ${h.jobId}` : ''}${h.image ? ` ${h.image}` : ''}${h.detail ? `  ${h.detail}` : ''}`),
  ].join('\n') + '\n';
}

function builder(y: Argv): Argv {
  const json = { type: 'boolean', default: false } as const;
  return y
    .command('list', 'registered machines, oldest first', b => b.option('json', json), a => withRegistry(r => {
      const all = r.list();
      if (a.json) { out(JSON.stringify(all.map(summary), null, 2) + '\n'); return; }
      if (!all.length) return;
      out(table([['ID', 'STATE', 'MACS', 'SERIAL', 'DISKS', 'LAST SEEN'],
        ...all.map(m => [m.id, m.state, m.macs.join(',') || '-', m.serial ?? '-', m.disks.map(d => `${d.path ?? '?'}:${gib(d.sizeBytes)}`).join(' ') || '-', m.lastSeenAt ?? 'never'])]));
    }))
    .command('show ID', 'one machine: identity, disks, boot target, history', b => b
      .positional('ID', { type: 'string', demandOption: true }).option('json', json),
    a => withRegistry(r => {
      const m = r.mustGet(a.ID as string);
      const history = r.history(m.id);
      out(a.json ? JSON.stringify({ machine: m, history }, null, 2) + '\n' : showText(m, history));
    }))
    .command('forget ID', 'remove a machine from the registry (refused while a job holds it)', b => b
      .positional('ID', { type: 'string', demandOption: true }).option('json', json),
    a => withRegistry(r => {
      r.forget(a.ID as string);
      out(a.json ? JSON.stringify({ id: a.ID, forgotten: true }) + '\n' : `machine ${a.ID}: forgotten\n`);
    }));
}

export const machinesCommand = commandGroup('machines', 'the machine registry: physical machines that booted the Ferry agent', 'list, show or forget', builder);
