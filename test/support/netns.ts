// A test host in a network namespace, joined to this one by a veth pair with
// an address on each end (/30 unless told; the namespace's end may have none,
// for a DHCP client to fill). remove() takes the pair and the namespace away.
// `ip netns add` also turns /run/netns into a mount point the first time it
// runs on a machine; that stays, as iproute2 itself leaves it: taking it away
// raced with another test file's `ip netns add` (between its listing and its
// umount the other file's namespace could lose its mount). The namespace is registered in the file's scope dir (the
// guard counts it as this file's, not as the other running file's).
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { testScope } from './test-scope.js';

export interface NetnsLink {
  ns: string; hostIf: string; nsIf: string; hostIp: string; nsIp?: string; prefix?: number;
  /** run a command inside the namespace */
  exec(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }>;
  remove(): Promise<void>;
}

const sh = (cmd: string, args: string[]) => execa(cmd, args, { stdin: 'ignore' });

/**
 * Make the namespace and the pair, addresses up, lo up inside; refuses a /30 this host already uses.
 * isolated: the namespace alone, no pair (nothing of it is reachable from here, so nothing can clash with another test's).
 */
export async function makeNetnsLink(o: { ns: string; hostIf: string; nsIf: string; hostIp: string; nsIp?: string; prefix?: number; isolated?: boolean }): Promise<NetnsLink> {
  const prefix = o.prefix ?? 30;
  if (!o.isolated) {
    const taken = String((await sh('ip', ['-4', '-o', 'addr', 'show'])).stdout);
    const subnet = o.hostIp.replace(/\.\d+$/, '.');
    assert.ok(!taken.includes(` ${subnet}`), `${subnet}0/${prefix} is already in use on this host (a leftover or a clash):\n${taken}`);
  }
  let made = false;
  const link: NetnsLink = {
    ...o,
    async exec(cmd, args) {
      const r = await sh('ip', ['netns', 'exec', o.ns, cmd, ...args]);
      return { stdout: String(r.stdout), stderr: String(r.stderr) };
    },
    async remove() {
      // deleting one end deletes the pair; `ip netns del` alone frees the veth only later, asynchronously
      if (!o.isolated) await execa('ip', ['link', 'del', o.hostIf], { reject: false, stdin: 'ignore' });
      if (made) await execa('ip', ['netns', 'del', o.ns], { reject: false, stdin: 'ignore' });
      const others = String((await execa('ip', ['netns', 'list'], { reject: false, stdin: 'ignore' })).stdout).trim();
      if (!o.isolated) assert.notEqual((await execa('ip', ['link', 'show', o.hostIf], { reject: false, stdin: 'ignore' })).exitCode, 0, `veth ${o.hostIf} left behind`);
      assert.ok(!others.split('\n').some(l => l.split(' ')[0] === o.ns), `netns ${o.ns} left behind`);
      await rm(registration, { force: true });
    },
  };
  const registration = join(testScope.root, 'netns', o.ns);
  try {
    await writeFile(registration, '');
    await sh('ip', ['netns', 'add', o.ns]);
    made = true;
    if (!o.isolated) {
      await sh('ip', ['link', 'add', o.hostIf, 'type', 'veth', 'peer', 'name', o.nsIf]);
      await sh('ip', ['link', 'set', o.nsIf, 'netns', o.ns]);
      await sh('ip', ['addr', 'add', `${o.hostIp}/${prefix}`, 'dev', o.hostIf]);
      await sh('ip', ['link', 'set', o.hostIf, 'up']);
      if (o.nsIp) await sh('ip', ['-n', o.ns, 'addr', 'add', `${o.nsIp}/${prefix}`, 'dev', o.nsIf]);
      await sh('ip', ['-n', o.ns, 'link', 'set', o.nsIf, 'up']);
    }
    await sh('ip', ['-n', o.ns, 'link', 'set', 'lo', 'up']);
  } catch (e) {
    await link.remove();
    throw e;
  }
  return link;
}
