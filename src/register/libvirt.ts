// Talking to libvirt through @unraid/libvirt (node-addon-api bindings of
// libvirt's C API, so no virsh and no shell). Everything that can refuse a
// registration (the URI, the name, the disk's reachability) is checked
// before a domain is defined; a domain that cannot start is undefined again,
// so a failed registration leaves nothing behind.
import { readFile, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Hypervisor, DomainState, type Domain } from '@unraid/libvirt';
import { diskNotAccessible, domainExists, libvirtFailed, libvirtUnreachable } from '../errors.js';

export const DEFAULT_URI = 'qemu:///system';

const why = (e: unknown) => (e as Error).message?.replace(/\s+/g, ' ').trim() || String(e);

/** Open a connection; LIBVIRT_UNREACHABLE (naming the URI) when libvirtd cannot be reached. */
export async function connect(uri: string): Promise<Hypervisor> {
  let h: Hypervisor;
  try {
    h = new Hypervisor({ uri });
    await h.connectOpen();
  } catch (e) {
    throw libvirtUnreachable(uri, why(e));
  }
  return h;
}

export async function withConnection<T>(uri: string, fn: (h: Hypervisor) => Promise<T>): Promise<T> {
  const h = await connect(uri);
  try {
    return await fn(h);
  } finally {
    await h.connectClose().catch(() => undefined);
  }
}

/** The names of every domain, running or not. */
export async function domainNames(h: Hypervisor): Promise<string[]> {
  return Promise.all((await h.connectListAllDomains()).map(d => d.getName()));
}

async function lookup(h: Hypervisor, name: string): Promise<Domain | undefined> {
  // the binding drops libvirt's error codes (all -1), so look the name up in the list instead of matching messages
  for (const d of await h.connectListAllDomains()) if (await d.getName() === name) return d;
  return undefined;
}

export async function refuseExisting(h: Hypervisor, uri: string, name: string): Promise<void> {
  if ((await domainNames(h)).includes(name)) throw domainExists(name, uri);
}

/** Local qemu:///system: QEMU runs as an unprivileged user, so the disk's directories must let that user through. */
export const isLocalSystem = (uri: string) => /^qemu(\+unix)?:\/\/\/system(\?|$)/.test(uri);

interface QemuUser { name: string; uid: number; gids: number[]; dynamicOwnership: boolean }

/** Which user qemu:///system runs QEMU as (qemu.conf `user`, else Debian's libvirt-qemu). */
async function qemuUser(): Promise<QemuUser | undefined> {
  const conf = await readFile('/etc/libvirt/qemu.conf', 'utf8').catch(() => '');
  const setting = (k: string) => new RegExp(`^\\s*${k}\\s*=\\s*"?([^"\\n]*)"?`, 'm').exec(conf)?.[1].trim();
  const name = setting('user') ?? 'libvirt-qemu';
  const dynamicOwnership = setting('dynamic_ownership') !== '0';
  if (name === 'root' || name === '+0') return undefined;
  const passwd = (await readFile('/etc/passwd', 'utf8')).split('\n').map(l => l.split(':'));
  const entry = name.startsWith('+') ? passwd.find(p => p[2] === name.slice(1)) : passwd.find(p => p[0] === name);
  if (!entry) return undefined; // no such user here: libvirt will say so itself when starting
  const gids = [Number(entry[3])];
  for (const g of (await readFile('/etc/group', 'utf8')).split('\n').map(l => l.split(':'))) {
    if (g[3]?.split(',').includes(entry[0])) gids.push(Number(g[2]));
  }
  return { name: entry[0], uid: Number(entry[2]), gids, dynamicOwnership };
}

/**
 * The disk is used by path where convert wrote it (no copy into a storage
 * pool). libvirt's DAC driver chowns the image itself to the QEMU user when
 * the domain starts (dynamic_ownership, and back when it stops) but not the
 * directories above it, so each of those must be searchable by that user.
 * Checked here so the answer is a typed error before anything is defined,
 * not a "Permission denied" from QEMU after.
 */
