// The pure parts of image deltas: line edits of text files, --force merging
// them into a text that is not their base, package lists, --paths globs and
// the .reg text a registry edit is merged with.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyLineEdits, lineEdits, packageChanges, regMergeText } from '../../src/delta/parts.js';
import { globMatcher } from '../../src/delta/tree.js';

describe('delta parts', () => {
  it('lineEdits: the smallest edits, with base positions; applying them to the base gives the new text', () => {
    const a = 'one\ntwo\nthree\nfour\n';
    const b = 'one\n2\nthree\nfour\nfive\n';
    const e = lineEdits(a, b)!;
    assert.deepEqual(e, [{ op: '+', at: 1, line: '2' }, { op: '-', at: 1, line: 'two' }, { op: '+', at: 4, line: 'five' }]);
    assert.equal(applyLineEdits(a, a, e), b);
    assert.deepEqual(lineEdits(a, a), []);
    assert.deepEqual(lineEdits('', 'x\n'), [{ op: '+', at: 0, line: 'x' }]);
  });

  it('applyLineEdits on another text (--force): removals where found, additions after the line that preceded them', () => {
    const base = '127.0.0.1 localhost\n::1 localhost\n';
    const edits = lineEdits(base, base + '10.9.8.7 delta\n')!;
    const other = '127.0.0.1 localhost\n::1 localhost\n10.1.1.1 mine\n';
    assert.equal(applyLineEdits(other, base, edits), '127.0.0.1 localhost\n::1 localhost\n10.9.8.7 delta\n10.1.1.1 mine\n');
  });

  it('packageChanges: added, removed and version changes by name and architecture', () => {
    const a = [{ name: 'bash', version: '5.2-1', arch: 'amd64' }, { name: 'old', version: '1' }];
    const b = [{ name: 'bash', version: '5.2-2', arch: 'amd64' }, { name: 'hello', version: '2.10-3', arch: 'amd64' }];
    assert.deepEqual(packageChanges(a, b), [
      { name: 'bash:amd64', change: 'version', from: '5.2-1', to: '5.2-2' },
      { name: 'hello:amd64', change: 'added', to: '2.10-3' },
      { name: 'old', change: 'removed', from: '1' },
    ]);
  });

  it('globMatcher: * within a name, ** across directories', () => {
    const m = globMatcher(['/etc/**', '/usr/bin/h*']);
    assert.ok(m('/etc/hosts') && m('/etc/ssh/sshd_config') && m('/usr/bin/hello'));
    assert.ok(!m('/usr/bin/x/hello') && !m('/var/etc/x') && !m('/etc'));
    assert.ok(globMatcher([])('/anything'));
  });

  it('regMergeText: values as hex(T) bytes, removals as =- and [-key]', () => {
    const t = regMergeText('HKEY_LOCAL_MACHINE\\X', [
      { op: 'add-key', key: 'A' },
      { op: 'set', key: 'A', name: 'V', value: { type: 1, hex: '610000' } },
      { op: 'remove', key: 'B', name: 'Old "q"', base: { type: 4, hex: '01000000' } },
      { op: 'remove-key', key: 'C\\D' },
    ]);
    assert.equal(t, ['Windows Registry Editor Version 5.00', '', '[HKEY_LOCAL_MACHINE\\X\\A]', '', '[HKEY_LOCAL_MACHINE\\X\\A]', '"V"=hex(1):61,00,00', '',
      '[HKEY_LOCAL_MACHINE\\X\\B]', '"Old \\"q\\""=-', '', '[-HKEY_LOCAL_MACHINE\\X\\C\\D]', '', ''].join('\r\n'));
  });
});
