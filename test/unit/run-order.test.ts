// The suite runner's order (test/run.ts): longest file first, unit tests last,
// a file it has no time for (a new one) before the short known ones.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { order } from '../run.js';

it('orders test files longest first, a new file in the middle, unit tests last', () => {
  const files = ['/d/test/unit/plan.test.js', '/d/test/agent.test.js', '/d/test/new-boot.test.js', '/d/test/deploy.test.js', '/d/test/boot.test.js', '/d/test/ntfs.test.js'];
  assert.deepEqual(order(files).map(f => f.slice('/d/test/'.length)),
    ['deploy.test.js', 'boot.test.js', 'new-boot.test.js', 'agent.test.js', 'ntfs.test.js', 'unit/plan.test.js']);
});
