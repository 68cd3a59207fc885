// Bench part `deploy`: a "physical machine" (qemu under TCG on a bridge in a
// network namespace, test/support/lab.ts) PXE-boots the Ferry agent; the
// Debian guest is deployed onto its fresh 8 GiB disk. Reported: qemu start to
// `registered`, the deploy's wall time and its steps, the bytes the machine's
// disk took (its qcow2 grows only where something was written) against the
// image's used bytes; and the peer: `qemu-img convert` of the same image onto a
// fresh disk of the same machine through the same kind of NBD export (the
// agent's nbdkit, TLS-PSK), timed and measured the same way.
import { execa, type ResultPromise } from 'execa';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { makeLab, LAN_ADDR, type Lab, type MachineSpec } from '../test/support/lab.js';
import { MachineRegistry } from '../src/machines/registry.js';
import { requestExport, stopExport } from '../src/machines/agent-work.js';

export interface DeployBench {
  imageUsedBytes: number;
  registeredSeconds: number;
  ferry: { seconds: number; copySeconds: number; steps: { name: string; seconds: number }[]; diskBytes: number };
  qemuImg: { seconds: number; diskBytes: number };
  /** ferry's copy step against qemu-img's whole write; goal ≤ 1.0 */
  copyVsQemuImg: number;
  /** ferry's whole deploy (copy, verify, re-fit, customize) against qemu-img's write */
  deployVsQemuImg: number;
  /** bytes on the machine's disk against the image's used bytes; goal ≤ 1.05 */
  writtenVsUsed: number;
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));
const diskBytes = async (qcow2: string) => (await stat(qcow2)).blocks * 512;

export async function measureDeploy(cli: string, image: string, usedBytes: number, work: string): Promise<DeployBench> {
  const dir = join(work, 'deploy');
  await mkdir(dir, { recursive: true });
  const env = { ...process.env, FERRY_HOME: join(dir, 'home') } as Record<string, string>;
  const ferry = (args: string[]) => execa(process.execPath, [cli, ...args], { env, stdin: 'ignore' });
  await ferry(['agent', 'build']);
  let lab: Lab | undefined;
  const daemons: ResultPromise[] = [];
  try {
    lab = await makeLab(dir);
    for (const args of [['serve', '--listen', '0.0.0.0:8470', '--log-level', 'warn'], ['pxe', 'serve', '--interface', 'br0', '--dhcp-range', '10.234.0.100,10.234.0.150', '--server', `http://${LAN_ADDR}:8470`]]) {
      daemons.push(execa('ip', lab.inNs(process.execPath, [cli, ...args]), { env, reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'ignore' }));
    }
    await sleep(3000);
    const spec = (disk: string): MachineSpec => ({ name: 'bench', disk, mac: '52:54:00:be:4c:01', uuid: '5e4c0b3a-1d2e-4f60-8a7b-9c0d1e2f3a4b', serial: 'BENCH-1' });

    // 1. PXE boot to registered
    const ferryDisk = join(dir, 'ferry-disk.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', ferryDisk, '8G']);
    let t0 = performance.now();
    let machine = await lab.start(spec(ferryDisk));
    const id = (await machine.waitFor(/FERRY-AGENT: registered (m-[0-9a-f]+)/, 300_000))[1];
    const registeredSeconds = (performance.now() - t0) / 1000;

    // 2. ferry deploy (the job's steps from its record)
    t0 = performance.now();
    await ferry(['deploy', image, '--machine', id, '--hostname', 'bench-01', '--ip', 'enp0s2=10.234.0.60/24']);
    const seconds = (performance.now() - t0) / 1000;
    const jobs = JSON.parse(String((await ferry(['jobs', 'list', '--json'])).stdout)) as { steps: { name: string; startedAt?: string; endedAt?: string }[] }[];
    const steps = jobs.at(-1)!.steps.filter(s => s.startedAt && s.endedAt)
      .map(s => ({ name: s.name, seconds: (Date.parse(s.endedAt!) - Date.parse(s.startedAt!)) / 1000 }));
    while (!machine.exited()) await sleep(500); // the deployed system powers off after its marker
    const ferryBytes = await diskBytes(ferryDisk);

    // 3. the peer: qemu-img convert onto a fresh disk of the same machine, through its agent's export
    const peerDisk = join(dir, 'peer-disk.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', peerDisk, '8G']);
    const reg = new MachineRegistry(env.FERRY_HOME);
    try {
      reg.setBootTarget(id, 'agent');
      machine = await lab.start(spec(peerDisk));
      const ex = await requestExport(reg, id, '/dev/sda', true);
      const host = new URL(ex.url.replace(/^nbds:/, 'http:')).hostname;
      const pskDir = join(dir, 'psk');
      await mkdir(pskDir, { recursive: true, mode: 0o700 });
      await execa('cp', [ex.pskFile, join(pskDir, 'keys.psk')]);
      const target = `driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=${host},file.server.port=10809,file.export=sda,file.tls-creds=tls0`;
      t0 = performance.now();
      await execa('ip', lab.inNs('qemu-img', ['convert', '-n', '-f', 'raw', '--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${pskDir},username=ferry`,
        '--target-image-opts', image, target]), { stdin: 'ignore' });
      const qSeconds = (performance.now() - t0) / 1000;
      await stopExport(reg, id, ex);
      await machine.powerOff();
      const qBytes = await diskBytes(peerDisk);
      const copySeconds = steps.find(s => s.name === 'copy')?.seconds ?? NaN;
      const deploySeconds = steps.filter(s => ['copy', 'verify', 're-fit', 'customize'].includes(s.name)).reduce((n, s) => n + s.seconds, 0);
      return {
        imageUsedBytes: usedBytes, registeredSeconds,
        ferry: { seconds, copySeconds, steps, diskBytes: ferryBytes },
        qemuImg: { seconds: qSeconds, diskBytes: qBytes },
        copyVsQemuImg: copySeconds / qSeconds, deployVsQemuImg: deploySeconds / qSeconds, writtenVsUsed: ferryBytes / usedBytes,
      };
    } finally { reg.close(); }
  } finally {
    for (const d of daemons) { d.kill('SIGTERM'); await d; }
    await lab?.remove();
  }
}

export function reportDeploy(r: DeployBench): string {
  const MiB = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
  return [
    `\ndeploy onto a "physical machine" (TCG, e1000e, AHCI, agent over PXE; image used ${MiB(r.imageUsedBytes)})`,
    `  PXE boot to registered: ${r.registeredSeconds.toFixed(1)} s`,
    `  ferry deploy: ${r.ferry.seconds.toFixed(1)} s end to end (${r.ferry.steps.map(s => `${s.name} ${s.seconds.toFixed(1)} s`).join('; ')})`,
    `  qemu-img convert onto the same kind of export: ${r.qemuImg.seconds.toFixed(1)} s`,
    `  copy / qemu-img: ${r.copyVsQemuImg.toFixed(2)}  (copy+verify+re-fit+customize / qemu-img: ${r.deployVsQemuImg.toFixed(2)}; goal <= 1.0)`,
    `  machine disk written: ferry ${MiB(r.ferry.diskBytes)}, qemu-img ${MiB(r.qemuImg.diskBytes)}; ferry / used ${r.writtenVsUsed.toFixed(2)} (goal <= 1.05)`,
  ].join('\n');
}

