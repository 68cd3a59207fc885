// Configuration files compared by their parts: text files under /etc by
// lines, the package database by package, Windows registry hives by keys and
// values (read with hivex's own hivexregedit, written back with --merge).
import { readFile, writeFile } from 'node:fs/promises';
import { run } from '../util/exec.js';
import { parseReg, type RegKey } from '../inspect/windows/hive.js';
import type { Package } from '../inspect/report.js';

// ——— lines ———

/** one edit of a text file: `-` a line of the base at index `at`, `+` a line inserted before base line `at` */
export interface LineEdit { op: '-' | '+'; at: number; line: string }

export const TEXT_LIMIT = 1 << 20;
const LCS_LIMIT = 4000;

export function isText(data: Buffer): boolean {
  return data.length <= TEXT_LIMIT && !data.subarray(0, 8192).includes(0) && Buffer.from(data.toString('utf8'), 'utf8').equals(data);
}

const splitLines = (s: string) => s === '' ? [] : s.replace(/\n$/, '').split('\n');

/** The line edits turning a into b (longest common subsequence); undefined when the files are too large to compare so. */
export function lineEdits(a: string, b: string): LineEdit[] | undefined {
  const x = splitLines(a), y = splitLines(b);
  // common head and tail first: most edits touch a few lines of a long file
  let head = 0;
  while (head < x.length && head < y.length && x[head] === y[head]) head++;
  let tail = 0;
  while (tail < x.length - head && tail < y.length - head && x[x.length - 1 - tail] === y[y.length - 1 - tail]) tail++;
  const xs = x.slice(head, x.length - tail), ys = y.slice(head, y.length - tail);
  if (xs.length * ys.length > LCS_LIMIT * LCS_LIMIT / 4) return undefined;
  const n = xs.length, m = ys.length;
  const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) dp[i][j] = xs[i] === ys[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out: LineEdit[] = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && xs[i] === ys[j]) { i++; j++; }
    else if (j < m && (i === n || dp[i][j + 1] >= dp[i + 1][j])) out.push({ op: '+', at: head + i, line: ys[j++] });
    else out.push({ op: '-', at: head + i, line: xs[i++] });
  }
  return out;
}

/**
 * Apply line edits to a text that is not the base they were made from (--force):
 * a removed line goes where it is found, an added line goes after the base line
 * that preceded it (found by its text), else at the end.
 */
export function applyLineEdits(text: string, base: string, edits: LineEdit[]): string {
  const lines = splitLines(text);
  const baseLines = splitLines(base);
  for (const e of edits.filter(e => e.op === '-')) {
    const k = lines.indexOf(e.line);
    if (k >= 0) lines.splice(k, 1);
  }
  const adds = edits.filter(e => e.op === '+');
  let lastAt = -1, offset = 0;
  for (const e of adds) {
    if (e.at !== lastAt) { lastAt = e.at; offset = 0; }
    const before = e.at > 0 ? baseLines[e.at - 1] : undefined;
    const k = before === undefined ? -1 : lines.lastIndexOf(before);
    const pos = e.at === 0 ? offset : k >= 0 ? k + 1 + offset : lines.length;
    lines.splice(pos, 0, e.line);
    offset++;
  }
  return lines.length ? lines.join('\n') + (text.endsWith('\n') || !text ? '\n' : '') : '';
}

// ——— packages ———

export interface PackageChange { name: string; change: 'added' | 'removed' | 'version'; from?: string; to?: string }

export function packageChanges(a: Package[], b: Package[]): PackageChange[] {
  const key = (p: Package) => p.arch ? `${p.name}:${p.arch}` : p.name;
  const ma = new Map(a.map(p => [key(p), p])), mb = new Map(b.map(p => [key(p), p]));
  const out: PackageChange[] = [];
  for (const [k, p] of ma) {
    const q = mb.get(k);
    if (!q) out.push({ name: k, change: 'removed', from: p.version });
    else if (q.version !== p.version) out.push({ name: k, change: 'version', from: p.version, to: q.version });
  }
  for (const [k, q] of mb) if (!ma.has(k)) out.push({ name: k, change: 'added', to: q.version });
  return out.sort((x, y) => x.name.localeCompare(y.name));
}

// ——— registry ———

/** a value as the delta carries it: type and bytes, exactly */
export interface RegData { type: number; hex: string }

export type RegChange =
  | { op: 'add-key'; key: string }
  | { op: 'remove-key'; key: string }
  | { op: 'set'; key: string; name: string; value: RegData; base?: RegData }
  | { op: 'remove'; key: string; name: string; base: RegData };

