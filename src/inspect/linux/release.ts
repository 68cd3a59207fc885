// Which distribution and release: os-release first (every systemd-era
// distribution has it), then the distribution's own files for the point release.
import type { GuestFs } from '../guest-fs.js';

export interface Release {
  distro: string;
  name: string;
  version?: string;
  codename?: string;
  patchLevel?: string;
}

/** KEY=value lines with optional shell quoting, as os-release and ifcfg files are written */
export function parseShellVars(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2].trim();
    if (/^".*"$/.test(v)) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    else if (/^'.*'$/.test(v)) v = v.slice(1, -1);
    else v = v.replace(/\s+#.*$/, '');
    out[m[1]] = v;
  }
  return out;
}

export async function readRelease(fs: GuestFs): Promise<Release | undefined> {
  const text = (await fs.readText('/etc/os-release')) ?? (await fs.readText('/usr/lib/os-release'));
  const redhat = await fs.readText('/etc/redhat-release');
  if (text === undefined && redhat === undefined) return undefined;
  const v = parseShellVars(text ?? '');
  const r: Release = {
    distro: v.ID ?? (redhat ? 'rhel' : 'linux'),
    name: v.PRETTY_NAME ?? v.NAME ?? redhat?.trim() ?? 'Linux',
    version: v.VERSION_ID,
    codename: v.VERSION_CODENAME || undefined,
  };
  const debian = (await fs.readText('/etc/debian_version'))?.trim();
  if (r.distro === 'debian' && debian && /^\d/.test(debian)) r.patchLevel = debian;
  // "Rocky Linux release 9.4 (Blue Onyx)": the point release of the RHEL family
  const rh = redhat && /release\s+([\d.]+)/.exec(redhat);
  if (rh) r.patchLevel = rh[1];
  if (!r.patchLevel && r.distro === 'ubuntu' && v.VERSION) r.patchLevel = /^([\d.]+)/.exec(v.VERSION)?.[1];
  if (!r.version && rh) r.version = rh[1];
  return r;
}

/** the guest's architecture from the name its dynamic loader carries */
export async function readArch(fs: GuestFs): Promise<string | undefined> {
  const loaders: [string, string][] = [
    ['/lib64/ld-linux-x86-64.so.2', 'x86_64'], ['/lib/ld-linux-aarch64.so.1', 'aarch64'],
    ['/lib/ld-linux-armhf.so.3', 'armhf'], ['/lib/ld-linux.so.2', 'i386'],
  ];
  for (const [path, arch] of loaders) if (await fs.exists(path)) return arch;
  return undefined;
}
