// `ferry agent build`: the agent's kernel, initrd and ISO, made only from this
// host's Debian packages (linux-image-amd64, busybox-static, bash, nbdkit,
// grub, xorriso). The initrd holds busybox, bash, nbdkit with its file plugin
// and their shared libraries, the NIC and storage modules with their
// dependencies, the p2v agent (its `inventory` is the one inventory) and
// /init (init.sh). A build is skipped when manifest.builtFrom equals the hash
// of its inputs; it is made in a temp dir inside the output dir and renamed
// into place, manifest last, so a failed build never leaves a half-written set.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rename, rm, rmdir, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ferryHome } from '../catalog/db.js';
import { hashFile } from '../drivers/store.js';
import { agentInputMissing, FerryError, targetNotWritable, ToolError, usageError } from '../errors.js';
import { throwIfAborted } from '../util/abort.js';
import { run } from '../util/exec.js';
import { writeNewc } from './cpio.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..'); // dist/src/agent → repo
const SOURCES = {
  init: join(ROOT, 'src', 'agent', 'init.sh'),
  udhcpc: join(ROOT, 'src', 'agent', 'udhcpc.script'),
  inventory: join(ROOT, 'scripts', 'p2v-agent', 'ferry-p2v-agent'),
};

/** Bump when the build makes something different from the same inputs. */
const BUILD_FORMAT = 1;

/**
 * zstd -19: measured on this initrd (19.7 MiB of cpio): 6.1 MiB against 7.4 MiB
 * for gzip -9, and it unpacks about 100 times faster. The 6.1 kernel reads both.
 */
const COMPRESSION = 'zstd' as const;

/** Modules /init loads (modprobe, with their modules.dep closure in the initrd). */
export const AGENT_MODULES = [
  // NICs
  'e1000', 'e1000e', 'igb', 'ixgbe', 'r8169', 'tg3', 'bnx2', 'virtio_net',
  // storage
  'ahci', 'ata_piix', 'sd_mod', 'virtio_blk', 'virtio_scsi', 'nvme', 'virtio_pci',
] as const;

/** The host programs copied in, with the Debian package that has each. */
const PROGRAMS: { path: string; pkg: string }[] = [
  { path: '/bin/busybox', pkg: 'busybox-static' },
  { path: '/bin/bash', pkg: 'bash' },
  { path: '/usr/bin/nbdkit', pkg: 'nbdkit' },
  { path: '/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-file-plugin.so', pkg: 'nbdkit' },
];

export const AGENT_FILES = { vmlinuz: 'vmlinuz', initrd: 'initrd.img', iso: 'ferry-agent.iso', manifest: 'manifest.json' } as const;

export interface AgentManifest {
  kernel: string;
  initrdBytes: number;
  isoBytes: number;
  compression: typeof COMPRESSION;
  /** sha256 of every input (programs, libraries, modules, scripts, kernel, grub.cfg) */
  builtFrom: string;
}

export interface AgentBuildOptions {
  /** default: agentDir() */
  out?: string;
  /** baked into the ISO's grub.cfg (with enrolTokenFile); else /init falls back to DHCP */
  server?: string;
  enrolTokenFile?: string;
  /** progress lines */
  log?: (line: string) => void;
}

export interface AgentBuild {
  dir: string;
  kernel: string;
  vmlinuz: string;
  initrd: string;
  iso: string;
  manifest: AgentManifest;
  /** true when nothing was built: the files there were made from the same inputs */
  upToDate: boolean;
}

/** Where `ferry serve` finds the agent: $FERRY_HOME/agent. */
export const agentDir = (): string => join(ferryHome(), 'agent');

interface Plan {
  kernel: string;
  vmlinuz: string;
  /** initrd path → host file */
  copies: Map<string, string>;
  /** initrd path → link target */
  links: Map<string, string>;
  /** initrd path → contents and mode */
  texts: Map<string, { data: string; mode: number }>;
  grubCfg: string;
  /** the ISO holds the enrolment token: keep it private */
  secretIso: boolean;
}

/** The newest /boot/vmlinuz-*-amd64 that has its /lib/modules directory (not the host's running kernel). */
export async function findKernel(): Promise<{ version: string; vmlinuz: string }> {
  const names = await readdir('/boot').catch(() => [] as string[]);
  const versions = names.filter(n => /^vmlinuz-.+-amd64$/.test(n)).map(n => n.slice('vmlinuz-'.length))
    .filter(v => existsSync(`/lib/modules/${v}/modules.dep`))
    .sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
  if (!versions.length) throw agentInputMissing('a Debian kernel (/boot/vmlinuz-*-amd64 with its /lib/modules directory)', 'linux-image-amd64');
  return { version: versions[0], vmlinuz: `/boot/vmlinuz-${versions[0]}` };
}

