// Windows file names are case-insensitive, but ntfs-3g looks names up
// case-sensitively: resolve a guest path one directory listing at a time.
// Reparse points (ntfs-3g shows junctions as symlinks) are never followed, so
// a lookup cannot leave the mounted file system.
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export interface Found {
  /** path on the host */
  host: string;
  /** the guest path as the guest spells it, e.g. /WINDOWS/system32/config/SYSTEM */
  guest: string;
}

/** find guestPath ('/Windows/System32/hal.dll') below dir regardless of case */
export async function findCi(dir: string, guestPath: string): Promise<Found | undefined> {
  let host = dir;
  let guest = '';
  for (const part of guestPath.split('/').filter(Boolean)) {
    const names = await readdir(host).catch(() => undefined);
    if (!names) return undefined;
    const want = part.toLowerCase();
    // an exact match wins over one that differs only in case (POSIX-namespace twins)
    const name = names.includes(part) ? part : names.find(n => n.toLowerCase() === want);
    if (name === undefined) return undefined;
    const st = await lstat(join(host, name)).catch(() => undefined);
    if (!st || st.isSymbolicLink()) return undefined;
    host = join(host, name);
    guest += '/' + name;
  }
  return { host, guest: guest || '/' };
}

export async function isFile(path: string): Promise<boolean> {
  return (await lstat(path).catch(() => undefined))?.isFile() ?? false;
}
