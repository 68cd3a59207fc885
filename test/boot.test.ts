// The end-to-end promise: a real Debian 12 guest (debootstrap, GRUB in the
// MBR, ext4 root + logical swap) converted to qcow2 at the same size, larger
// and smaller boots in qemu (TCG) from the converted disk alone, with its
// root file system's UUID unchanged; the source's sha256 never changes.
import assert from 'node:assert/strict';
import { describe, it, before, after } from 'node:test';
import { join } from 'node:path';
import { ferry, guardMachine, sha256, tempDir } from './support/harness.js';
import { readMarker } from './support/marker.js';
import { buildDebianGuest } from './support/fixtures.js';
import { independentCompare } from './support/independent.js';
import { bootImage } from '../src/verify/boot.js';

const ROOT_UUID = '1b7c4f2a-9d3e-4e51-8a60-f0e1d2c3b4a5';
const SWAP_UUID = '5a0c9e71-3b2d-4f48-9e16-7c8d9e0f1a2b';

guardMachine();
const dir = await tempDir();
let guest: string, guestSum: string;

before(async () => {
  guest = await buildDebianGuest();
  guestSum = await sha256(guest);
});
after(async () => { assert.equal(await sha256(guest), guestSum, 'the guest image was never written'); });

const sizes = [
  { name: 'same size', size: undefined as string | undefined },
  { name: 'larger (3G)', size: '3G' },
  { name: 'smaller (1400M)', size: '1400M' },
];

describe('Debian guest converted to qcow2 boots', () => {
  const targets: { name: string; path: string; result: Record<string, any> }[] = [];

  before(async () => {
    for (const s of sizes) {
      const path = join(dir, `debian-${s.name.split(' ')[0]}.qcow2`);
      const r = await ferry(['convert', guest, path, '--json', ...(s.size ? ['--size', s.size] : [])]);
      assert.equal(r.exitCode, 0, `${s.name}: ${r.stderr}`);
      targets.push({ name: s.name, path, result: JSON.parse(r.stdout.trim().split('\n').pop()!) });
    }
  });

  it('every conversion rebuilt root and swap with their UUIDs, carried GRUB and verified', () => {
    for (const t of targets) {
      const parts = Object.fromEntries(t.result.layout.partitions.map((p: any) => [p.number, p]));
      assert.equal(parts[1].fs, 'ext4');
      assert.equal(parts[1].uuid, ROOT_UUID);
      assert.equal(parts[5].uuid, SWAP_UUID);
      assert.ok(t.result.layout.bootCode.mbr, `${t.name}: MBR boot code copied`);
      assert.ok(t.result.layout.bootCode.gapBytes > 100_000, `${t.name}: GRUB core image in the gap copied`);
      assert.equal(t.result.verified, true);
    }
    const [same, larger, smaller] = targets.map(t => t.result);
    assert.equal(larger.virtualSize, 3 * 2 ** 30);
    assert.ok(larger.layout.partitions[0].targetSize > larger.layout.partitions[0].sourceSize, 'root grew');
    assert.equal(smaller.virtualSize, 1400 * 2 ** 20);
    assert.ok(same.allocatedBytes < 1.1 * 2 ** 30, 'the same-size target is sparse');
  });

  it('the independent comparison agrees for the smaller target', async () => {
    assert.deepEqual(await independentCompare(guest, 'raw', targets[2].path, 'qcow2'), []);
  });

  it('each converted disk boots to userspace with the same root UUID and hostname', async () => {
    // two at a time: TCG is one core per guest and the machine has two
    const results = new Map<string, Awaited<ReturnType<typeof bootImage>>>();
    const queue = [...targets];
    await Promise.all([0, 1].map(async () => {
      for (let t = queue.shift(); t; t = queue.shift()) {
        results.set(t.name, await bootImage({ image: t.path, format: 'qcow2', timeoutMs: 300_000 }));
      }
    }));
    for (const t of targets) {
      const b = results.get(t.name)!;
      const m = readMarker(b.serialLog, `${t.name} (ended by ${b.endedBy})`);
      assert.equal(m.root, ROOT_UUID);
      assert.equal(m.host, 'ferry-guest');
    }
  });
});
