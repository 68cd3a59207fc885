// `ferry reconfigure` and `ferry profiles`: re-fitting images to hardware
// profiles, and the profiles themselves.
import type { Argv, CommandModule } from 'yargs';
import { listProfiles, loadProfile, type Profile } from '../profiles/profiles.js';
import { reconfigure } from '../refit/reconfigure.js';
import { customizationFromArgs, customizeOptions } from './customize-options.js';
import { formatCustomizeChanges } from './customize.js';
import type { RefitResult } from '../refit/refit.js';

export function formatChanges(r: RefitResult): string[] {
  const out = [`re-fitted to profile ${r.profile}: ${r.systems.map(s => `${s.name} (p${s.partition})`).join(', ')}; ${r.changes.length} change(s)`];
  for (const c of r.changes) out.push(`  ${c.file}: ${c.before} -> ${c.after}  (${c.reason})`);
  for (const w of r.warnings ?? []) out.push(`  warning: ${w}`);
  return out;
}

const profileLine = (p: Profile) => `${p.name.padEnd(12)} ${p.machine.padEnd(12)} disk ${p.diskBus.padEnd(15)} nic ${p.nicModel.padEnd(15)} ${p.description}`;

export const reconfigureCommand: CommandModule = {
  command: 'reconfigure IMAGE',
  describe: 're-fit an existing image to a hardware profile (with --overlay the image itself stays untouched)',
  builder: (y: Argv) => customizeOptions(y)
    .positional('IMAGE', { type: 'string', demandOption: true, describe: 'disk image to re-fit (or the template of --overlay)' })
    .option('profile', { type: 'string', demandOption: true, describe: "hardware profile (see 'ferry profiles list')" })
    .option('overlay', { type: 'string', describe: 'write every change into this new qcow2 whose backing file is IMAGE' })
    .option('mac', { type: 'string', describe: "the new NIC's MAC address; bindings to the old one move to it" })
    .option('inventory', { type: 'string', describe: "a P2V agent's inventory.json (profile physical)" })
    .option('firmware', { choices: ['bios', 'uefi'] as const, describe: 'uefi: a BIOS/MBR Linux guest becomes GPT with an EFI system partition after its last partition (the image grows by it)' })
    .option('json', { type: 'boolean', default: false }),
  handler: async a => {
    const r = await reconfigure({ image: a.IMAGE as string, profile: a.profile as string, overlay: a.overlay as string | undefined, mac: a.mac as string | undefined, inventory: a.inventory as string | undefined, firmware: a.firmware as string | undefined, customize: await customizationFromArgs(a) });
    process.stdout.write(a.json ? JSON.stringify(r, null, 2) + '\n' : [`${r.written}${r.overlay ? ` (overlay on ${r.image})` : ''}`, ...(r.firmware?.changes ?? []).map(c => `  ${c.file}: ${c.before} -> ${c.after}  (${c.reason})`), ...formatChanges(r), ...(r.customized ? [`customized: ${r.customized.length} change(s)`, ...formatCustomizeChanges(r.customized)] : [])].join('\n') + '\n');
  },
};

export const profilesCommand: CommandModule = {
  command: 'profiles <action> [NAME]',
  describe: 'hardware profiles: list | show NAME',
  builder: (y: Argv) => y
    .positional('action', { choices: ['list', 'show'] as const })
    .positional('NAME', { type: 'string' })
    .option('json', { type: 'boolean', default: false }),
  handler: async a => {
    if (a.action === 'list') {
      const all = await listProfiles();
      process.stdout.write(a.json ? JSON.stringify(all, null, 2) + '\n' : all.map(profileLine).join('\n') + '\n');
      return;
    }
    if (!a.NAME) throw new (await import('../errors.js')).FerryError('USAGE', 2, 'name a profile: ferry profiles show NAME');
    const p = await loadProfile(a.NAME as string);
    process.stdout.write(a.json ? JSON.stringify(p, null, 2) + '\n' : [profileLine(p),
      `  firmware ${p.firmware}, ${p.cpus || 'inventory'} CPU(s), ${p.memoryMiB || 'inventory'} MiB, serial console ${p.serialConsole ? 'yes' : 'no'}`,
      `  Linux boot drivers: ${p.linux.bootDrivers.join(' ')}; network: ${p.linux.netDrivers.join(' ') || '-'}`,
      `  Windows boot drivers: ${p.windows.bootDrivers.map(d => d.file).join(' ') || '-'}; HAL ${p.windows.hal.acpi ? 'ACPI' : 'non-ACPI'} ${p.windows.hal.multiprocessor ? 'multiprocessor' : 'uniprocessor'}`,
      `  guest tools: enable ${p.guestTools.enable.join(' ') || '-'}; disable ${p.guestTools.disable.join(' ') || '-'}`].join('\n') + '\n');
  },
};
