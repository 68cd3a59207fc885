// A test host in a network namespace, joined to this one by a veth pair with
// an address on each end (/30 unless told; the namespace's end may have none,
// for a DHCP client to fill). remove() takes the pair and the namespace away.
// `ip netns add` also turns /run/netns into a mount point the first time it
// runs on a machine; the test that removes the last namespace takes that mount
// away again when a test made it, so the machine is as it was. Two test files
// run at once: adding a namespace, and removing one with that check, happen
// under one lock for all test processes (otherwise a file's `ip netns add` could
// come between another's listing and its umount). The namespace is registered in
// the file's scope dir with the pair's names (the guard counts them as this
// file's, not the other file's).
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { alive, testScope } from './test-scope.js';

export interface NetnsLink {
  ns: string; hostIf: string; nsIf: string; hostIp: string; nsIp?: string; prefix?: number;
  /** run a command inside the namespace */
  exec(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }>;
  remove(): Promise<void>;
}

const sh = (cmd: string, args: string[]) => execa(cmd, args, { stdin: 'ignore' });
/** whether /run/netns is a mount point (`ip netns add` makes it one) */
export const netnsMounted = async () => (await readFile('/proc/self/mounts', 'utf8')).split('\n').some(l => l.split(' ')[1] === '/run/netns');

// shared by every test process (their roots' parent dir): the lock
const LOCK = join(testScope.scopes, '.netns-lock');

/** Run fn while holding the machine-wide namespace lock (a dir; one left by a dead process is taken over). */
async function withNetnsLock<T>(fn: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      await mkdir(LOCK);
      await writeFile(join(LOCK, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const owner = Number(await readFile(join(LOCK, 'pid'), 'utf8').catch(() => ''));
      // no pid yet: its owner is between mkdir and writeFile
      if (owner && !alive(owner)) await rm(LOCK, { recursive: true, force: true });
      else await new Promise(r => setTimeout(r, 20));
    }
  }
  try { return await fn(); } finally { await rm(LOCK, { recursive: true, force: true }); }
}

/**
 * Delete a namespace (none: only the check), and unmount /run/netns when it was the last and a test made that mount;
 * the namespaces left, as `ip netns list` gives them.
 */
export async function deleteNetns(ns: string | undefined): Promise<string> {
  return withNetnsLock(async () => {
    if (ns) await execa('ip', ['netns', 'del', ns], { reject: false, stdin: 'ignore' });
    const left = String((await execa('ip', ['netns', 'list'], { stdin: 'ignore' })).stdout).trim();
    // no namespace left: the bind mount `ip netns add` made goes too, whoever made it (a killed test run
    // leaves it with no one to take it down; the next `ip netns add` makes it again)
    if (!left && await netnsMounted()) await execa('umount', ['/run/netns'], { stdin: 'ignore' });
    return left;
  });
}

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
      const others = await deleteNetns(made ? o.ns : undefined);
      if (!o.isolated) assert.notEqual((await execa('ip', ['link', 'show', o.hostIf], { reject: false, stdin: 'ignore' })).exitCode, 0, `veth ${o.hostIf} left behind`);
      assert.ok(!others.split('\n').some(l => l.split(' ')[0] === o.ns), `netns ${o.ns} left behind`);
      await rm(registration, { force: true });
    },
  };
  const registration = join(testScope.root, 'netns', o.ns);
  try {
    // the pair's names too: the guard counts the host end (and the other end, until it moves) as this file's
    await writeFile(registration, o.isolated ? '' : `${o.hostIf}\n${o.nsIf}\n`);
    await withNetnsLock(async () => {
      await sh('ip', ['netns', 'add', o.ns]);
      made = true;
    });
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
