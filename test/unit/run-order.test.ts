// The suite runner's order (test/run.ts): longest file first, unit tests last,
// a file it has no time for (a new one) before the short known ones.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { failureSummary, order } from '../run.js';

it('orders test files longest first, a new file in the middle, unit tests last', () => {
  const files = ['/d/test/unit/plan.test.js', '/d/test/agent.test.js', '/d/test/new-boot.test.js', '/d/test/deploy.test.js', '/d/test/boot.test.js', '/d/test/ntfs.test.js'];
  assert.deepEqual(order(files).map(f => f.slice('/d/test/'.length)),
    ['deploy.test.js', 'boot.test.js', 'new-boot.test.js', 'agent.test.js', 'ntfs.test.js', 'unit/plan.test.js']);
});

it('repeats a failing file\'s "failing tests" section, cut short, for the end of the log', () => {
  const out = ['▶ suite', '  ✔ one', '  ✖ two', 'ℹ fail 1', '', '✖ failing tests:', '', 'test at x.js:3:5', '✖ two', ...Array.from({ length: 60 }, (_, i) => `  line ${i}`)].join('\n');
  const s = failureSummary(out).split('\n');
  assert.equal(s[0], '✖ failing tests:');
  assert.equal(s[2], '✖ two');
  assert.equal(s.length, 41);
  assert.match(s[40], /^… 23 more lines in its output above$/);
  // a file that died without the reporter's section (killed, a syntax error): its last lines
  assert.deepEqual(failureSummary('a\nb\nSyntaxError: x').split('\n'), ['a', 'b', 'SyntaxError: x']);
});
