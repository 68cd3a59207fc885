// Reading registry hives with hivex's own tools: `hivexregedit --export`
// writes a subtree as .reg text, which is parsed here into keys and values.
// Without --unsafe-printable-strings every value comes out as `dword:` or
// `hex(T):` bytes, so no string quoting or character set can garble it.
//
// A hive that cannot be read becomes a HiveError (HIVE_MISSING, HIVE_CORRUPT);
// callers turn it into an entry of the report's errors and go on.
import { open, stat } from 'node:fs/promises';
import { ToolError } from '../../errors.js';
import { run } from '../../util/exec.js';
import type { ItemError } from '../report.js';
import { findCi } from './paths.js';

export class HiveError extends Error implements ItemError {
  constructor(readonly code: 'HIVE_MISSING' | 'HIVE_CORRUPT', message: string) {
    super(message);
    this.name = 'HiveError';
  }
  toItem(): ItemError { return { code: this.code, message: this.message }; }
}

export const REG_SZ = 1, REG_EXPAND_SZ = 2, REG_BINARY = 3, REG_DWORD = 4, REG_DWORD_BE = 5, REG_MULTI_SZ = 7, REG_QWORD = 11;

export interface RegValue { name: string; type: number; data: Buffer }

/** One key of an exported subtree; names are looked up case-insensitively, as Windows does. */
export class RegKey {
  readonly values = new Map<string, RegValue>();
  readonly subkeys = new Map<string, RegKey>();
  constructor(readonly name: string) {}

  /** a descendant, e.g. key.sub('Parameters\\Interfaces') */
  sub(path: string): RegKey | undefined {
    let k: RegKey | undefined = this;
    for (const part of path.split('\\').filter(Boolean)) k = k?.subkeys.get(part.toLowerCase());
    return k;
  }

  children(): RegKey[] { return [...this.subkeys.values()]; }

  value(name: string): RegValue | undefined { return this.values.get(name.toLowerCase()); }

  /** a REG_SZ / REG_EXPAND_SZ (or the first string of a REG_MULTI_SZ) */
  str(name: string): string | undefined {
    const v = this.value(name);
    if (!v) return undefined;
    if (v.type === REG_SZ || v.type === REG_EXPAND_SZ) return utf16z(v.data);
    if (v.type === REG_MULTI_SZ) return multiSz(v.data)[0];
    return undefined;
  }

  /** a REG_DWORD / REG_QWORD, or a decimal number written as a string */
  num(name: string): number | undefined {
    const v = this.value(name);
    if (!v) return undefined;
    if (v.type === REG_DWORD && v.data.length >= 4) return v.data.readUInt32LE(0);
    if (v.type === REG_DWORD_BE && v.data.length >= 4) return v.data.readUInt32BE(0);
    if (v.type === REG_QWORD && v.data.length >= 8) return Number(v.data.readBigUInt64LE(0));
    const s = this.str(name)?.trim();
    return s && /^\d+$/.test(s) ? Number(s) : undefined;
  }

  /** a REG_MULTI_SZ as a list (a plain string gives a list of one) */
  strings(name: string): string[] {
    const v = this.value(name);
    if (!v) return [];
    if (v.type === REG_MULTI_SZ) return multiSz(v.data);
    const s = this.str(name);
    return s ? [s] : [];
  }
}

function utf16z(data: Buffer): string {
  const s = data.subarray(0, data.length & ~1).toString('utf16le');
  const nul = s.indexOf('\0');
  return nul < 0 ? s : s.slice(0, nul);
}

function multiSz(data: Buffer): string[] {
  return data.subarray(0, data.length & ~1).toString('utf16le').split('\0').filter(s => s !== '');
}

/** A hive file in the guest, checked to be whole before any tool reads it. */
export class Hive {
  private constructor(readonly path: string, readonly guestPath: string) {}

  /**
   * Find the hive (guestPath case-insensitively below dir) and check its base
   * block. hivex opens a truncated hive without complaint and fails only on
   * the keys that lay in the lost part, so a short file is caught here, by
   * comparing the size the header gives its hive bins with the file's size.
   */
  static async open(dir: string, guestPath: string): Promise<Hive> {
    const found = await findCi(dir, guestPath);
    if (!found) throw new HiveError('HIVE_MISSING', `registry hive ${guestPath} does not exist`);
    const size = (await stat(found.host)).size;
    const head = Buffer.alloc(4096);
    const fh = await open(found.host, 'r');
    let got: number;
    try { got = (await fh.read(head, 0, head.length, 0)).bytesRead; } finally { await fh.close(); }
    if (got < 4096 || head.toString('latin1', 0, 4) !== 'regf')
      throw new HiveError('HIVE_CORRUPT', `${found.guest} is not a registry hive (no regf header)`);
    const bins = head.readUInt32LE(0x28);
    if (4096 + bins > size)
      throw new HiveError('HIVE_CORRUPT', `${found.guest} is truncated: its header gives ${4096 + bins} bytes, the file has ${size}`);
    return new Hive(found.host, found.guest);
  }

