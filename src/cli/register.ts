// `ferry register`: a finished target becomes a libvirt domain.
import type { Argv, CommandModule } from 'yargs';
import { DEFAULT_REGISTER_PROFILE, register } from '../register/register.js';
import { DEFAULT_URI } from '../register/libvirt.js';
import { customizationFromArgs, customizeOptions } from './customize-options.js';
import { formatCustomizeChanges } from './customize.js';

export const registerCommand: CommandModule = {
  command: 'register IMAGE',
  describe: 'define a libvirt domain for a converted image, with the hardware of a profile (never replaces a domain)',
  builder: (y: Argv) => customizeOptions(y)
    .positional('IMAGE', { type: 'string', demandOption: true, describe: 'a finished (verified) target image' })
    .option('libvirt', { type: 'string', describe: `libvirt URI (default ${DEFAULT_URI} when given without a value)`, demandOption: true, coerce: (v: unknown) => (typeof v === 'string' && v) ? v : DEFAULT_URI })
    .option('name', { type: 'string', demandOption: true, describe: 'domain name' })
    .option('profile', { type: 'string', default: DEFAULT_REGISTER_PROFILE, describe: "hardware profile (see 'ferry profiles list')" })
    .option('memory', { type: 'string', describe: "guest memory, e.g. 2G (default: the profile's)" })
    .option('cpus', { type: 'number', describe: "virtual CPUs (default: the profile's)" })
    .option('mac', { type: 'string', describe: "the NIC's MAC (default: the one the guest binds, else a new 52:54:00 one)" })
    .option('start', { type: 'boolean', default: false, describe: 'start the domain once defined' })
    .option('domain-type', { choices: ['qemu', 'kvm'] as const, default: 'qemu' as const, describe: 'qemu = TCG emulation (works without usable KVM), kvm = hardware virtualisation' })
    .option('serial-log', { type: 'string', describe: 'file the serial console is written to (default /var/log/libvirt/qemu/NAME-serial0.log)' })
    .option('network', { type: 'string', describe: "libvirt network for the NIC (default: QEMU's user-mode network)" })
    .option('json', { type: 'boolean', default: false }),
  handler: async a => {
    const r = await register({
      image: a.IMAGE as string, uri: a.libvirt as string, name: a.name as string, profile: a.profile as string,
      memory: a.memory as string | undefined, cpus: a.cpus as number | undefined, mac: a.mac as string | undefined,
      start: a.start as boolean, domainType: a['domain-type'] as 'qemu' | 'kvm', serialLog: a['serial-log'] as string | undefined,
      network: a.network as string | undefined, customize: await customizationFromArgs(a),
    });
    const hw = r.hardware;
    process.stdout.write(a.json ? JSON.stringify({ event: 'result', ...r }) + '\n' : [
      `domain ${r.name} (${r.uuid}) defined on ${r.uri}${r.started ? ' and started' : ''}; state ${r.state}`,
      `  profile ${r.profile}: ${hw.machine} ${hw.firmware}, ${hw.cpus} CPU(s), ${hw.memoryMiB} MiB, disk ${hw.disk.bus} (${r.format} ${r.image})`,
      `  NIC ${hw.nic.model} ${hw.nic.mac} (${hw.nic.macSource}); domain type ${r.domainType}; serial console -> ${r.serialLog}`,
      ...(r.customized ? [`  customized: ${r.customized.length} change(s)`, ...formatCustomizeChanges(r.customized).map(l => `  ${l}`)] : []),
    ].join('\n') + '\n');
  },
};
