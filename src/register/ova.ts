// OVA = a tar holding the .ovf first, then the .mf manifest, then the disk
// file(s), written by GNU tar in that member order. Reading an OVA as a
// conversion source is sources/ova.ts.
import { stat } from 'node:fs/promises';
import { run } from '../util/exec.js';

/** GNU tar, members in the order given (the .ovf first); ustar unless a member is too big for it (8 GiB), then pax. */
export async function writeOva(out: string, dir: string, members: string[]): Promise<void> {
  let big = false;
  for (const m of members) if ((await stat(`${dir}/${m}`)).size >= 8 * 2 ** 30 - 1) big = true;
  await run('tar', ['--create', `--format=${big ? 'posix' : 'ustar'}`, '--owner=0', '--group=0', '--numeric-owner', '--mode=0644',
    '--file', out, '--directory', dir, '--', ...members]);
}
