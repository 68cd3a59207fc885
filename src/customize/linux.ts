// The Linux pieces of a customization beyond name and address: what
// `--new-identity` clears (as virt-sysprep does: machine-id, D-Bus id, SSH
// host keys, random seed, DHCP leases, persistent-net rules), an authorized
// SSH key for a user, and the timezone. Checks that need the guest's tree
// (the user exists, the zone exists) run on the read-only image first.
import { chmod, chown, lstat, mkdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Change } from '../../converters/linux/change.js';
import { FerryError, usageError } from '../errors.js';
import type { GuestFs } from '../inspect/guest-fs.js';

export interface AuthorizedKey { user: string; file: string; keys: string[] }

const KEY_TYPES = /^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)$/;
const USER_RE = /^[a-z_][a-z0-9_.-]{0,31}\$?$/i;
const ZONE_RE = /^[A-Za-z0-9_+-]+(\/[A-Za-z0-9_+-]+)*$/;

/** One OpenSSH public key line: its type names itself again inside the base64 blob, so text that merely looks like one is refused. */
export function isPublicKeyLine(line: string): boolean {
  const [type, blob] = line.trim().split(/\s+/);
  if (!type || !blob || !KEY_TYPES.test(type) || !/^[A-Za-z0-9+/]+={0,2}$/.test(blob)) return false;
  const raw = Buffer.from(blob, 'base64');
  if (raw.length < 4 + type.length) return false;
  const n = raw.readUInt32BE(0);
  return n === type.length && raw.subarray(4, 4 + n).toString('latin1') === type;
}

/** `--ssh-authorized-key FILE --user U`: the key lines of FILE (comments and blanks skipped), every line checked. */
export async function readAuthorizedKey(file: string, user: string | undefined): Promise<AuthorizedKey> {
  if (!user) throw usageError('--ssh-authorized-key needs --user USER (whose ~/.ssh/authorized_keys gets the key)');
  if (!USER_RE.test(user)) throw usageError(`--user ${user}: not a user name`);
  const text = await readFile(file, 'utf8').catch(e => { throw usageError(`--ssh-authorized-key ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`); });
  const lines = text.split('\n').map(l => l.trim()).filter(l => l && !l.startsWith('#'));
  const bad = lines.find(l => !isPublicKeyLine(l));
  if (!lines.length || bad !== undefined) throw usageError(`--ssh-authorized-key ${file}: not an OpenSSH public key (want lines like "ssh-ed25519 AAAA… comment"; a private key is never accepted)`);
  return { user, file, keys: lines };
}

export function checkTimezoneName(zone: string): void {
  if (!ZONE_RE.test(zone) || zone.split('/').some(p => p === '..' || p === '.')) throw usageError(`--timezone ${zone}: write a zone name like Europe/Berlin or UTC`);
}

export const unknownUser = (user: string) =>
  new FerryError('CUSTOMIZE_UNKNOWN_USER', 5, `the guest has no user ${user} in /etc/passwd; give a user that exists in the image (nothing was changed)`, { user });
export const unknownTimezone = (zone: string) =>
  new FerryError('CUSTOMIZE_UNKNOWN_TIMEZONE', 5, `the guest has no zone ${zone} (no /usr/share/zoneinfo/${zone}); give a zone its tzdata has (nothing was changed)`, { zone });

export interface PasswdEntry { name: string; uid: number; gid: number; home: string }

export async function guestUser(fs: GuestFs, user: string): Promise<PasswdEntry | undefined> {
  for (const line of ((await fs.readText('/etc/passwd')) ?? '').split('\n')) {
    const f = line.split(':');
    if (f.length >= 7 && f[0] === user) return { name: f[0], uid: Number(f[2]), gid: Number(f[3]), home: f[5] || '/' };
  }
  return undefined;
}

async function isRegularZone(fs: GuestFs, zone: string): Promise<boolean> {
  const p = await fs.resolve(`/usr/share/zoneinfo/${zone}`);
  if (!p) return false;
  const head = await readFile(p).then(b => b.subarray(0, 4).toString('latin1')).catch(() => '');
  return head === 'TZif';
}

/** What of the key and timezone the guest cannot take; undefined when all can be done. */
export async function linuxExtrasProblem(fs: GuestFs, key: AuthorizedKey | undefined, zone: string | undefined): Promise<FerryError | undefined> {
  if (key) {
    const u = await guestUser(fs, key.user);
    if (!u) return unknownUser(key.user);
  }
  if (zone && !(await isRegularZone(fs, zone))) return unknownTimezone(zone);
  return undefined;
}

