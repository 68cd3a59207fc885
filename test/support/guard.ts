// The harness guard: what a test leaves on the machine (loop devices, mounts,
// helper daemons, Ferry work dirs) fails that test file.
import { execa } from 'execa';
import { readFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';

export interface MachineState { loops: string[]; mounts: string[]; daemons: string[]; workDirs: string[] }

// process names as the kernel keeps them (15 characters: qemu-storage-daemon is 'qemu-storage-da')
const DAEMONS = ['qemu-storage-da', 'qemu-nbd', 'nbdkit', 'tgtd', 'qemu-system-x86', 'dnsmasq'];

export async function machineState(): Promise<MachineState> {
  const loops = (await execa('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE'], { reject: false })).stdout.split('\n').filter(Boolean);
  const mounts = (await readFile('/proc/self/mounts', 'utf8')).split('\n')
    .filter(l => /ferry-/.test(l) || / fuse(\.\S+)? /.test(l) && !l.includes('/proc/sys/fs/binfmt_misc')
      // `ip netns add` mounts /run/netns (and one file per namespace) the first time it runs
      || l.split(' ')[1]?.startsWith('/run/netns'));
  const daemons: string[] = [];
  for (const name of DAEMONS) {
    // not zombies: a stopped --daemonize qsd is one until init reaps it
    const r = await execa('pgrep', ['-a', '-x', '-r', 'R,S,D,T', name], { reject: false });
    daemons.push(...r.stdout.split('\n').filter(Boolean));
  }
  const workDirs = (await readdir(process.env.FERRY_TMP ?? tmpdir())).filter(n => n.startsWith('ferry-'));
  return { loops, mounts, daemons, workDirs };
}

/** Differences between two states: what appeared since `before`. */
export function leftBehind(before: MachineState, after: MachineState): string[] {
  const out: string[] = [];
  for (const k of Object.keys(after) as (keyof MachineState)[]) {
    for (const item of after[k]) if (!before[k].includes(item)) out.push(`${k}: ${item}`);
  }
  return out;
}
