// A guest's file tree as the guest would see it, assembled from file systems
// mounted read-only on the host. Paths are resolved component by component,
// following symlinks inside the guest's tree (an absolute link such as
// /etc/resolv.conf -> /run/… must never lead to the host's own files).
import { lstat, readFile, readdir, readlink, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';

export interface GuestMount {
  /** guest mount point, e.g. / or /boot */
  mountpoint: string;
  /** host directory holding that file system */
  dir: string;
}

const MAX_LINKS = 40;

export class GuestFs {
  private readonly mounts: GuestMount[];

  constructor(mounts: GuestMount[]) {
    // longest mount point first, so /boot/efi wins over /boot over /
    this.mounts = [...mounts].sort((a, b) => b.mountpoint.length - a.mountpoint.length);
  }

  /** the host path of a guest path with every symlink resolved in the guest, or undefined if it does not exist */
  async resolve(guestPath: string): Promise<string | undefined> {
    const real = await this.realpath(guestPath);
    return real === undefined ? undefined : this.hostPath(real);
  }

  /** the guest's own canonical path (symlinks followed inside the guest) */
  async realpath(guestPath: string): Promise<string | undefined> {
    let todo = posix.normalize('/' + guestPath).split('/').filter(Boolean);
    let done = '/';
    let links = 0;
    while (todo.length) {
      const part = todo.shift()!;
      if (part === '.') continue;
      if (part === '..') { done = posix.dirname(done); continue; }
      const next = posix.join(done, part);
      const st = await lstat(this.hostPath(next)).catch(() => undefined);
      if (!st) return undefined;
      if (st.isSymbolicLink()) {
        if (++links > MAX_LINKS) return undefined;
        const target = await readlink(this.hostPath(next));
        todo = [...target.split('/').filter(Boolean), ...todo];
        if (target.startsWith('/')) done = '/';
        continue;
      }
      done = next;
    }
    return done;
  }

  /** the host path where a guest file is (or would be) written: its directory resolved in the guest, the name kept */
  async hostPathForWrite(guestPath: string): Promise<string | undefined> {
    const dir = await this.realpath(posix.dirname(posix.normalize('/' + guestPath)));
    if (!dir) return undefined;
    const name = posix.basename(guestPath);
    const full = posix.join(dir, name);
    // a symlink in the last place is followed too, so the guest's own file is changed, not the link replaced
    return (await this.resolve(full)) ?? this.hostPath(full);
  }

  private hostPath(guestPath: string): string {
    const m = this.mounts.find(m => guestPath === m.mountpoint || guestPath.startsWith(m.mountpoint === '/' ? '/' : m.mountpoint + '/'));
    if (!m) throw new Error(`no file system holds ${guestPath}`); // "/" is always mounted
    return join(m.dir, guestPath.slice(m.mountpoint.length));
  }

  async exists(guestPath: string): Promise<boolean> {
    return (await this.resolve(guestPath)) !== undefined;
  }

  async isDir(guestPath: string): Promise<boolean> {
    const p = await this.resolve(guestPath);
    return !!p && (await stat(p).catch(() => undefined))?.isDirectory() === true;
  }

  /** the file's text, or undefined when it does not exist or is not a regular file */
  async readText(guestPath: string): Promise<string | undefined> {
    const p = await this.resolve(guestPath);
    if (!p || !(await stat(p).catch(() => undefined))?.isFile()) return undefined;
    return readFile(p, 'utf8');
  }

  /** entry names of a directory, sorted; empty when it does not exist */
  async list(guestPath: string): Promise<string[]> {
    const p = await this.resolve(guestPath);
    if (!p) return [];
    return (await readdir(p).catch(() => [] as string[])).sort();
  }

  /** files directly in a directory whose names match, as guest paths with their text */
  async readAll(guestDir: string, match: RegExp): Promise<{ path: string; text: string }[]> {
    const out: { path: string; text: string }[] = [];
    for (const name of await this.list(guestDir)) {
      if (!match.test(name)) continue;
      const path = posix.join(guestDir, name);
      const text = await this.readText(path);
      if (text !== undefined) out.push({ path, text });
    }
    return out;
  }

  /** every file below a directory (recursively, not following links), as guest paths */
  async walk(guestDir: string): Promise<string[]> {
    const real = await this.realpath(guestDir);
    if (!real) return [];
    const host = this.hostPath(real);
    const entries = await readdir(host, { recursive: true, withFileTypes: true }).catch(() => []);
    return entries.filter(e => e.isFile()).map(e => posix.join(real, posix.relative(host, join(e.parentPath, e.name))));
  }
}