/** the host path of a guest path's own directory entry (a symlink there is not followed) */
async function entryPath(fs: GuestFs, guestPath: string): Promise<string | undefined> {
  const dir = await fs.resolve(posix.dirname(guestPath));
  return dir && posix.join(dir, posix.basename(guestPath));
}

/** delete a file of the guest if it is there; the change names its size, never its content (keys are secrets) */
async function removeFile(fs: GuestFs, guestPath: string, reason: string): Promise<Change[]> {
  const host = await entryPath(fs, guestPath);
  const st = host && await lstat(host).catch(() => undefined);
  if (!host || !st || st.isDirectory()) return [];
  await rm(host);
  return [{ file: guestPath, before: st.isSymbolicLink() ? 'a symlink' : `${st.size} bytes`, after: 'absent', reason }];
}

/** guest paths of the files in dir whose names match */
async function filesIn(fs: GuestFs, dir: string, match: RegExp): Promise<string[]> {
  return (await fs.list(dir)).filter(n => match.test(n)).map(n => posix.join(dir, n));
}

const SSH_KEYGEN_UNIT = '/etc/systemd/system/ferry-ssh-hostkeys.service';
const SSH_KEYGEN_WANTS = '/etc/systemd/system/multi-user.target.wants/ferry-ssh-hostkeys.service';

/**
 * `--new-identity` beyond /etc/machine-id: the state that makes a clone look
 * like its template on the network or to SSH clients. Debian's sshd does not
 * make missing host keys itself, so a one-shot unit does before ssh.service
 * (it runs only while keys are missing, so it is inert afterwards).
 */
export async function clearIdentityState(fs: GuestFs): Promise<Change[]> {
  const changes: Change[] = [];
  const dbus = await entryPath(fs, '/var/lib/dbus/machine-id');
  if (dbus && (await lstat(dbus).catch(() => undefined))?.isFile()) changes.push(...await removeFile(fs, '/var/lib/dbus/machine-id', 'D-Bus kept its own copy of the template\'s machine-id; without it D-Bus reads /etc/machine-id'));
  const keys = await filesIn(fs, '/etc/ssh', /^ssh_host_.*_key(\.pub)?$/);
  for (const k of keys) changes.push(...await removeFile(fs, k, 'every clone must have SSH host keys of its own (made at first boot)'));
  if (keys.length || await fs.exists('/etc/ssh/sshd_config')) changes.push(...await installKeygenUnit(fs));
  for (const seed of ['/var/lib/systemd/random-seed', '/var/lib/urandom/random-seed']) {
    changes.push(...await removeFile(fs, seed, 'clones must not start from the same random seed'));
  }
  for (const [dir, re] of [['/var/lib/dhcp', /\.leases?$/], ['/var/lib/dhclient', /\.leases?$/], ['/var/lib/dhcpcd', /\.lease6?$/], ['/var/lib/NetworkManager', /\.lease$/], ['/var/lib/wicked', /^lease-/]] as const) {
    for (const f of await filesIn(fs, dir, re)) changes.push(...await removeFile(fs, f, 'a DHCP lease of the template would be asked for again by every clone'));
  }
  changes.push(...await removeFile(fs, '/etc/udev/rules.d/70-persistent-net.rules', 'names bound to the template\'s NIC MAC addresses; a clone\'s NICs would get new names'));
  return changes;
}

async function installKeygenUnit(fs: GuestFs): Promise<Change[]> {
  if (!(await fs.isDir('/etc/systemd/system'))) return [];
  const unit = `[Unit]
Description=Ferry: make this clone's SSH host keys (removed by ferry customize --new-identity)
Before=ssh.service sshd.service
ConditionPathExists=/usr/bin/ssh-keygen
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
`;
  const host = (await fs.hostPathForWrite(SSH_KEYGEN_UNIT))!;
  const before = await readFile(host, 'utf8').catch(() => undefined);
  const changes: Change[] = [];
  if (before !== unit) {
    await writeFile(host, unit, { mode: 0o644 });
    changes.push({ file: SSH_KEYGEN_UNIT, before: before === undefined ? 'absent' : 'an older unit', after: 'runs ssh-keygen -A before ssh.service while the host keys are missing', reason: 'Debian\'s sshd does not make missing host keys itself' });
  }
  // the wants directory may not exist yet: it is made below the guest's own /etc/systemd/system
  const wants = posix.join((await fs.resolve('/etc/systemd/system'))!, 'multi-user.target.wants', posix.basename(SSH_KEYGEN_WANTS));
  if (!(await lstat(wants).catch(() => undefined))) {
    await mkdir(posix.dirname(wants), { recursive: true });
    await symlink(SSH_KEYGEN_UNIT, wants);
    changes.push({ file: SSH_KEYGEN_WANTS, before: 'absent', after: `-> ${SSH_KEYGEN_UNIT}`, reason: 'enables the host key unit' });
  }
  return changes;
}