/** Every shared library (and the loader) the programs need, from ldd. */
async function sharedLibraries(programs: string[]): Promise<string[]> {
  const libs = new Set<string>();
  for (const p of programs) {
    const r = await run('ldd', [p], { okCodes: [1] }); // 1: a static program
    const missing = /^\s*(\S+) => not found/m.exec(r.stdout);
    if (missing) throw agentInputMissing(`${missing[1]} (for ${p})`, `the package holding ${missing[1]}`);
    for (const m of r.stdout.matchAll(/(?:=>\s*|^\s*)(\/\S+)\s+\(0x/gm)) libs.add(m[1]);
  }
  return [...libs].sort();
}

/** The module files of AGENT_MODULES and everything they depend on (softdeps included), for kernel kver. */
async function moduleFiles(kver: string): Promise<string[]> {
  const files = new Set<string>();
  for (const m of AGENT_MODULES) {
    const r = await run('modprobe', ['-S', kver, '--show-depends', m]).catch((e: unknown) => {
      if (e instanceof ToolError) throw agentInputMissing(`the kernel module ${m} for ${kver}`, 'linux-image-amd64');
      throw e;
    });
    for (const line of r.stdout.split('\n')) {
      const f = /^insmod (\S+)/.exec(line);
      if (f) files.add(f[1]);
    }
  }
  return [...files].sort();
}

async function plan(opts: AgentBuildOptions): Promise<Plan> {
  const { version: kernel, vmlinuz } = await findKernel();
  for (const p of PROGRAMS) if (!existsSync(p.path)) throw agentInputMissing(p.path, p.pkg);
  for (const f of Object.values(SOURCES)) if (!existsSync(f)) throw new FerryError('AGENT_SOURCE_MISSING', 3, `${f} is missing from this Ferry tree; restore it (git checkout) and build again`, { file: f });
  const copies = new Map<string, string>();
  for (const p of PROGRAMS) copies.set(p.path, p.path);
  for (const l of await sharedLibraries(PROGRAMS.map(p => p.path))) copies.set(l, l);
  for (const m of await moduleFiles(kernel)) copies.set(m, m);
  // what modprobe needs besides modules.dep (which depmod writes for the staged tree)
  for (const f of ['modules.order', 'modules.builtin', 'modules.builtin.modinfo']) {
    const p = `/lib/modules/${kernel}/${f}`;
    if (existsSync(p)) copies.set(p, p);
  }
  const links = new Map<string, string>([['/sbin', 'bin'], ['/usr/sbin', 'bin']]);
  const applets = (await run('/bin/busybox', ['--list'])).stdout.split('\n').filter(a => /^[\w.[-]+$/.test(a));
  for (const a of applets) if (!copies.has(`/bin/${a}`)) links.set(`/bin/${a}`, 'busybox');
  const texts = new Map<string, { data: string; mode: number }>([
    ['/init', { data: await readFile(SOURCES.init, 'utf8'), mode: 0o755 }],
    ['/usr/share/udhcpc/default.script', { data: await readFile(SOURCES.udhcpc, 'utf8'), mode: 0o755 }],
    ['/usr/lib/ferry/ferry-p2v-agent', { data: await readFile(SOURCES.inventory, 'utf8'), mode: 0o755 }],
    ['/etc/ferry-agent/modules', { data: AGENT_MODULES.join('\n') + '\n', mode: 0o644 }],
    ['/etc/passwd', { data: 'root:x:0:0:root:/run/ferry:/bin/sh\n', mode: 0o644 }],
    ['/etc/group', { data: 'root:x:0:\n', mode: 0o644 }],
  ]);
  const { cfg, secret } = await grubConfig(opts);
  return { kernel, vmlinuz, copies, links, texts, grubCfg: cfg, secretIso: secret };
}

/** The ISO's grub.cfg: the agent on the serial and the screen console; server and enrolment token only when asked. */
async function grubConfig(opts: AgentBuildOptions): Promise<{ cfg: string; secret: boolean }> {
  if ((opts.server === undefined) !== (opts.enrolTokenFile === undefined)) {
    throw usageError('--server and --enrol-token-file go together: the agent needs both to register');
  }
  let extra = '';
  if (opts.server !== undefined && opts.enrolTokenFile !== undefined) {
    if (!/^https?:\/\/[\w.[\]:-]+\/?$/.test(opts.server)) throw usageError(`--server ${opts.server}: give the ferry serve base URL, e.g. http://192.0.2.1:8470`);
    const token = (await readFile(opts.enrolTokenFile, 'utf8').catch(e => {
      throw usageError(`--enrol-token-file ${opts.enrolTokenFile}: ${(e as Error).message}`);
    })).trim();
    if (!/^[0-9a-f]{64}$/.test(token)) throw usageError(`--enrol-token-file ${opts.enrolTokenFile} does not hold an enrolment token (64 hex digits)`);
    extra = ` ferry.server=${opts.server.replace(/\/$/, '')} ferry.enrol=${token}`;
  }
  const cfg = [
    'serial --unit=0 --speed=115200',
    'terminal_input console serial',
    'terminal_output console serial',
    'set timeout=3',
    'set default=0',
    "menuentry 'Ferry agent' {",
    `  linux /boot/vmlinuz console=tty0 console=ttyS0,115200${extra}`,
    '  initrd /boot/initrd.img',
    '}',
    '',
  ].join('\n');
  return { cfg, secret: extra !== '' };
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

async function inputsHash(p: Plan): Promise<string> {
  const h = createHash('sha256');
  h.update(`ferry-agent ${BUILD_FORMAT} ${COMPRESSION} ${p.kernel} ${AGENT_MODULES.join(',')}\n`);
  h.update(`vmlinuz ${hashFile(p.vmlinuz).sha256}\n`);
  for (const [dest, src] of [...p.copies].sort()) h.update(`file ${dest} ${hashFile(src).sha256}\n`);
  for (const [dest, target] of [...p.links].sort()) h.update(`link ${dest} ${target}\n`);
  for (const [dest, t] of [...p.texts].sort()) h.update(`text ${dest} ${t.mode.toString(8)} ${sha256(t.data)}\n`);
  h.update(`grub ${sha256(p.grubCfg)}\n`);
  return h.digest('hex');
}

async function readManifest(dir: string): Promise<AgentManifest | undefined> {
  try {
    return JSON.parse(await readFile(join(dir, AGENT_FILES.manifest), 'utf8')) as AgentManifest;
  } catch {
    return undefined;
  }
}

/** The files of a finished build are there with the sizes its manifest says. */
async function intact(dir: string, m: AgentManifest): Promise<boolean> {
  const size = (f: string) => stat(join(dir, f)).then(s => s.size, () => -1);
  return await size(AGENT_FILES.vmlinuz) > 0 && await size(AGENT_FILES.initrd) === m.initrdBytes && await size(AGENT_FILES.iso) === m.isoBytes;
}

/** out, or its nearest existing ancestor, must be a directory. */
async function checkOut(out: string): Promise<void> {
  for (let d = out; ; d = dirname(d)) {
    const st = await stat(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
      throw targetNotWritable(out, e.message);
    });
    if (st && !st.isDirectory()) throw targetNotWritable(out, `${d} exists and is not a directory; give --out a directory`);
    if (st || d === dirname(d)) return;
  }
}

/** Make out (checked to be a directory or absent); returns the first directory made for it (removed again on failure). */
async function prepareOut(out: string): Promise<string | undefined> {
  try {
    return await mkdir(out, { recursive: true });
  } catch (e) {
    throw targetNotWritable(out, (e as Error).message);
  }
}

async function stage(p: Plan, root: string): Promise<void> {
  for (const d of ['proc', 'sys', 'dev', 'run', 'tmp', 'etc', 'root', 'bin', 'usr/bin']) await mkdir(join(root, d), { recursive: true });
  for (const [dest, src] of p.copies) {
    await mkdir(dirname(join(root, dest)), { recursive: true });
    await copyFile(src, join(root, dest));
  }
  for (const [dest, target] of p.links) {
    await mkdir(dirname(join(root, dest)), { recursive: true });
    await symlink(target, join(root, dest));
  }
  for (const [dest, t] of p.texts) {
    await mkdir(dirname(join(root, dest)), { recursive: true });
    await writeFile(join(root, dest), t.data, { mode: t.mode });
    await chmod(join(root, dest), t.mode);
  }
  // modules.dep & co. for exactly the staged modules, read by busybox modprobe
  await run('depmod', ['-b', root, p.kernel]);
}

async function compress(cpio: string, out: string): Promise<void> {
  // -T2: this build shares small machines; the level decides the size, threads only the time
  await run('zstd', ['-q', '-19', '-T2', '--check', '-o', out, cpio]);
}

async function makeIso(p: Plan, vmlinuz: string, initrd: string, work: string, iso: string): Promise<void> {
  const tree = join(work, 'iso');
  await mkdir(join(tree, 'boot', 'grub'), { recursive: true });
  await copyFile(vmlinuz, join(tree, 'boot', 'vmlinuz'));
  await copyFile(initrd, join(tree, 'boot', 'initrd.img'));
  await writeFile(join(tree, 'boot', 'grub', 'grub.cfg'), p.grubCfg, { mode: 0o600 });
  // grub-mkrescue makes the hybrid image: El Torito BIOS (i386-pc) + an EFI System image (x86_64-efi)
  await run('grub-mkrescue', ['-o', iso, tree, '--', '-volid', 'FERRY_AGENT']);
}

/** Build the agent into opts.out (default $FERRY_HOME/agent), or find it up to date there. */
export async function buildAgent(opts: AgentBuildOptions = {}): Promise<AgentBuild> {
  const dir = resolve(opts.out ?? agentDir());
  const log = opts.log ?? (() => {});
  const paths = {
    vmlinuz: join(dir, AGENT_FILES.vmlinuz), initrd: join(dir, AGENT_FILES.initrd),
    iso: join(dir, AGENT_FILES.iso), manifest: join(dir, AGENT_FILES.manifest),
  };
  await checkOut(dir);
  const p = await plan(opts);
  log(`agent: kernel ${p.kernel} (${p.vmlinuz}), ${p.copies.size} files from the host`);
  const builtFrom = await inputsHash(p);
  const old = await readManifest(dir);
  if (old?.builtFrom === builtFrom && await intact(dir, old)) {
    log(`agent: ${dir} is up to date (built from ${builtFrom.slice(0, 12)})`);
    return { dir, kernel: old.kernel, ...paths, manifest: old, upToDate: true };
  }

  const made = await prepareOut(dir);
  await removeStaleWork(dir);
  let work: string | undefined;
  let done = false;
  try {
    work = await mkdtemp(join(dir, '.build-')).catch(e => { throw targetNotWritable(dir, (e as Error).message); });
    const root = join(work, 'root');
    log(`agent: staging the initrd tree (${AGENT_MODULES.length} modules and their dependencies)`);
    await stage(p, root);
    throwIfAborted();
    const cpio = join(work, 'initrd.cpio');
    const raw = await writeNewc(root, [{ path: 'dev/console', mode: 0o600, major: 5, minor: 1 }], cpio);
    const initrd = join(work, AGENT_FILES.initrd);
    await compress(cpio, initrd);
    await rm(cpio);
    throwIfAborted();
    const initrdBytes = (await stat(initrd)).size;
    log(`agent: initrd.img ${mib(initrdBytes)} (${COMPRESSION}; ${mib(raw)} unpacked)`);
    const vmlinuz = join(work, AGENT_FILES.vmlinuz);
    await copyFile(p.vmlinuz, vmlinuz);
    const iso = join(work, AGENT_FILES.iso);
    log('agent: making the hybrid BIOS/UEFI ISO (grub-mkrescue)');
    await makeIso(p, vmlinuz, initrd, work, iso);
    if (p.secretIso) await chmod(iso, 0o600);
    throwIfAborted();
    const isoBytes = (await stat(iso)).size;
    log(`agent: ferry-agent.iso ${mib(isoBytes)}`);
    const manifest: AgentManifest = { kernel: p.kernel, initrdBytes, isoBytes, compression: COMPRESSION, builtFrom };
    await writeFile(join(work, AGENT_FILES.manifest), JSON.stringify(manifest, null, 2) + '\n');
    // no manifest while the set is mixed: an interrupted swap is rebuilt next time
    await unlink(paths.manifest).catch(() => {});
    for (const f of [AGENT_FILES.vmlinuz, AGENT_FILES.initrd, AGENT_FILES.iso, AGENT_FILES.manifest]) {
      await rename(join(work, f), join(dir, f));
    }
    done = true;
    log(`agent: built ${dir}`);
    return { dir, kernel: p.kernel, ...paths, manifest, upToDate: false };
  } finally {
    if (work) await rm(work, { recursive: true, force: true });
    if (!done && made) await removeMade(dir, made);
  }
}

/** Temp dirs of builds killed outright (kill -9) more than an hour ago; a build running now is younger. */
async function removeStaleWork(dir: string): Promise<void> {
  for (const n of await readdir(dir)) {
    if (!n.startsWith('.build-')) continue;
    const st = await stat(join(dir, n)).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > 3600_000) await rm(join(dir, n), { recursive: true, force: true });
  }
}

/** Remove the directories prepareOut made (dir up to made), if they are empty. */
async function removeMade(dir: string, made: string): Promise<void> {
  for (let d = dir; d.startsWith(made); d = dirname(d)) {
    if (!await rmdir(d).then(() => true, () => false)) return;
    if (d === made) return;
  }
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
