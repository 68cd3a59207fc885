// `ferry export`: a converted image as an OVA, an OVF directory or a VMware .vmx + vmdk.
import type { Argv, CommandModule } from 'yargs';
import { DEFAULT_EXPORT_PROFILE, exportImage } from '../register/export.js';

export const exportCommand: CommandModule = {
  command: 'export IMAGE',
  describe: 'package a converted image for another hypervisor: --ova OUT.ova | --ovf DIR | --vmx DIR',
  builder: (y: Argv) => y
    .positional('IMAGE', { type: 'string', demandOption: true, describe: 'a finished (verified) target image' })
    .option('ova', { type: 'string', describe: 'write one OVA file (OVF 2.0 envelope, manifest, streamOptimized vmdk)' })
    .option('ovf', { type: 'string', describe: 'write NAME.ovf, NAME.mf and NAME-disk1.vmdk into this directory' })
    .option('vmx', { type: 'string', describe: 'write NAME.vmx and NAME.vmdk (monolithicSparse) into this directory' })
    .conflicts('ova', ['ovf', 'vmx'])
    .conflicts('ovf', 'vmx')
    .option('profile', { type: 'string', default: DEFAULT_EXPORT_PROFILE, describe: "hardware profile (see 'ferry profiles list')" })
    .option('name', { type: 'string', describe: "the virtual machine's name (default: the image's file name)" })
    .option('memory', { type: 'string', describe: "guest memory, e.g. 2G (default: the profile's)" })
    .option('cpus', { type: 'number', describe: "virtual CPUs (default: the profile's)" })
    .option('mac', { type: 'string', describe: "the NIC's MAC (default: the one the guest binds, else a new one)" })
    .option('force', { type: 'boolean', default: false, describe: 'replace existing output files' })
    .option('json', { type: 'boolean', default: false }),
  handler: async a => {
    const r = await exportImage({
      image: a.IMAGE as string, ova: a.ova as string | undefined, ovf: a.ovf as string | undefined, vmx: a.vmx as string | undefined,
      profile: a.profile as string, name: a.name as string | undefined, memory: a.memory as string | undefined,
      cpus: a.cpus as number | undefined, mac: a.mac as string | undefined, force: a.force as boolean,
    });
    const hw = r.hardware;
    process.stdout.write(a.json ? JSON.stringify({ event: 'result', ...r }) + '\n' : [
      `exported ${r.image} as ${r.kind.toUpperCase()} in ${r.seconds.toFixed(1)} s: ${r.files.join(', ')}`,
      `  profile ${r.profile}: ${hw.machine} ${hw.firmware}, ${hw.cpus} CPU(s), ${hw.memoryMiB} MiB, disk ${hw.disk.bus}, NIC ${hw.nic.model} ${hw.nic.mac} (${hw.nic.macSource})`,
      `  disk ${r.disk.file}: ${r.disk.subformat} vmdk, ${r.disk.bytes} bytes`,
    ].join('\n') + '\n');
  },
};
