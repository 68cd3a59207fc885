// Which boot loader starts the guest, from which firmware, and which kernel
// it starts by default with which command line: GRUB's generated grub.cfg,
// Boot Loader Specification entries (RHEL/Fedora GRUB with blscfg, and
// systemd-boot), and GRUB's environment block for the saved default.
import { posix } from 'node:path';
import type { GuestFs } from '../guest-fs.js';
import type { LinuxOs } from '../report.js';

export interface BootEntry { title: string; id?: string; linux?: string; cmdline?: string; initrd?: string; version?: string }

export interface BootInfo {
  bootloader: LinuxOs['bootloader'];
  firmware: LinuxOs['firmware'];
  defaultEntry?: BootEntry;
  entries: BootEntry[];
}

const GRUB_DIRS = ['/boot/grub', '/boot/grub2'];

/** esps: guest-side views of EFI system partitions (mounted in the guest or found on the disk) */
export async function readBoot(fs: GuestFs, esps: GuestFs[], tableLabel?: string): Promise<BootInfo> {
  let biosGrub: string | undefined;
  for (const d of GRUB_DIRS) if (await fs.isDir(`${d}/i386-pc`)) biosGrub = d;
  const efi = await findEfiLoader(esps);
  const grubEnv = parseGrubEnv((await firstText(fs, GRUB_DIRS.map(d => `${d}/grubenv`))) ?? '');

  if (efi?.kind === 'systemd-boot') {
    const conf = parseBls((await efi.esp.readText('/loader/loader.conf')) ?? '');
    const entries = await readBlsEntries(efi.esp, '/loader/entries', grubEnv);
    const pattern = conf.default?.replace(/\.conf$/, '');
    const def = (pattern && entries.find(e => globMatch(pattern, e.id ?? ''))) || entries[0];
    return { bootloader: { kind: 'systemd-boot', config: '/loader/loader.conf (ESP)' }, firmware: 'uefi', defaultEntry: def, entries };
  }
  const useEfi = !!efi && !(biosGrub && tableLabel === 'dos');
  const kind = useEfi ? 'grub-efi' : biosGrub ? 'grub-bios' : 'unknown';
  const firmware = useEfi ? 'uefi' : biosGrub ? 'bios' : 'unknown';
  const cfgPath = await firstExisting(fs, GRUB_DIRS.map(d => `${d}/grub.cfg`));
  const cfg = cfgPath ? (await fs.readText(cfgPath)) ?? '' : '';
  let entries: (BootEntry & { path?: string })[] = parseGrubCfg(cfg).entries;
  if (/^\s*blscfg\b/m.test(cfg) || (!entries.length && await fs.isDir('/boot/loader/entries'))) {
    entries = await readBlsEntries(fs, '/boot/loader/entries', grubEnv);
  }
  const def = pickDefault(entries, parseGrubCfg(cfg).defaults, grubEnv);
  return { bootloader: { kind, config: cfgPath ?? (efi ? `${efi.dir} (ESP)` : undefined) }, firmware, defaultEntry: def, entries };
}

async function findEfiLoader(esps: GuestFs[]): Promise<{ kind: 'grub-efi' | 'systemd-boot'; esp: GuestFs; dir: string } | undefined> {
  for (const esp of esps) {
    const efiDir = (await esp.list('/')).find(n => n.toLowerCase() === 'efi');
    if (!efiDir) continue;
    if (await esp.exists('/loader/loader.conf')) return { kind: 'systemd-boot', esp, dir: '/loader' };
    for (const vendor of await esp.list(`/${efiDir}`)) {
      const files = (await esp.list(`/${efiDir}/${vendor}`)).map(f => f.toLowerCase());
      if (vendor.toLowerCase() === 'systemd' && files.some(f => f.startsWith('systemd-boot'))) return { kind: 'systemd-boot', esp, dir: `/${efiDir}/${vendor}` };
      if (files.some(f => /^(grub|shim)(x64|ia32|aa64)\.efi$/.test(f))) return { kind: 'grub-efi', esp, dir: `/${efiDir}/${vendor}` };
    }
  }
  return undefined;
}

