// Version filters for `ferry images search --version/--kernel`: a comparison
// (`>=12`, `<6.1`, `!=9.4`, `=12`, or a bare `12`) held against version
// strings ordered the way dpkg orders them, which also sorts RHEL and kernel
// release strings sensibly.
//
// A filter means what it says at its own precision: `12` names the whole 12
// series, so `=12` and `12` match 12.7, `<=12` matches 12.7 and `>12` does
// not; `>=6.1` matches 6.1.0-27-amd64. A value counts as equal to a filter when
// the filter is a whole-component prefix of it (12 of 12.7, not of 120).
import { badFilter } from '../errors.js';

export type Op = '<' | '<=' | '>' | '>=' | '=' | '!=';

export interface VersionFilter { op: Op; version: string }

const SEPARATORS = /[.\-+_:]/;
const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+~_:-]*$/;

/** Parse `>=12` and friends; a malformed filter is a BAD_FILTER usage error naming the option. */
export function parseVersionFilter(text: string, option = '--version'): VersionFilter {
  const m = /^\s*(<=|>=|!=|==|<|>|=)?\s*(.*?)\s*$/.exec(text)!;
  const version = m[2];
  if (!version) throw badFilter(option, text, 'names no version; write e.g. >=12, <6.1, =12.7 or 12');
  if (!VERSION.test(version)) {
    throw badFilter(option, text, 'is not a version comparison; write one of <, <=, >, >=, =, != followed by a version such as 12, 6.1 or 5.14.0-427');
  }
  const op = (m[1] === '==' ? '=' : m[1] ?? '=') as Op;
  return { op, version };
}

const isDigit = (c: string | undefined) => c !== undefined && c >= '0' && c <= '9';
const isLetter = (c: string | undefined) => c !== undefined && /[A-Za-z]/.test(c);

// dpkg's order of one non-digit character: `~` before the end, the end before
// letters, letters before every other character.
function order(c: string | undefined): number {
  if (c === undefined || isDigit(c)) return 0;
  if (isLetter(c)) return c.charCodeAt(0);
  if (c === '~') return -1;
  return c.charCodeAt(0) + 256;
}

/** dpkg's verrevcmp: <0, 0 or >0. Digit runs compare as numbers, the rest character by character. */
export function compareVersions(a: string, b: string): number {
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    while ((i < a.length && !isDigit(a[i])) || (j < b.length && !isDigit(b[j]))) {
      const d = order(a[i]) - order(b[j]);
      if (d) return d;
      i++; j++;
    }
    while (a[i] === '0') i++;
    while (b[j] === '0') j++;
    let firstDiff = 0;
    while (isDigit(a[i]) && isDigit(b[j])) {
      firstDiff ||= a.charCodeAt(i) - b.charCodeAt(j);
      i++; j++;
    }
    if (isDigit(a[i])) return 1;
    if (isDigit(b[j])) return -1;
    if (firstDiff) return firstDiff;
  }
  return 0;
}

/** `prefix` is `value` or its leading whole components: 12 of 12.7 and 6.1 of 6.1.0-27-amd64, not 12 of 120. */
export function isComponentPrefix(prefix: string, value: string): boolean {
  if (value === prefix) return true;
  if (!prefix || !value.startsWith(prefix)) return false;
  return SEPARATORS.test(prefix.at(-1)!) || SEPARATORS.test(value[prefix.length]);
}

export function versionMatches(value: string | null | undefined, f: VersionFilter): boolean {
  if (!value) return false;
  const c = isComponentPrefix(f.version, value) ? 0 : Math.sign(compareVersions(value, f.version));
  switch (f.op) {
    case '=': return c === 0;
    case '!=': return c !== 0;
    case '<': return c < 0;
    case '<=': return c <= 0;
    case '>': return c > 0;
    case '>=': return c >= 0;
  }
}

/** The upstream part of a kernel release: 6.1.0 of 6.1.0-27-amd64, 5.14.0 of 5.14.0-427.13.1.el9_4.x86_64. */
export function kernelUpstream(release: string): string {
  return /^\d+(?:\.\d+)*/.exec(release)?.[0] ?? release;
}

/**
 * A kernel filter of plain numbers (`>=6.1`) compares the upstream version
 * only, so the distribution's ABI and build suffixes never decide it; one
 * that names more (`>=5.14.0-427`) compares the whole release string.
 */
export function kernelMatches(release: string | null | undefined, f: VersionFilter): boolean {
  if (!release) return false;
  return versionMatches(/^[\d.]+$/.test(f.version) ? kernelUpstream(release) : release, f);
}
