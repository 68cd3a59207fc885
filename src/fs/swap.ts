// swap: nothing to copy, only the signature (same UUID and label).
import { run } from '../util/exec.js';
import { probeDevice } from './detect.js';
import type { FsFacts, FsModule } from './types.js';

export const swapModule: FsModule = {
  types: ['swap'],
  async probe(_scope, dev): Promise<FsFacts> {
    const p = await probeDevice(dev);
    return { type: 'swap', uuid: p.uuid, label: p.label, usedBytes: 0, detail: {} };
  },
  minBytes: () => 16 << 20, // a small swap area still lets the guest activate it by UUID
  async format(dev, f) {
    const args = ['-f'];
    if (f.uuid) args.push('-U', f.uuid);
    if (f.label) args.push('-L', f.label);
    args.push(dev);
    await run('mkswap', args);
  },
  async copy() { /* a fresh swap area is all a guest needs */ },
  verifyAs: { kind: 'signature' },
};
