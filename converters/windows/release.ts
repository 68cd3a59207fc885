// How an inspected Windows guest is named in drivers-db: the release names
// `ferry drivers import` records (src/drivers/classify.ts: virtio-win's folder
// labels 2k3 → '2003', w10 → '10', 2k19 → '2019' …), the patch level in the
// rule's spelling ('SP2'), and the folder a medium keeps its drivers in.
import type { WindowsOs } from '../../src/inspect/report.js';
import { WINDOWS_LABELS } from '../../src/drivers/classify.js';

type Version = Pick<WindowsOs, 'productName' | 'version' | 'build' | 'arch'>;

/** Windows Server releases by their first build (the name is what setup wrote, the build what the kernel is) */
const SERVER_BUILDS: [number, string[]][] = [
  [26100, ['2025', '11', '10']], [20348, ['2022', '10']], [17763, ['2019', '10']], [14393, ['2016', '10']],
];

/**
 * Release names to look drivers up under, best first: a server release and
 * then the client release built from the same kernel (Server 2019 uses the
 * Windows 10 drivers when a medium has no 2k19 folder). Empty when the guest
 * names no Windows Ferry knows.
 */
export function storeReleases(os: Version): string[] {
  const name = (os.productName ?? '').toLowerCase();
  const build = Number(os.build) || 0;
  const x64 = /x86_64|amd64|x64/i.test(os.arch ?? '');
  const server = /server/.test(name);
  const year = /server\s+(2003|2008|2012|2016|2019|2022|2025)(\s*r2)?/.exec(name);
  if (year) {
    const r2 = !!year[2];
    switch (year[1]) {
      case '2003': return ['2003'];
      case '2008': return r2 ? ['2008r2', '7'] : ['2008', 'vista'];
      case '2012': return r2 ? ['2012r2', '8.1'] : ['2012', '8'];
      default: return SERVER_BUILDS.find(([, r]) => r[0] === year[1])![1];
    }
  }
  if (/windows 2000/.test(name)) return ['2000'];
  // XP x64 Edition is NT 5.2, built from Server 2003 and using its drivers
  if (/windows xp/.test(name)) return x64 ? ['2003'] : ['xp'];
  if (/vista/.test(name)) return ['vista', '2008'];
  if (/windows 7/.test(name)) return ['7', '2008r2'];
  if (/windows 8\.1/.test(name)) return ['8.1', '2012r2'];
  if (/windows 8/.test(name)) return ['8', '2012'];
  // Windows 11 still calls itself "Windows 10" in ProductName; its build says otherwise
  if (/windows 1[01]/.test(name) && !server) return build >= 22000 ? ['11', '10'] : ['10'];

  // nothing usable in the name: the kernel version
  switch (os.version) {
    case '5.0': return ['2000'];
    case '5.1': return ['xp'];
    case '5.2': return ['2003'];
    case '6.0': return server ? ['2008', 'vista'] : ['vista', '2008'];
    case '6.1': return server ? ['2008r2', '7'] : ['7', '2008r2'];
    case '6.2': return server ? ['2012', '8'] : ['8', '2012'];
    case '6.3': return server ? ['2012r2', '8.1'] : ['8.1', '2012r2'];
    case '10.0': {
      if (server) return SERVER_BUILDS.find(([b]) => build >= b)?.[1] ?? ['2016', '10'];
      return build >= 22000 ? ['11', '10'] : ['10'];
    }
    default: return [];
  }
}

/** 'Service Pack 2' → 'SP2'; builds ('17763.5830') and anything else stay; none → 'RTM' */
export function normalizePatchLevel(p: string | undefined): string {
  const s = (p ?? '').trim();
  if (!s) return 'RTM';
  const sp = /^(?:sp|service\s*pack\s*)(\d+)([a-z]?)$/i.exec(s);
  return sp ? `SP${sp[1]}${sp[2].toLowerCase()}` : s;
}

/** NT major.minor as numbers ('10.0' → [10, 0]); unknown → [0, 0] */
export function ntVersion(os: Pick<WindowsOs, 'version'>): [number, number] {
  const [a, b] = (os.version ?? '').split('.').map(Number);
  return [Number.isFinite(a) ? a : 0, Number.isFinite(b) ? b : 0];
}

/** the virtio-win folder of a release ('2003' → '2k3') */
export function virtioLabel(release: string): string {
  return Object.entries(WINDOWS_LABELS).find(([, r]) => r === release)?.[0] ?? release;
}

/** where to get a driver that is not in the cache, for DRIVER_MISSING */
export function mediumFor(file: string, release: string, arch: string, os: Pick<WindowsOs, 'productName' | 'patchLevel'>, inbox: boolean): string {
  const stem = file.toLowerCase().replace(/\.sys$/, '');
  const virtio: Record<string, string> = { viostor: 'viostor', vioscsi: 'vioscsi', netkvm: 'NetKVM', balloon: 'Balloon', vioser: 'vioserial' };
  if (!inbox && virtio[stem]) return `the virtio-win driver ISO (it holds ${virtio[stem]}/${virtioLabel(release)}/${arch}/${file})`;
  if (!inbox && /^(pvscsi|vmxnet3|vmxnet|vmscsi)/.test(stem)) return `the VMware Tools drivers for ${os.productName ?? `Windows ${release}`} (${file})`;
  if (!inbox && /^(storvsc|netvsc|vmbus)/.test(stem)) return `the Hyper-V Integration Services for ${os.productName ?? `Windows ${release}`} (${file})`;
  return `the ${os.productName ?? `Windows ${release}`} ${normalizePatchLevel(os.patchLevel) === 'RTM' ? 'installation' : normalizePatchLevel(os.patchLevel)} medium`;
}