/** append the keys the user's authorized_keys lacks; ~/.ssh 0700 and the file 0600, owned by the user (the guest's uid/gid) */
export async function addAuthorizedKey(fs: GuestFs, key: AuthorizedKey): Promise<Change[]> {
  const u = await guestUser(fs, key.user);
  if (!u) throw unknownUser(key.user);
  const sshDir = posix.join(u.home, '.ssh');
  const file = posix.join(sshDir, 'authorized_keys');
  const hostDir = await fs.hostPathForWrite(sshDir);
  if (!hostDir) throw new FerryError('CUSTOMIZE_UNSUPPORTED', 5, `the home directory ${u.home} of ${u.name} does not exist in the guest; nothing was changed`, { user: u.name });
  const changes: Change[] = [];
  if (!(await lstat(hostDir).catch(() => undefined))) {
    await mkdir(hostDir, { mode: 0o700 });
    await chown(hostDir, u.uid, u.gid);
    await chmod(hostDir, 0o700);
    changes.push({ file: sshDir, before: 'absent', after: `directory 0700 ${u.uid}:${u.gid}`, reason: `holds ${u.name}'s authorized keys` });
  }
  const host = (await fs.hostPathForWrite(file))!;
  const before = await readFile(host, 'utf8').catch(() => undefined);
  const have = new Set((before ?? '').split('\n').map(l => l.trim().split(/\s+/).slice(0, 2).join(' ')));
  const add = key.keys.filter(k => !have.has(k.split(/\s+/).slice(0, 2).join(' ')));
  if (add.length) {
    const text = `${before ?? ''}${before && !before.endsWith('\n') ? '\n' : ''}${add.join('\n')}\n`;
    await writeFile(host, text);
  }
  // owner and mode are set even when the key was already there: sshd refuses a file others can write
  await chown(host, u.uid, u.gid).catch(e => { if (add.length) throw e; });
  await chmod(host, 0o600).catch(e => { if (add.length) throw e; });
  if (add.length) {
    const count = (t?: string) => (t ?? '').split('\n').filter(l => l.trim() && !l.startsWith('#')).length;
    changes.push({ file, before: before === undefined ? 'absent' : `${count(before)} key(s)`, after: `${count(before) + add.length} key(s): + ${add.map(k => k.split(/\s+/).filter((_, i) => i !== 1).join(' ')).join('; ')}`, reason: `--ssh-authorized-key ${key.file} for ${u.name}` });
  }
  return changes;
}

/** /etc/localtime -> ../usr/share/zoneinfo/ZONE (as timedatectl makes it) and Debian's /etc/timezone */
export async function setTimezone(fs: GuestFs, zone: string): Promise<Change[]> {
  if (!(await isRegularZone(fs, zone))) throw unknownTimezone(zone);
  const changes: Change[] = [];
  const link = (await entryPath(fs, '/etc/localtime'))!;
  const target = `../usr/share/zoneinfo/${zone}`;
  const st = await lstat(link).catch(() => undefined);
  const oldText = !st ? 'absent' : st.isSymbolicLink() ? `-> ${await readlink(link)}` : `a ${st.size}-byte file`;
  if (oldText !== `-> ${target}`) {
    if (st) await rm(link);
    await symlink(target, link);
    changes.push({ file: '/etc/localtime', before: oldText, after: `-> ${target}`, reason: `--timezone ${zone}` });
  }
  const tzHost = await fs.hostPathForWrite('/etc/timezone');
  if (tzHost && (await fs.exists('/etc/timezone') || await fs.exists('/etc/debian_version'))) {
    const before = await readFile(tzHost, 'utf8').catch(() => undefined);
    if (before !== `${zone}\n`) {
      await writeFile(tzHost, `${zone}\n`, { mode: 0o644 });
      changes.push({ file: '/etc/timezone', before: before === undefined ? 'absent' : before.trim(), after: zone, reason: `--timezone ${zone} (Debian's tzdata reads this file too)` });
    }
  }
  return changes;
}
