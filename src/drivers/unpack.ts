// Containers of substitute files, opened with the tools made for them:
// dpkg-deb for Debian packages, rpm (query) and bsdtar (libarchive reads the
// rpm payload) for rpm packages, xorriso for ISO images, cabextract for CAB
// archives and the compressed `*.dl_`/`*.ex_` files of Windows media, bsdtar
// for zip and tar. No format is parsed here by hand.
import { readdirSync, readFileSync, existsSync, lstatSync, chmodSync, rmSync, openSync, readSync, closeSync, mkdirSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { containerUnreadable } from '../errors.js';
import { run } from '../util/exec.js';

export type ContainerKind = 'deb' | 'rpm' | 'iso' | 'cab' | 'archive' | 'dir';

export interface Container {
  path: string;
  kind: ContainerKind;
  /** the package name, else the file or directory name */
  name: string;
  /** package version (Debian Version, rpm VERSION-RELEASE) */
  version?: string;
  /** package architecture as the packager wrote it */
  arch?: string;
  /** 'debian 12', 'rhel 9.4', 'fedora 39' when the package says */
  osRelease?: string;
  /** where the unpacked files are */
  root: string;
}

/** One regular file of a container; rel is its path inside the container ('/' separated, through nested cabinets). */
export interface Entry { abs: string; rel: string }

export function containerKind(path: string): ContainerKind {
  let st;
  try { st = lstatSync(path); } catch { throw containerUnreadable(path, 'it does not exist'); }
  if (st.isDirectory()) return 'dir';
  const n = path.toLowerCase();
  if (n.endsWith('.deb') || n.endsWith('.udeb')) return 'deb';
  if (n.endsWith('.rpm')) return 'rpm';
  if (n.endsWith('.iso')) return 'iso';
  if (n.endsWith('.cab')) return 'cab';
  if (/\.(zip|tar|tgz|tbz2?|txz|tzst|tar\.(gz|bz2|xz|zst))$/.test(n)) return 'archive';
  // by content when the name says nothing
  const head = readHead(path, 0x8006);
  if (head.subarray(0, 4).toString('latin1') === 'MSCF') return 'cab';
  if (head.subarray(0, 8).toString('latin1') === '!<arch>\n') return 'deb';
  if (head.subarray(0, 4).equals(Buffer.from([0xed, 0xab, 0xee, 0xdb]))) return 'rpm';
  if (head.length >= 0x8006 && head.subarray(0x8001, 0x8006).toString('latin1') === 'CD001') return 'iso';
  throw containerUnreadable(path, 'its kind is not known by name or content');
}

function readHead(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(n);
    return b.subarray(0, readSync(fd, b, 0, n, 0));
  } finally { closeSync(fd); }
}

const DEBIAN_CODENAMES: Record<string, string> = {
  jessie: '8', stretch: '9', buster: '10', bullseye: '11', bookworm: '12', trixie: '13', forky: '14',
};

/** The release a package version or kernel release names: +deb12u1 → debian 12, .el9_4 → rhel 9.4, .fc39 → fedora 39. */
export function releaseFromVersion(v: string | undefined): string | undefined {
  if (!v) return undefined;
  let m = /[+~](?:deb|bpo)(\d+)/.exec(v);
  if (m) return `debian ${m[1]}`;
  m = /\.el(\d+)(?:_(\d+))?/.exec(v);
  if (m) return `rhel ${m[1]}${m[2] ? `.${m[2]}` : ''}`;
  m = /\.fc(\d+)/.exec(v);
  if (m) return `fedora ${m[1]}`;
  return undefined;
}

/** The distribution of the newest changelog entry a Debian package ships (`… (1.0-1) bookworm-security; …`). */
function releaseFromChangelog(root: string, pkg: string): string | undefined {
  for (const f of ['changelog.Debian.gz', 'changelog.gz']) {
    const p = join(root, 'usr', 'share', 'doc', pkg, f);
    if (!existsSync(p) || !lstatSync(p).isFile()) continue;
    try {
      const first = gunzipSync(readFileSync(p)).subarray(0, 400).toString('utf8').split('\n')[0];
      const dist = /^\S+ \([^)]*\) ([a-z]+)/.exec(first)?.[1];
      if (dist && DEBIAN_CODENAMES[dist]) return `debian ${DEBIAN_CODENAMES[dist]}`;
    } catch { /* not gzip: no answer */ }
  }
  return undefined;
}