  /**
   * The subtree at keyPath ('\\ControlSet001\\Services'), or undefined when the
   * key does not exist. Any other failure of hivex means a damaged hive.
   */
  async tree(keyPath: string): Promise<RegKey | undefined> {
    let text: string;
    try {
      text = (await run('hivexregedit', ['--export', this.path, keyPath])).stdout;
    } catch (e) {
      if (e instanceof ToolError && /path not found in this hive/.test(e.stderr)) return undefined;
      const why = e instanceof ToolError ? e.stderr.trim().split('\n')[0] : String(e);
      throw new HiveError('HIVE_CORRUPT', `${this.guestPath}: cannot read ${keyPath}: ${why}`);
    }
    return parseReg(text, keyPath);
  }

  /**
   * Only the values of one key (no subkeys), for keys whose subtrees are large
   * (Windows NT\CurrentVersion holds Perflib, AppCompatFlags, …): hivexsh's
   * `lsval`. It prints REG_SZ as quoted text and numbers types in decimal.
   */
  async values(keyPath: string): Promise<RegKey | undefined> {
    let text: string;
    try {
      text = (await run('hivexsh', [], { input: `load ${this.path}\ncd ${keyPath}\nlsval\nexit\n` })).stdout;
    } catch (e) {
      if (e instanceof ToolError && /cd: subkey .* not found/.test(e.stderr)) return undefined;
      const why = e instanceof ToolError ? e.stderr.trim().split('\n')[0] : String(e);
      throw new HiveError('HIVE_CORRUPT', `${this.guestPath}: cannot read ${keyPath}: ${why}`);
    }
    const key = new RegKey(keyPath.split('\\').filter(Boolean).at(-1) ?? '');
    for (const line of text.split(/\r?\n/)) {
      const v = parseValueLine(line, 10);
      if (v) key.values.set(v.name.toLowerCase(), v);
    }
    return key;
  }
}

/** parse hivexregedit's export of the subtree at keyPath into its top key */
export function parseReg(text: string, keyPath: string): RegKey | undefined {
  const norm = (p: string) => p.split('\\').filter(Boolean).join('\\').toLowerCase();
  const base = norm(keyPath);
  const keys = new Map<string, RegKey>();
  let cur: RegKey | undefined;
  // continuation lines end in a backslash
  const lines = text.replace(/\\\r?\n[ \t]*/g, '').split(/\r?\n/);
  for (const line of lines) {
    if (line.startsWith('[') && line.endsWith(']')) {
      const path = norm(line.slice(1, -1));
      const parts = line.slice(1, -1).split('\\').filter(Boolean);
      cur = new RegKey(parts.at(-1) ?? '');
      keys.set(path, cur);
      const parent = keys.get(path.split('\\').slice(0, -1).join('\\'));
      if (path !== base) parent?.subkeys.set(cur.name.toLowerCase(), cur);
      continue;
    }
    if (!cur || !(line.startsWith('"') || line.startsWith('@='))) continue;
    const v = parseValueLine(line, 16);
    if (v) cur.values.set(v.name.toLowerCase(), v);
  }
  return keys.get(base);
}

/** a quoted .reg string starting at line[start] (a quote): its text and the index after it */
function quoted(line: string, start: number): { text: string; end: number } | undefined {
  let text = '';
  let i: number;
  for (i = start + 1; i < line.length && line[i] !== '"'; i++) {
    if (line[i] === '\\' && i + 1 < line.length) i++;
    text += line[i];
  }
  return i < line.length ? { text, end: i + 1 } : undefined;
}

/** one `"name"=value` line; typeRadix: how the tool writes T in hex(T) (hivexregedit 16, hivexsh 10) */
function parseValueLine(line: string, typeRadix: number): RegValue | undefined {
  let name = '';
  let i: number;
  if (line.startsWith('@=')) {
    i = 2;
  } else if (line.startsWith('"')) {
    const q = quoted(line, 0);
    if (!q || line[q.end] !== '=') return undefined;
    name = q.text;
    i = q.end + 1;
  } else {
    return undefined;
  }
  const rest = line.slice(i);
  let m: RegExpMatchArray | null;
  // hivexsh only: "text" (REG_SZ) and str(T):"text"
  if ((m = rest.match(/^(?:str\((\d+)\):)?"/))) {
    const q = quoted(rest, m[0].length - 1);
    if (!q) return undefined;
    return { name, type: m[1] === undefined ? REG_SZ : Number(m[1]), data: Buffer.from(q.text + '\0', 'utf16le') };
  }
  if ((m = rest.match(/^dword:([0-9a-fA-F]{1,8})$/))) {
    const data = Buffer.alloc(4);
    data.writeUInt32LE(parseInt(m[1], 16));
    return { name, type: REG_DWORD, data };
  }
  if ((m = rest.match(/^hex(?:\(([0-9a-fA-F]+)\))?:([0-9a-fA-F,\s]*)$/))) {
    const type = m[1] === undefined ? REG_BINARY : parseInt(m[1], typeRadix);
    return { name, type, data: Buffer.from(m[2].replace(/[,\s]/g, ''), 'hex') };
  }
  return undefined;
}