/** menu entries of a grub.cfg, with their index path ("0", "1>2") and the `set default=` values */
export function parseGrubCfg(text: string): { entries: (BootEntry & { path: string })[]; defaults: string[] } {
  const entries: (BootEntry & { path: string })[] = [];
  const defaults: string[] = [];
  const stack: { kind: 'menu' | 'entry' | 'other'; counter: number; path: string; entry?: BootEntry & { path: string } }[] = [{ kind: 'menu', counter: 0, path: '' }];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const menu = stack.filter(s => s.kind === 'menu').at(-1)!;
    const d = /^set\s+default=["']?([^"'\s]*)["']?/.exec(line);
    if (d && stack.every(s => s.kind !== 'entry')) { defaults.push(d[1]); continue; }
    const m = /^(menuentry|submenu)\s+(?:'([^']*)'|"([^"]*)"|(\S+))(.*)\{\s*$/.exec(line);
    if (m) {
      const path = (menu.path ? menu.path + '>' : '') + menu.counter++;
      const title = m[2] ?? m[3] ?? m[4] ?? '';
      const id = /\$menuentry_id_option\s+['"]?([^'"\s]+)/.exec(m[5])?.[1];
      if (m[1] === 'submenu') stack.push({ kind: 'menu', counter: 0, path });
      else {
        const entry = { title, id, path };
        entries.push(entry);
        stack.push({ kind: 'entry', counter: 0, path, entry });
      }
      continue;
    }
    if (/\{\s*$/.test(line) && !line.startsWith('#')) { stack.push({ kind: 'other', counter: 0, path: '' }); continue; }
    if (/^\}/.test(line)) { if (stack.length > 1) stack.pop(); continue; }
    const entry = stack.filter(s => s.kind === 'entry').at(-1)?.entry;
    if (!entry) continue;
    const k = /^(linux|linuxefi|linux16)\s+(\S+)\s*(.*)$/.exec(line);
    if (k) { entry.linux = k[2]; entry.cmdline = k[3].trim(); }
    const i = /^(initrd|initrdefi|initrd16)\s+(.+)$/.exec(line);
    if (i) entry.initrd = i[2].trim().split(/\s+/).at(-1);
  }
  return { entries, defaults };
}

function pickDefault(entries: (BootEntry & { path?: string })[], defaults: string[], env: Record<string, string>): BootEntry | undefined {
  if (!entries.length) return undefined;
  // Debian writes `set default="${next_entry}"` inside an if, then the real one; saved_entry comes from grubenv
  let want = defaults.filter(d => !d.includes('next_entry')).at(-1) ?? '0';
  if (/saved_entry/.test(want) || want === 'saved') want = env.saved_entry ?? '0';
  return entries.find(e => e.path === want || e.id === want || e.title === want)
    ?? (/^\d+$/.test(want) ? entries.filter(e => !e.path?.includes('>'))[Number(want)] : undefined)
    ?? entries[0];
}

/** GRUB's environment block: KEY=value lines padded with '#' */
export function parseGrubEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z_][\w]*)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
  }
  return env;
}

/** one Boot Loader Specification entry (or loader.conf): "key value" lines */
function parseBls(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*(\w+)\s+(.*?)\s*$/.exec(line);
    if (m && !line.trim().startsWith('#')) out[m[1]] = out[m[1]] ? `${out[m[1]]} ${m[2]}` : m[2];
  }
  return out;
}

async function readBlsEntries(fs: GuestFs, dir: string, env: Record<string, string>): Promise<BootEntry[]> {
  const entries: BootEntry[] = [];
  for (const f of await fs.readAll(dir, /\.conf$/)) {
    const b = parseBls(f.text);
    const cmdline = b.options?.replace(/\$(\w+)/g, (_, k: string) => env[k] ?? '').trim();
    entries.push({ title: b.title ?? posix.basename(f.path), id: posix.basename(f.path, '.conf'), linux: b.linux, cmdline, initrd: b.initrd, version: b.version });
  }
  // BLS order: newest version first, as GRUB's blscfg and systemd-boot sort them
  const entryDefault = env.saved_entry;
  entries.sort((a, b) => (b.version ?? b.id ?? '').localeCompare(a.version ?? a.id ?? '', undefined, { numeric: true }));
  if (entryDefault) {
    const i = entries.findIndex(e => e.id === entryDefault || e.title === entryDefault);
    if (i > 0) entries.unshift(...entries.splice(i, 1));
  }
  return entries;
}

const globMatch = (pattern: string, s: string) =>
  new RegExp('^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$').test(s);

async function firstExisting(fs: GuestFs, paths: string[]): Promise<string | undefined> {
  for (const p of paths) if (await fs.exists(p)) return p;
  return undefined;
}

async function firstText(fs: GuestFs, paths: string[]): Promise<string | undefined> {
  for (const p of paths) { const t = await fs.readText(p); if (t !== undefined) return t; }
  return undefined;
}
