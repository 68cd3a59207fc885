// Add kernel modules to an initramfs without running anything of the guest's:
// unpack its main archive, drop the module files in beside the ones it has,
// let the host's depmod rebuild the archive's own module index, name the
// modules for loading at boot, and pack it again with the same compression,
// keeping the early (microcode) archives in front byte for byte. Everything
// else in it — the guest's hooks, scripts, configuration — is left as it was.
import { appendFile, chmod, copyFile, mkdir, readdir, readFile, realpath, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { execa } from 'execa';
import { run } from '../../src/util/exec.js';
import { decompressCommand, moduleName, readWhole, scanInitramfs } from '../../src/inspect/linux/initramfs.js';
import type { Change } from './change.js';
import { replaceMacs } from './net-bindings.js';

export interface ModuleFile { name: string; relPath: string; hostFile: string }

/** compress commands the kernel can unpack (xz must use crc32; lz4 the legacy frame) */
const COMPRESS: Record<string, [string, string[]]> = {
  gzip: ['gzip', ['-n', '-6', '-c']],
  xz: ['xz', ['--check=crc32', '-c']],
  zstd: ['zstd', ['-q', '-c', '-3']],
  lz4: ['lz4', ['-l', '-c']],
  bzip2: ['bzip2', ['-c']],
  lzma: ['xz', ['--format=lzma', '-c']],
};

/** rebind: MAC bindings to move inside the initramfs too (its udev copies name the NIC before the root is mounted) */
export interface InitramfsRefit { hostPath: string; guestPath: string; kver: string; modules: ModuleFile[]; load: string[]; work: string; rebind?: { from: string[]; to: string } }

export async function refitInitramfs(o: InitramfsRefit): Promise<Change | undefined> {
  const data = await readWhole(o.hostPath);
  const { layout, names } = await scanInitramfs(data);
  const present = new Set(names.map(moduleName).filter(Boolean));
  const toAdd = o.modules.filter(m => !present.has(m.name));
  if (!toAdd.length && !o.rebind?.from.length) return undefined;
  if (!COMPRESS[layout.compression] && layout.compression !== 'none') throw new Error(`cannot repack a ${layout.compression} initramfs`);

  const dir = join(o.work, `initramfs-${o.kver}`);
  await mkdir(dir, { recursive: true });
  const main = data.subarray(layout.mainStart);
  const unpack = ['-idm', '--quiet', '--no-absolute-filenames'];
  if (layout.compression === 'none') await run('cpio', unpack, { input: main, cwd: dir });
  else {
    const [cmd, args] = decompressCommand(layout.compression)!;
    const r = await execa(cmd, args, { input: main, reject: false }).pipe('cpio', unpack, { cwd: dir, reject: false });
    if (r.exitCode !== 0) throw new Error(`unpacking ${o.guestPath}: ${String(r.stderr)}`);
  }

  const modRoot = await moduleRoot(dir, o.kver);
  for (const m of toAdd) {
    const dst = join(modRoot, m.relPath);
    await mkdir(dirname(dst), { recursive: true });
    await copyFile(m.hostFile, dst);
    await chmod(dst, 0o644);
  }
  // depmod -b BASE reads BASE/lib/modules/KVER: BASE is whatever holds the lib/ above our module root
  if (toAdd.length) await run('depmod', ['-b', dirname(dirname(dirname(modRoot))), o.kver]);
  if (toAdd.length) await nameForLoading(dir, o.load);
  const rebound = o.rebind ? await rebindInTree(dir, o.rebind.from, o.rebind.to) : [];
  if (!toAdd.length && !rebound.length) return undefined;

  const list = await execa('find', ['.', '-print0'], { cwd: dir }).pipe('sort', ['-z']);
  const archive = await execa('cpio', ['--null', '-o', '-H', 'newc', '--quiet'], { cwd: dir, input: String(list.stdout), encoding: 'buffer' });
  const packed = layout.compression === 'none' ? Buffer.from(archive.stdout)
    : Buffer.from((await execa(COMPRESS[layout.compression][0], COMPRESS[layout.compression][1], { input: Buffer.from(archive.stdout), encoding: 'buffer' })).stdout);
  const mode = (await stat(o.hostPath)).mode & 0o7777;
  const tmp = `${o.hostPath}.ferry-new`;
  await writeFile(tmp, Buffer.concat([data.subarray(0, layout.mainStart), packed]), { mode });
  await rename(tmp, o.hostPath);
  return {
    file: o.guestPath,
    before: `${present.size} modules, ${layout.compression}${layout.earlyCount ? ` after ${layout.earlyCount} early cpio` : ''}`,
    after: [toAdd.length ? `+ ${toAdd.map(m => m.name).join(' ')}` : '', rebound.length ? `MAC bindings moved to ${o.rebind!.to} in ${rebound.join(' ')}` : '']
      .filter(Boolean).join('; ') + ` (${present.size + toAdd.length} modules, ${layout.compression})`,
    reason: 'the new hardware needs these drivers, and the NIC its old name, already at boot (before the root is mounted)',
  };
}

/** udev rules and .link files copied into the initramfs that bind names to the old MACs */
async function rebindInTree(dir: string, from: string[], to: string): Promise<string[]> {
  const changed: string[] = [];
  for (const sub of ['etc/udev/rules.d', 'lib/udev/rules.d', 'usr/lib/udev/rules.d', 'etc/systemd/network', 'usr/lib/systemd/network', 'lib/systemd/network']) {
    const d = join(dir, sub);
    const real = await realpath(d).catch(() => undefined);
    if (!real || relative(dir, real).startsWith('..')) continue;
    for (const name of await readdir(real).catch(() => [] as string[])) {
      const f = join(real, name);
      if (!(await stat(f)).isFile()) continue;
      const text = await readFile(f, 'utf8');
      const after = replaceMacs(text, from, to);
      if (after !== text) { await writeFile(f, after); changed.push(relative(dir, f)); }
    }
  }
  return [...new Set(changed)];
}

/** the initramfs's own /lib/modules/KVER (usr-merged or not), created if it has none */
async function moduleRoot(dir: string, kver: string): Promise<string> {
  for (const p of [`usr/lib/modules/${kver}`, `lib/modules/${kver}`]) {
    const real = await realpath(join(dir, p)).catch(() => undefined);
    // a symlink out of the unpacked tree would lead to the host's files
    if (real && !relative(dir, real).startsWith('..')) return real;
  }
  const fresh = join(dir, 'lib', 'modules', kver);
  await mkdir(fresh, { recursive: true });
  return fresh;
}

/** initramfs-tools loads conf/modules at boot; dracut's systemd reads modules-load.d */
async function nameForLoading(dir: string, names: string[]): Promise<void> {
  const conf = join(dir, 'conf', 'modules');
  const existing = await readFile(conf, 'utf8').catch(() => undefined);
  if (existing !== undefined) {
    const have = new Set(existing.split('\n').map(l => l.trim().split(/\s+/)[0]));
    const add = names.filter(n => !have.has(n));
    if (add.length) await appendFile(conf, (existing.endsWith('\n') || !existing ? '' : '\n') + add.join('\n') + '\n');
    return;
  }
  await mkdir(join(dir, 'etc', 'modules-load.d'), { recursive: true });
  await writeFile(join(dir, 'etc', 'modules-load.d', 'ferry-refit.conf'), names.join('\n') + '\n');
}
