// A command of subcommands (`ferry jobs …`, `ferry machines …`): without
// one, or with an unknown one, it is a USAGE error that lists them.
import type { Argv, CommandModule } from 'yargs';
import { FerryError } from '../errors.js';

export function commandGroup(command: string, describe: string, subcommands: string, builder: (y: Argv) => Argv): CommandModule {
  const message = `name a ${command} command: ${subcommands}`;
  return {
    command, describe,
    builder: y => builder(y).demandCommand(1, message),
    handler: () => { throw new FerryError('USAGE', 2, message); },
  };
}
