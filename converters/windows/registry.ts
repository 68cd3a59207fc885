// Writing registry hives offline: the edits become a .reg file merged with
// hivex's own `hivexregedit --merge`. Every value is written as hex(T) bytes
// (strings as UTF-16LE with their terminating NUL), so no quoting or character
// set can change what lands in the hive. Keys are listed parents first, as
// hivexregedit creates a key only below one that exists.
import { writeFile } from 'node:fs/promises';
import { run } from '../../src/util/exec.js';

export type RegData =
  | { dword: number }
  | { sz: string }
  | { expand: string }
  | { multi: string[] };

export interface RegEdit {
  /** key below the hive's root, e.g. 'ControlSet001\\Services\\viostor' */
  key: string;
  values: Record<string, RegData>;
}

const hex = (type: number, data: Buffer) => `hex(${type.toString(16)}):` + [...data].map(b => b.toString(16).padStart(2, '0')).join(',');

export function regValue(v: RegData): string {
  if ('dword' in v) return `dword:${(v.dword >>> 0).toString(16).padStart(8, '0')}`;
  if ('sz' in v) return hex(1, Buffer.from(v.sz + '\0', 'utf16le'));
  if ('expand' in v) return hex(2, Buffer.from(v.expand + '\0', 'utf16le'));
  return hex(7, Buffer.from(v.multi.map(s => s + '\0').join('') + '\0', 'utf16le'));
}

/** a value as a person reads it in a change record */
export function showValue(v: RegData): string {
  if ('dword' in v) return String(v.dword);
  if ('multi' in v) return `[${v.multi.join(', ')}]`;
  return 'sz' in v ? v.sz : v.expand;
}

const quote = (s: string) => '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';

/** the .reg text of edits for a hive mounted at `prefix` (e.g. 'HKEY_LOCAL_MACHINE\\SYSTEM') */
export function regText(prefix: string, edits: RegEdit[]): string {
  const keys = new Map<string, { path: string; values: Map<string, RegData> }>();
  const ensure = (path: string) => {
    const id = path.toLowerCase();
    let k = keys.get(id);
    if (!k) { k = { path, values: new Map() }; keys.set(id, k); }
    return k;
  };
  for (const e of edits) {
    const parts = e.key.split('\\').filter(Boolean);
    if (!parts.length) throw new Error('a registry edit needs a key below the hive root');
    if (parts.some(p => /[\]\r\n]/.test(p))) throw new Error(`registry key name not writable as .reg: ${e.key}`);
    for (let i = 1; i < parts.length; i++) ensure(parts.slice(0, i).join('\\'));
    const k = ensure(parts.join('\\'));
    for (const [name, v] of Object.entries(e.values)) k.values.set(name, v);
  }
  const out = ['Windows Registry Editor Version 5.00', ''];
  for (const k of keys.values()) {
    out.push(`[${prefix}\\${k.path}]`);
    for (const [name, v] of k.values) out.push(`${name === '' ? '@' : quote(name)}=${regValue(v)}`);
    out.push('');
  }
  return out.join('\r\n') + '\r\n';
}

/** merge edits into the hive file at hostPath (written in place by hivex) */
export async function mergeIntoHive(hostPath: string, prefix: string, edits: RegEdit[], regFile: string): Promise<void> {
  if (!edits.length) return;
  await writeFile(regFile, regText(prefix, edits));
  await run('hivexregedit', ['--merge', '--prefix', prefix, hostPath, regFile]);
}