export async function checkDiskReachable(uri: string, path: string, opts: { imageExists?: boolean } = {}): Promise<void> {
  if (!isLocalSystem(uri)) return; // a remote host's (or the session daemon's) own permissions
  const user = await qemuUser();
  if (!user) return;
  const can = (st: { uid: number; gid: number; mode: number }, bit: number) =>
    st.uid === user.uid ? !!(st.mode & (bit << 6)) : user.gids.includes(st.gid) ? !!(st.mode & (bit << 3)) : !!(st.mode & bit);
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    if (!can(await stat(dir), 1)) throw diskNotAccessible(path, user.name, dir);
    if (dir === '/') break;
  }
  if (opts.imageExists !== false && !user.dynamicOwnership && !can(await stat(path), 4)) throw diskNotAccessible(path, user.name, path);
}

export interface Defined { name: string; uuid: string; started: boolean; state: string }

/** Define the domain and, with `start`, start it; a start that fails undefines it again. */
export async function defineDomain(h: Hypervisor, uri: string, name: string, xml: string, start: boolean): Promise<Defined> {
  let d: Domain;
  try {
    d = await h.domainDefineXML(xml);
  } catch (e) {
    // another client may have taken the name since refuseExisting(): libvirt refuses a second domain of that name
    if (/already exists/.test(why(e))) throw domainExists(name, uri);
    throw libvirtFailed(uri, `define domain ${name}`, why(e));
  }
  const uuid = await d.getUUIDString();
  if (start) {
    // libvirt's own log of the domain, written from the first start attempt on
    const log = isLocalSystem(uri) ? `/var/log/libvirt/qemu/${name}.log` : undefined;
    const hadLog = !!log && !!(await stat(log).catch(() => undefined));
    try {
      await d.create();
    } catch (e) {
      await removeDomain(d);
      // the reason is in the error; a log of a domain that no longer exists would only be left behind
      if (log && !hadLog) await rm(log, { force: true });
      throw libvirtFailed(uri, `start domain ${name}`, why(e));
    }
  }
  return { name, uuid, started: start, state: await domainState(d) };
}

async function domainState(d: Domain): Promise<string> {
  const s = (await d.getInfo()).state;
  return (DomainState[s] ?? String(s)).toLowerCase();
}

async function removeDomain(d: Domain): Promise<void> {
  if ((await d.getInfo().catch(() => undefined))?.state !== DomainState.SHUTOFF) await d.destroy().catch(() => undefined);
  await d.undefine();
}

/**
 * Stop (hard) and undefine a domain; false when there was none of that name.
 * `removeLogs` (a local daemon only): also delete its serial log and
 * libvirt's own log of it, so a test leaves no file behind.
 */
export async function unregister(uri: string, name: string, opts: { removeLogs?: boolean } = {}): Promise<boolean> {
  return withConnection(uri, async h => {
    const d = await lookup(h, name);
    if (!d) return false;
    const xml = await d.getXMLDesc();
    await removeDomain(d);
    if (opts.removeLogs && isLocalSystem(uri)) {
      const serial = [...xml.matchAll(/<serial type='file'>\s*<source path='([^']+)'/g)].map(m => m[1].replace(/&apos;/g, "'").replace(/&amp;/g, '&'));
      for (const f of [...serial, `/var/log/libvirt/qemu/${name}.log`]) await rm(f, { force: true });
    }
    return true;
  });
}

/** The state of a domain ('running', 'shutoff', …), undefined when there is none. */
export async function domainStateOf(uri: string, name: string): Promise<string | undefined> {
  return withConnection(uri, async h => {
    const d = await lookup(h, name);
    return d ? domainState(d) : undefined;
  });
}

/** The XML libvirt holds for a domain (what it made of ours). */
export async function domainXmlOf(uri: string, name: string): Promise<string | undefined> {
  return withConnection(uri, async h => (await lookup(h, name))?.getXMLDesc());
}