/** Unpack a container into a fresh directory under `scratch` (a directory is used as it is). */
export async function unpack(path: string, scratch: string): Promise<Container> {
  const kind = containerKind(path);
  if (kind === 'dir') return { path, kind, name: basename(path), root: path };
  const root = await mkdtemp(join(scratch, 'unpack-'));
  const c: Container = { path, kind, name: basename(path), root };
  try {
    switch (kind) {
      case 'deb': {
        const [name, version, arch] = (await run('dpkg-deb', ['-f', path, 'Package', 'Version', 'Architecture'])).stdout.split('\n')
          .map(l => l.replace(/^[A-Za-z-]+:\s*/, '').trim());
        await run('dpkg-deb', ['-x', path, root]);
        Object.assign(c, { name, version, arch });
        c.osRelease = releaseFromVersion(version) ?? releaseFromChangelog(root, name);
        break;
      }
      case 'rpm': {
        const [name, version, arch] = (await run('rpm', ['-qp', '--nosignature', '--nodigest', '--qf', '%{NAME}\\n%{VERSION}-%{RELEASE}\\n%{ARCH}\\n', path])).stdout.split('\n');
        await run('bsdtar', ['-xf', path, '-C', root]);
        Object.assign(c, { name, version, arch, osRelease: releaseFromVersion(version) });
        break;
      }
      case 'iso':
        await run('xorriso', ['-osirrox', 'on', '-indev', path, '-extract', '/', root]);
        break;
      case 'cab':
        await run('cabextract', ['-q', '-d', root, path]);
        break;
      case 'archive':
        await run('bsdtar', ['-xf', path, '-C', root]);
        break;
    }
  } catch (e) {
    removeTree(root);
    throw e;
  }
  return c;
}

const isCabinet = (path: string) => { try { return readHead(path, 4).toString('latin1') === 'MSCF'; } catch { return false; } };
// compressed single files of Windows media: hal.dl_, ntkrnlmp.ex_, viostor.sy_
const COMPRESSED = /\.[a-z0-9]{2}_$/i;

/**
 * Every regular file under `root`, with cabinets (`*.cab`, `*.dl_` …) inside
 * it expanded in place of themselves: `i386/sp2.cab/halmacpi.dll`. Nested
 * cabinets are opened two levels deep, which covers service-pack media.
 */
export async function listEntries(root: string, scratch: string, depth = 0): Promise<Entry[]> {
  const out: Entry[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const d of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const abs = join(dir, d.name);
      if (d.isDirectory()) { await walk(abs); continue; }
      if (!d.isFile()) continue; // symlinks point at files we already list, or out of the container
      const rel = relative(root, abs).split('\\').join('/');
      if (depth < 2 && (/\.cab$/i.test(d.name) || COMPRESSED.test(d.name)) && isCabinet(abs)) {
        const into = join(scratch, `cab-${depth}-${out.length}-${Math.random().toString(36).slice(2, 8)}`);
        mkdirSync(into);
        await run('cabextract', ['-q', '-d', into, abs]);
        for (const e of await listEntries(into, scratch, depth + 1)) out.push({ abs: e.abs, rel: `${rel}/${e.rel}` });
        continue;
      }
      out.push({ abs, rel });
    }
  };
  await walk(root);
  return out;
}

/** Remove an unpacked tree, also when the container made its directories read-only (ISO images do). */
export function removeTree(dir: string): void {
  const writable = (d: string) => {
    try { chmodSync(d, 0o700); } catch { /* gone */ }
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) writable(join(d, e.name));
  };
  try { writable(dir); } catch { /* nothing to do */ }
  rmSync(dir, { recursive: true, force: true });
}
