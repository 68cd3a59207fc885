// A guest kernel's module index, read from its own modules.dep and
// modules.builtin (written by depmod when the kernel was installed):
// where each module lives and what it needs loaded first.
import type { GuestFs } from '../../src/inspect/guest-fs.js';
import { moduleName } from '../../src/inspect/linux/initramfs.js';

export interface ModuleIndex {
  kver: string;
  /** module name → path relative to /lib/modules/KVER, and the paths it depends on */
  modules: Map<string, { relPath: string; deps: string[] }>;
  builtin: Set<string>;
}

export interface ModuleRef { name: string; relPath: string }

export async function readModuleIndex(fs: GuestFs, kver: string): Promise<ModuleIndex> {
  const base = `/lib/modules/${kver}`;
  const modules = new Map<string, { relPath: string; deps: string[] }>();
  for (const line of ((await fs.readText(`${base}/modules.dep`)) ?? '').split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const relPath = line.slice(0, i).trim();
    const name = moduleName(relPath);
    if (name) modules.set(name, { relPath, deps: line.slice(i + 1).trim().split(/\s+/).filter(Boolean) });
  }
  const builtin = new Set(((await fs.readText(`${base}/modules.builtin`)) ?? '').split('\n').map(moduleName).filter((m): m is string => !!m));
  return { kver, modules, builtin };
}

/** the modules (with everything they depend on) that must be present to load `names`; built-ins need nothing */
export function closure(index: ModuleIndex, names: string[]): { needed: ModuleRef[]; unknown: string[] } {
  const byPath = new Map([...index.modules].map(([name, m]) => [m.relPath, name]));
  const needed = new Map<string, ModuleRef>();
  const unknown: string[] = [];
  const visit = (name: string) => {
    if (needed.has(name) || index.builtin.has(name)) return;
    const m = index.modules.get(name);
    if (!m) { if (!unknown.includes(name)) unknown.push(name); return; }
    needed.set(name, { name, relPath: m.relPath });
    for (const dep of m.deps) visit(byPath.get(dep) ?? moduleName(dep)!);
  };
  for (const n of names) visit(n.replace(/-/g, '_'));
  return { needed: [...needed.values()], unknown };
}

/** modules.alias patterns (shell globs) → the modules that claim a device's modalias, as udev would load them */
export async function modulesForModalias(fs: GuestFs, kver: string, modalias: string, builtIn = false): Promise<string[]> {
  const out: string[] = [];
  // built-in drivers' aliases: Debian ships modules.builtin.modinfo (NUL-separated NAME.alias=GLOB), not a text modules.builtin.alias
  const lines = builtIn
    ? ((await fs.readText(`/lib/modules/${kver}/modules.builtin.modinfo`)) ?? '').split('\0').map(l => /^([^.=]+)\.alias=(\S+)$/.exec(l)).filter(m => m).map(m => `alias ${m![2]} ${m![1]}`)
    : ((await fs.readText(`/lib/modules/${kver}/modules.alias`)) ?? '').split('\n');
  for (const line of lines) {
    const m = /^alias\s+(\S+)\s+(\S+)$/.exec(line);
    if (m && globToRegExp(m[1]).test(modalias) && !out.includes(m[2])) out.push(m[2].replace(/-/g, '_'));
  }
  return out;
}

const globToRegExp = (glob: string) =>
  new RegExp('^' + glob.replace(/[.+^${}()|\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$');
