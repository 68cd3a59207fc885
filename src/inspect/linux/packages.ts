// Installed packages from the guest's own databases: dpkg's status file is
// text; rpm's database is read by the host's rpm from a private copy (rpm
// wants to lock and may write; the guest's file system is mounted read-only).
import { cp, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../util/exec.js';
import type { GuestFs } from '../guest-fs.js';
import type { LinuxOs, Package } from '../report.js';

export async function readPackages(fs: GuestFs, work: string): Promise<LinuxOs['packages']> {
  const status = await fs.readText('/var/lib/dpkg/status');
  if (status !== undefined) return { manager: 'dpkg', list: parseDpkgStatus(status) };
  for (const dbpath of ['/var/lib/rpm', '/usr/lib/sysimage/rpm']) {
    const host = await fs.resolve(dbpath);
    if (!host || (await fs.list(dbpath)).length === 0) continue;
    try {
      return { manager: 'rpm', list: await queryRpm(host, work) };
    } catch (e) {
      return { manager: 'rpm', list: [], error: { code: 'RPMDB_UNREADABLE', message: `the rpm database at ${dbpath} cannot be read: ${lastLine(e)}` } };
    }
  }
  return { manager: 'none', list: [] };
}

export function parseDpkgStatus(text: string): Package[] {
  const out: Package[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const f: Record<string, string> = {};
    for (const m of stanza.matchAll(/^([A-Za-z-]+):\s*(.*)$/gm)) f[m[1]] = m[2];
    if (f.Package && / installed$/.test(f.Status ?? '')) out.push({ name: f.Package, version: f.Version ?? '', arch: f.Architecture });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

async function queryRpm(hostDbDir: string, work: string): Promise<Package[]> {
  const copy = join(work, 'rpmdb');
  await mkdir(copy, { recursive: true });
  await cp(hostDbDir, copy, { recursive: true });
  const r = await run('rpm', ['--dbpath', copy, '-qa', '--qf', '%{NAME}\\t%{EPOCH}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\n']);
  const list = r.stdout.trim().split('\n').filter(Boolean).map(l => {
    const [name, epoch, version, arch] = l.split('\t');
    return { name, version: epoch && epoch !== '(none)' ? `${epoch}:${version}` : version, arch };
  });
  if (!list.length) throw new Error('rpm found no packages in it');
  return list.sort((a, b) => a.name.localeCompare(b.name));
}

const lastLine = (e: unknown) => String((e as Error).message ?? e).trim().split('\n').filter(Boolean).at(-1) ?? 'unknown error';