/** the whole hive as one key tree */
export async function readHive(file: string): Promise<RegKey> {
  const text = (await run('hivexregedit', ['--export', file, '\\'])).stdout;
  const root = parseReg(text, '\\');
  if (!root) throw new Error(`${file}: hivexregedit gave no root key`);
  return root;
}

const data = (v: { type: number; data: Buffer }): RegData => ({ type: v.type, hex: v.data.toString('hex') });
const sameData = (x?: RegData, y?: RegData) => !!x && !!y && x.type === y.type && x.hex === y.hex;

/** Keys and values added, removed and changed from hive a to hive b (key paths below the root, '\\'-joined, b's spelling). */
export function registryChanges(a: RegKey, b: RegKey, path = ''): RegChange[] {
  const out: RegChange[] = [];
  for (const [k, vb] of b.values) {
    const va = a.values.get(k);
    if (!va || !sameData(data(va), data(vb))) out.push({ op: 'set', key: path, name: vb.name, value: data(vb), ...(va ? { base: data(va) } : {}) });
  }
  for (const [k, va] of a.values) if (!b.values.has(k)) out.push({ op: 'remove', key: path, name: va.name, base: data(va) });
  for (const [k, kb] of b.subkeys) {
    const sub = path ? `${path}\\${kb.name}` : kb.name;
    const ka = a.subkeys.get(k);
    if (!ka) { out.push({ op: 'add-key', key: sub }, ...registryChanges(emptyKey(kb.name), kb, sub)); continue; }
    out.push(...registryChanges(ka, kb, sub));
  }
  for (const [k, ka] of a.subkeys) if (!b.subkeys.has(k)) out.push({ op: 'remove-key', key: path ? `${path}\\${ka.name}` : ka.name });
  return out;
}

const emptyKey = (name: string) => ({ name, values: new Map(), subkeys: new Map() }) as unknown as RegKey;

/** the value a hive now holds at key/name (undefined: no such key or value) */
export function lookup(root: RegKey, key: string, name?: string): RegData | 'key' | undefined {
  const k = key ? root.sub(key) : root;
  if (!k) return undefined;
  if (name === undefined) return 'key';
  const v = k.value(name);
  return v ? data(v) : undefined;
}

/** Where the hive differs from the base a registry change expects (its conflicts), as readable strings. */
export function registryConflicts(root: RegKey, changes: RegChange[]): string[] {
  const out: string[] = [];
  for (const c of changes) {
    if (c.op === 'set' || c.op === 'remove') {
      const now = lookup(root, c.key, c.name);
      const nowData = now === 'key' ? undefined : now;
      if (c.op === 'set' && sameData(nowData, c.value)) continue; // already as wanted
      if (c.op === 'remove' && nowData === undefined) continue;
      if (!c.base ? nowData !== undefined : !sameData(nowData, c.base)) out.push(`${c.key}\\${c.name || '@'}`);
    }
  }
  return out;
}

const quote = (s: string) => '"' + s.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
const hexList = (hex: string) => (hex.match(/../g) ?? []).join(',');

/** the .reg text hivexregedit --merge applies: keys parents first, deletions as [-key] and "name"=- */
export function regMergeText(prefix: string, changes: RegChange[]): string {
  const out = ['Windows Registry Editor Version 5.00', ''];
  for (const c of changes) {
    if (/[\]\r\n]/.test(c.key)) throw new Error(`registry key name not writable as .reg: ${c.key}`);
    if (c.op === 'remove-key') { out.push(`[-${prefix}\\${c.key}]`, ''); continue; }
    out.push(`[${prefix}${c.key ? '\\' + c.key : ''}]`);
    if (c.op === 'set') out.push(`${c.name === '' ? '@' : quote(c.name)}=hex(${c.value.type.toString(16)}):${hexList(c.value.hex)}`);
    if (c.op === 'remove') out.push(`${c.name === '' ? '@' : quote(c.name)}=-`);
    out.push('');
  }
  return out.join('\r\n') + '\r\n';
}

export async function mergeRegistry(hive: string, changes: RegChange[], regFile: string): Promise<void> {
  if (!changes.length) return;
  const prefix = 'HKEY_LOCAL_MACHINE\\FERRY';
  await writeFile(regFile, regMergeText(prefix, changes));
  await run('hivexregedit', ['--merge', '--prefix', prefix, hive, regFile]);
}

export const readText = async (path: string) => readFile(path, 'utf8');
