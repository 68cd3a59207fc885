// A machine room for deploy and capture tests: a network namespace holding a
// bridge (the "LAN", 10.234.0.1/24 inside) with one tap device per machine,
// joined to this namespace by a veth pair (host 10.235.X.1/30, namespace
// 10.235.X.2/30, X the first free from the pid on: two labs, of two test
// runs, can exist at once) so the test reaches services that listen inside
// (lab.addr). A
// "physical machine" is a qemu VM on that bridge with hardware of its own: q35,
// an AHCI (SATA) disk, an e1000e NIC, SMBIOS strings, network boot first.
// remove() stops every machine and takes the namespace (bridge, taps, veth) away.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { makeNetnsLink, type NetnsLink } from './netns.js';
import { bootBudget } from './boot-budget.js';
import { cpuSeconds } from '../../src/verify/boot.js';

export const LAN_ADDR = '10.234.0.1';
export const LAN_PREFIX = '10.234.0.';

export interface MachineSpec {
  name: string;
  disk: string;
  mac: string;
  uuid: string;
  serial: string;
  manufacturer?: string;
  product?: string;
  memoryMiB?: number;
  /** 'network' boots PXE first, then the disk (as the machines do); 'disk' the disk only */
  boot?: 'network' | 'disk';
  /** an ISO in the machine's CD drive, booted before anything else (virtual media, as a BMC mounts it) */
  cdrom?: string;
}

export interface Machine {
  spec: MachineSpec;
  serialLog: string;
  proc: ResultPromise;
  /** the serial console so far */
  console(): Promise<string>;
  /** wait until the console matches re (from offset `from` on); throws with the console's tail once QEMU has used timeoutMs of CPU time (or 3x that of wall time) or exited */
  waitFor(re: RegExp, timeoutMs: number, from?: number): Promise<RegExpExecArray>;
  /** pull the plug: qemu is killed at once */
  powerOff(): Promise<void>;
  exited(): boolean;
}

export interface Lab {
  ns: string;
  /** where the test (in this namespace) reaches services listening inside the lab */
  addr: string;
  dir: string;
  link: NetnsLink;
  /** a command run inside the namespace (with its own mount namespace: `ip netns exec`) */
  inNs(cmd: string, args: string[]): string[];
  start(spec: MachineSpec): Promise<Machine>;
  remove(): Promise<void>;
}

const sh = (cmd: string, args: string[]) => execa(cmd, args, { stdin: 'ignore' });

/** opts.isolated: no veth to this namespace (LAB_ADDR unreachable), so labs of tests running at once cannot clash */
export async function makeLab(dir: string, opts: { isolated?: boolean } = {}): Promise<Lab> {
  const id = String(process.pid);
  const ns = `ferry-lab-${id}`;
  const taken = String((await sh('ip', ['-4', '-o', 'addr', 'show'])).stdout);
  const x = Array.from({ length: 256 }, (_, i) => (process.pid + i) % 256).find(n => !taken.includes(` 10.235.${n}.`));
  assert.ok(x !== undefined, 'no free 10.235.X.0/30 for the lab');
  const link = await makeNetnsLink({ ns, hostIf: `flabh${id}`.slice(0, 15), nsIf: `flabn${id}`.slice(0, 15), hostIp: `10.235.${x}.1`, nsIp: `10.235.${x}.2`, isolated: opts.isolated });
  const machines: Machine[] = [];
  let taps = 0;
  try {
    await sh('ip', ['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
    await sh('ip', ['-n', ns, 'addr', 'add', `${LAN_ADDR}/24`, 'dev', 'br0']);
    await sh('ip', ['-n', ns, 'link', 'set', 'br0', 'up']);
  } catch (e) {
    await link.remove();
    throw e;
  }
  const inNs = (cmd: string, args: string[]) => ['netns', 'exec', ns, cmd, ...args];

  const lab: Lab = {
    ns, addr: link.nsIp!, dir, link, inNs,
    async start(spec) {
      const tap = `tap${taps++}`;
      await sh('ip', ['-n', ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
      await sh('ip', ['-n', ns, 'link', 'set', tap, 'master', 'br0', 'up']);
      const serialLog = join(dir, `${spec.name}.serial.log`);
      await writeFile(serialLog, '');
      const smbios = [`type=1`, `manufacturer=${spec.manufacturer ?? 'Ferry Labs'}`, `product=${spec.product ?? 'Bare Metal 1'}`,
        `serial=${spec.serial}`, `uuid=${spec.uuid}`].join(',');
      const args = [
        '-accel', 'tcg', '-M', 'q35', '-m', String(spec.memoryMiB ?? 1024), '-smp', '1',
        '-display', 'none', '-serial', `file:${serialLog}`, '-monitor', 'none',
        '-smbios', smbios,
        '-netdev', `tap,id=n0,ifname=${tap},script=no,downscript=no`,
        '-device', `e1000e,netdev=n0,mac=${spec.mac}${spec.boot === 'disk' ? '' : ',bootindex=1'}`,
        '-drive', `if=none,id=d0,file=${spec.disk},format=qcow2,cache=unsafe`,
        '-device', `ide-hd,drive=d0,bus=ide.0,bootindex=2`,
        ...(spec.cdrom ? ['-drive', `if=none,id=cd0,file=${spec.cdrom},format=raw,media=cdrom,readonly=on`, '-device', 'ide-cd,drive=cd0,bus=ide.1,bootindex=0'] : []),
      ];
      const proc = execa('ip', inNs('qemu-system-x86_64', args), { reject: false, stdin: 'ignore', buffer: false, forceKillAfterDelay: false });
      const m: Machine = {
        spec, serialLog, proc,
        console: () => readFile(serialLog, 'latin1'),
        async waitFor(re, timeoutMs, from = 0) {
          // the budget is QEMU's CPU time from now (boot-budget.ts: a busy host slows the guest, not its budget), the wall clock a backstop
          const { cpuTimeoutMs, timeoutMs: wallMs } = bootBudget(timeoutMs);
          const deadline = Date.now() + wallMs;
          const cpuAtStart = await cpuSeconds(proc.pid!) ?? 0;
          for (;;) {
            const text = (await m.console()).slice(from);
            const hit = re.exec(text);
            if (hit) return hit;
            const cpu = (await cpuSeconds(proc.pid!) ?? 0) - cpuAtStart;
            if (cpu * 1000 > cpuTimeoutMs || Date.now() > deadline || m.exited()) {
              throw new Error(`${spec.name}: no ${re} within ${cpu.toFixed(0)} s of QEMU's CPU time (budget ${timeoutMs / 1000} s)${m.exited() ? ' (qemu exited)' : ''}; console tail:\n${text.slice(-3000)}`);
            }
            await new Promise(r => setTimeout(r, 500));
          }
        },
        async powerOff() {
          proc.kill('SIGKILL');
          await proc;
        },
        exited: () => proc.exitCode !== null || proc.signalCode !== null,
      };
      machines.push(m);
      return m;
    },
    async remove() {
      for (const m of machines) if (!m.exited()) await m.powerOff();
      await link.remove(); // the namespace goes, and with it the bridge and the taps
      const left = String((await execa('pgrep', ['-a', '-f', `netns exec ${ns} `], { reject: false })).stdout).trim();
      assert.equal(left, '', `processes of the lab left: ${left}`);
    },
  };
  return lab;
}
