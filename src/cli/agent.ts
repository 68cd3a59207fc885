// `ferry agent build`: the boot agent a physical machine runs (src/agent/README.md).
// Progress goes to stderr; the result to stdout (one JSON line with --json).
import type { Argv, CommandModule } from 'yargs';
import { buildAgent } from '../agent/build.js';
import { withSignalAbort } from '../util/abort.js';

export const agentCommand: CommandModule = {
  command: 'agent <command>',
  describe: "the boot agent for physical machines: 'ferry agent build'",
  builder: (y: Argv) => y
    .command({
      command: 'build',
      describe: 'build the agent kernel, initrd and hybrid BIOS/UEFI ISO from this host\'s Debian packages (skipped when up to date)',
      builder: (b: Argv) => b
        .option('out', { type: 'string', describe: 'output directory (default: $FERRY_HOME/agent, where ferry serve looks)' })
        .option('server', { type: 'string', describe: "bake the ferry serve URL into the ISO's boot entry (with --enrol-token-file)" })
        .option('enrol-token-file', { type: 'string', describe: "bake this enrolment token into the ISO (the ISO is then mode 600)" })
        .option('json', { type: 'boolean', default: false, describe: 'the result as one JSON line' }),
      handler: async a => {
        // SIGINT/SIGTERM stop the build's tools; its temp dir is removed on the way out
        const r = await withSignalAbort(() => buildAgent({
          out: a.out as string | undefined, server: a.server as string | undefined,
          enrolTokenFile: a['enrol-token-file'] as string | undefined,
          log: line => process.stderr.write(`${line}\n`),
        }));
        const m = r.manifest;
        process.stdout.write(a.json
          ? JSON.stringify({ event: 'result', dir: r.dir, upToDate: r.upToDate, vmlinuz: r.vmlinuz, initrd: r.initrd, iso: r.iso, ...m }) + '\n'
          : `${r.upToDate ? 'up to date' : 'built'}: ${r.dir} (kernel ${m.kernel}, initrd.img ${m.initrdBytes} bytes, ferry-agent.iso ${m.isoBytes} bytes)\n`);
      },
    })
    .demandCommand(1, 'name an agent command: build'),
  handler: () => {},
};
