// Size planning: grow, keep, shrink, extended/logical partitions, and the
// "does not fit" error that comes before anything is written.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { planLayout, type PlannedPartition } from '../../src/layout/plan.js';
import type { PartitionTable } from '../../src/layout/table.js';
import { FerryError } from '../../src/errors.js';

const MiB = 2048; // sectors
const table = (label: 'dos' | 'gpt', parts: PlannedPartition[]): PartitionTable => ({ label, id: '0x1', sectorSize: 512, partitions: parts });

// Debian-installer shape: root, then an extended partition holding swap.
const dosParts = (): PlannedPartition[] => [
  { number: 1, start: 1 * MiB, size: 1500 * MiB, type: '83', role: 'data', minSize: 900 * MiB },
  { number: 2, start: 1502 * MiB - 2, size: 546 * MiB, type: '5', role: 'fixed' },
  { number: 5, start: 1502 * MiB, size: 544 * MiB, type: '82', role: 'swap', minSize: 16 * MiB },
];
const GiB2 = 2048 * 2 ** 20;

describe('planLayout', () => {
  it('keeps every start and size when the target is the same size', () => {
    const t = table('dos', dosParts());
    const out = planLayout(t, dosParts(), GiB2, GiB2);
    assert.deepEqual(out.partitions.map(p => [p.number, p.start, p.size]), dosParts().map(p => [p.number, p.start, p.size]));
  });

  it('grows the last data partition and moves the ones after it, extended included', () => {
    const out = planLayout(table('dos', dosParts()), dosParts(), GiB2, 2 * GiB2);
    const [p1, p2, p5] = out.partitions;
    assert.equal(p1.start, 1 * MiB);
    assert.equal(p1.size, (1500 + 2048) * MiB);
    assert.equal(p5.start, (1502 + 2048) * MiB);
    assert.equal(p5.size, 544 * MiB, 'swap keeps its size');
    assert.equal(p2.start, p5.start - 2, 'extended keeps its lead before the first logical');
    assert.ok(p2.start + p2.size >= p5.start + p5.size, 'extended still contains its logicals');
  });

  it('shrinks swap first, then data, down to what the data needs', () => {
    const out = planLayout(table('dos', dosParts()), dosParts(), GiB2, 1200 * 2 ** 20);
    const [p1, , p5] = out.partitions;
    assert.ok(p5.start + p5.size <= 1200 * MiB, 'fits the disk');
    assert.ok(p1.size >= 900 * MiB, 'root keeps room for its data');
    assert.ok(p5.size >= 16 * MiB);
    assert.equal(p1.size % MiB, 0, 'sizes stay MiB-aligned');
  });

  it('says how many bytes are needed when the data cannot fit', () => {
    assert.throws(() => planLayout(table('dos', dosParts()), dosParts(), GiB2, 500 * 2 ** 20),
      (e: unknown) => e instanceof FerryError && e.code === 'DOES_NOT_FIT' && (e.details.needed as number) > 900 * 2 ** 20);
  });

  it('never resizes or moves fixed partitions before a data one; GPT keeps room for its backup header', () => {
    const parts: PlannedPartition[] = [
      { number: 1, start: 1 * MiB, size: 1 * MiB, type: 'bios', role: 'fixed' },
      { number: 2, start: 2 * MiB, size: 64 * MiB, type: 'esp', role: 'data', minSize: 34 * MiB },
      { number: 3, start: 66 * MiB, size: 900 * MiB, type: 'linux', role: 'data', minSize: 300 * MiB },
      { number: 4, start: 966 * MiB, size: 16 * MiB, type: 'unknown', role: 'fixed' },
    ];
    const src = 1000 * 2 ** 20;
    const grown = planLayout(table('gpt', parts), parts, src, 2 * src);
    assert.equal(grown.partitions[0].start, 1 * MiB);
    assert.equal(grown.partitions[2].size, 1900 * MiB, 'the last data partition takes the extra');
    assert.equal(grown.partitions[3].start, 1966 * MiB, 'the fixed partition after it moves along');
    const shrunk = planLayout(table('gpt', parts), parts, src, 600 * 2 ** 20);
    const last = shrunk.partitions[3];
    assert.ok(last.start + last.size <= 600 * MiB - 33, 'ends before the GPT backup');
    assert.equal(last.size, 16 * MiB);
  });
});
