// `npm run demo`: build the small real Debian guest (cached), convert it with
// `ferry convert`, check it with `ferry verify`, and boot the result in qemu.
// Exits non-zero if any step fails.
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bootImage } from '../src/verify/boot.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ferry = join(root, 'dist', 'src', 'cli', 'main.js');
const say = (s: string) => process.stdout.write(`\n== ${s}\n`);

async function main(): Promise<void> {
  say('building the Debian 12 test guest (cached after the first run)');
  const built = await execa('bash', [join(root, 'test', 'fixtures', 'build-debian-guest.sh')], { stdin: 'ignore', stderr: 'inherit' });
  const guest = String(built.stdout).trim().split('\n').pop()!;
  await execa('node', [ferry, 'info', guest], { stdio: 'inherit' });

  const work = await mkdtemp('/var/tmp/ferry-demo-');
  try {
    const target = join(work, 'debian12.qcow2');
    say(`ferry convert ${guest} ${target} --size 3G`);
    await execa('node', [ferry, 'convert', guest, target, '--size', '3G'], { stdio: 'inherit' });

    say(`ferry verify ${guest} ${target}`);
    await execa('node', [ferry, 'verify', guest, target], { stdio: 'inherit' });

    say('booting the converted disk in qemu (TCG, about a minute)');
    const boot = await bootImage({ image: target, format: 'qcow2', timeoutMs: 300_000 });
    if (!boot.sawMarker) {
      process.stdout.write(boot.serialLog.slice(-2000) + '\n');
      throw new Error(`the converted guest did not boot (${boot.endedBy})`);
    }
    process.stdout.write(`booted in ${boot.seconds.toFixed(0)} s: root=${boot.rootUuid} host=${boot.hostname}\n`);
    say('demo passed');
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

main().catch(e => {
  process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
