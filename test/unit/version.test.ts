// Version filters: dpkg ordering, precision-aware comparisons, kernel
// release strings, and the filters that must be refused.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compareVersions, isComponentPrefix, kernelMatches, kernelUpstream, parseVersionFilter, versionMatches } from '../../src/catalog/version.js';
import { FerryError } from '../../src/errors.js';

describe('compareVersions (dpkg order)', () => {
  const table: [string, string, '<' | '=' | '>'][] = [
    ['12', '12', '='],
    ['12', '13', '<'],
    ['12.7', '12', '>'],
    ['12.10', '12.9', '>'],          // digits compare as numbers
    ['12.15', '12.5', '>'],
    ['6.1.0-27-amd64', '6.1.0-28-amd64', '<'],
    ['6.1.0-27-amd64', '6.10.0-1-amd64', '<'],
    ['5.14.0-427.13.1.el9_4.x86_64', '5.14.0-427.18.1.el9_4.x86_64', '<'],
    ['5.14.0-427.13.1.el9_4.x86_64', '5.14.0-362.24.1.el9_3.x86_64', '>'],
    ['1.0~rc1', '1.0', '<'],          // ~ sorts before the end
    ['1.0~rc1', '1.0~rc2', '<'],
    ['1.0a', '1.0', '>'],             // letters sort after the end
    ['1.0a', '1.0b', '<'],
    ['1.0a', '1.0.1', '<'],           // letters before other characters
    ['1.0+deb12u1', '1.0', '>'],
    ['007', '7', '='],                // leading zeros do not count
    ['9.4', '10', '<'],
    ['10.0.19045', '6.3.9600', '>'],
  ];
  for (const [a, b, want] of table) {
    it(`${a} ${want} ${b}`, () => {
      const sign = (n: number) => n < 0 ? '<' : n > 0 ? '>' : '=';
      assert.equal(sign(compareVersions(a, b)), want);
      assert.equal(sign(compareVersions(b, a)), want === '<' ? '>' : want === '>' ? '<' : '=', 'antisymmetric');
    });
  }
});

describe('isComponentPrefix', () => {
  const table: [string, string, boolean][] = [
    ['12', '12', true], ['12', '12.7', true], ['12', '120', false], ['12', '1', false],
    ['6.1', '6.1.0-27-amd64', true], ['6.1', '6.10.0', false], ['6.1.0-27', '6.1.0-27-amd64', true],
    ['12', '12a', false], ['12.', '12.7', true], ['', '12', false],
  ];
  for (const [p, v, want] of table) it(`${p} of ${v}: ${want}`, () => assert.equal(isComponentPrefix(p, v), want));
});

describe('parseVersionFilter', () => {
  const ok: [string, string, string][] = [
    ['>=12', '>=', '12'], ['>6.1', '>', '6.1'], ['<13', '<', '13'], ['<=12.7', '<=', '12.7'], ['=12', '=', '12'],
    ['12', '=', '12'], ['==12', '=', '12'], ['!=9.4', '!=', '9.4'], [' >= 12 ', '>=', '12'], ['>=5.14.0-427', '>=', '5.14.0-427'],
  ];
  for (const [text, op, version] of ok) {
    it(`'${text}' → ${op} ${version}`, () => assert.deepEqual(parseVersionFilter(text), { op, version }));
  }
  for (const bad of ['>>1', '>=', '', '=<12', '>= 1 2', '12;drop', '<>3', '~1']) {
    it(`'${bad}' is BAD_FILTER (exit 2) naming the option`, () => {
      assert.throws(() => parseVersionFilter(bad, '--kernel'), (e: unknown) =>
        e instanceof FerryError && e.code === 'BAD_FILTER' && e.exitCode === 2 && e.message.includes('--kernel'));
    });
  }
});

describe('versionMatches', () => {
  const table: [string | undefined, string, boolean][] = [
    ['12', '>=12', true], ['12.7', '>=12', true], ['11.9', '>=12', false],
    ['12.7', '12', true], ['12.7', '=12', true], ['12', '=12.7', false], ['120', '12', false],
    ['12.7', '<=12', true], ['12.7', '<12', false], ['11.9', '<12', true], ['12.7', '>12', false], ['13', '>12', true],
    ['12.7', '<=12.7', true], ['12.8', '<=12.7', false], ['12.10', '>12.9', true],
    ['12.7', '!=12', false], ['11', '!=12', true],
    ['9.4', '>=9', true], ['9.4', '<10', true], ['10.0.19045', '>=10.0.19041', true], ['6.3.9600', '>=10', false],
    [undefined, '>=1', false], [undefined, '!=1', false],
  ];
  for (const [value, filter, want] of table) {
    it(`${value} ${filter}: ${want}`, () => assert.equal(versionMatches(value, parseVersionFilter(filter)), want));
  }
});

describe('kernels', () => {
  it('upstream part', () => {
    assert.equal(kernelUpstream('6.1.0-27-amd64'), '6.1.0');
    assert.equal(kernelUpstream('5.14.0-427.13.1.el9_4.x86_64'), '5.14.0');
    assert.equal(kernelUpstream('4.19.0'), '4.19.0');
  });
  const table: [string, string, boolean][] = [
    ['6.1.0-27-amd64', '>=6.1', true], ['6.1.0-27-amd64', '>6.1', false], ['6.1.0-27-amd64', '<6.2', true],
    ['6.1.0-27-amd64', '=6.1', true], ['6.1.0-27-amd64', '6', true], ['6.1.0-27-amd64', '>=6.10', false],
    ['6.12.9-amd64', '>6.1', true], ['5.10.0-30-amd64', '>=6.1', false],
    ['5.14.0-427.13.1.el9_4.x86_64', '>=5.14', true], ['5.14.0-427.13.1.el9_4.x86_64', '<5.15', true],
    ['5.14.0-427.13.1.el9_4.x86_64', '>=5.14.0-427', true], ['5.14.0-362.24.1.el9_3.x86_64', '>=5.14.0-427', false],
    ['5.14.0-427.13.1.el9_4.x86_64', '=5.14.0-427.13.1', true],
    // the upstream part decides a plain-number filter: 6.1.0-9 and 6.1.0-27 are the same 6.1.0
    ['6.1.0-9-amd64', '>=6.1.0', true], ['6.1.0-9-amd64', '>6.1.0', false],
  ];
  for (const [release, filter, want] of table) {
    it(`${release} ${filter}: ${want}`, () => assert.equal(kernelMatches(release, parseVersionFilter(filter, '--kernel')), want));
  }
});
