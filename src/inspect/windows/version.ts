// Product, version, patch level, architecture and host name, from
// SOFTWARE\Microsoft\Windows NT\CurrentVersion and the current control set.
import type { WindowsOs } from '../report.js';
import type { RegKey } from './hive.js';

type Version = Pick<WindowsOs, 'productName' | 'edition' | 'version' | 'build' | 'patchLevel'>;

/** currentVersion: the values of SOFTWARE\Microsoft\Windows NT\CurrentVersion */
export function readVersion(currentVersion: RegKey): Version {
  const cv = currentVersion;
  const out: Version = {};
  const set = <K extends keyof Version>(k: K, v: string | undefined) => { if (v?.trim()) out[k] = v.trim(); };
  set('productName', cv.str('ProductName'));
  set('edition', cv.str('EditionID'));
  // Windows 10 and later keep CurrentVersion at "6.3" for old programs; the
  // real version is in CurrentMajor/MinorVersionNumber.
  const major = cv.num('CurrentMajorVersionNumber');
  const minor = cv.num('CurrentMinorVersionNumber');
  set('version', major !== undefined ? `${major}.${minor ?? 0}` : cv.str('CurrentVersion'));
  const build = cv.str('CurrentBuildNumber') ?? cv.str('CurrentBuild');
  set('build', build);
  // Patch level: the update build revision (Windows 10 and later), else the service pack.
  const ubr = cv.num('UBR');
  if (build && ubr !== undefined) set('patchLevel', `${build}.${ubr}`);
  else set('patchLevel', cv.str('CSDVersion'));
  return out;
}

/** PROCESSOR_ARCHITECTURE → the names Ferry uses elsewhere (uname -m style) */
const ARCH: Record<string, string> = { x86: 'i386', amd64: 'x86_64', ia64: 'ia64', arm64: 'aarch64', arm: 'arm' };

/** env: Control\Session Manager\Environment of the current control set */
export function readArch(env: RegKey): string | undefined {
  const a = env.str('PROCESSOR_ARCHITECTURE')?.trim();
  return a ? (ARCH[a.toLowerCase()] ?? a) : undefined;
}

/** computerName: Control\ComputerName\ComputerName; tcpip: Services\Tcpip\Parameters (fallback) */
export function readHostname(computerName: RegKey | undefined, tcpip: RegKey | undefined): string | undefined {
  return computerName?.str('ComputerName')?.trim() || tcpip?.str('NV Hostname')?.trim() || tcpip?.str('Hostname')?.trim() || undefined;
}
