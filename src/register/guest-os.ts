// How the hypervisors name a guest operating system: VMware's guestOS key
// (vmx) and osType (OVF vmw:osType), and the DMTF CIM_OperatingSystem type
// that OVF's OperatingSystemSection carries. An importer picks defaults
// (and sometimes drivers) from these, so a wrong name costs more than a
// generic one: anything not known here is "other Linux" / "other".
import type { GuestFacts } from './hardware.js';

export interface GuestOsIds { vmx: string; vmwOsType: string; cimId: number }

export function guestOsIds(g: GuestFacts): GuestOsIds {
  const b64 = g.bits === 64;
  const v = Number(g.version);
  if (g.family === 'linux') {
    switch (g.distro) {
      case 'debian': {
        const n = Math.min(Math.max(Number.isFinite(v) ? v : 12, 6), 12);
        return b64 ? { vmx: `debian${n}-64`, vmwOsType: `debian${n}_64Guest`, cimId: 96 } : { vmx: `debian${n}`, vmwOsType: `debian${n}Guest`, cimId: 95 };
      }
      case 'ubuntu': return b64 ? { vmx: 'ubuntu-64', vmwOsType: 'ubuntu64Guest', cimId: 94 } : { vmx: 'ubuntu', vmwOsType: 'ubuntuGuest', cimId: 93 };
      case 'rhel': case 'rocky': case 'almalinux': case 'centos': {
        const n = Math.min(Math.max(Number.isFinite(v) ? v : 9, 5), 9);
        const cim = g.distro === 'centos' ? (b64 ? 107 : 106) : (b64 ? 80 : 79);
        return b64 ? { vmx: `rhel${n}-64`, vmwOsType: `rhel${n}_64Guest`, cimId: cim } : { vmx: `rhel${n}`, vmwOsType: `rhel${n}Guest`, cimId: cim };
      }
      default: return b64 ? { vmx: 'other5xlinux-64', vmwOsType: 'other5xLinux64Guest', cimId: 101 } : { vmx: 'other5xlinux', vmwOsType: 'other5xLinuxGuest', cimId: 36 };
    }
  }
  if (g.family === 'windows') {
    if (g.version === '2003') return b64 ? { vmx: 'winNetStandard-64', vmwOsType: 'winNetStandard64Guest', cimId: 70 } : { vmx: 'winNetStandard', vmwOsType: 'winNetStandardGuest', cimId: 69 };
    if (g.version === '2019' || g.version === '2022') return { vmx: 'windows2019srv-64', vmwOsType: 'windows2019srv_64Guest', cimId: 1 };
    return b64 ? { vmx: 'windows9-64', vmwOsType: 'windows9_64Guest', cimId: 1 } : { vmx: 'windows9', vmwOsType: 'windows9Guest', cimId: 1 };
  }
  return b64 ? { vmx: 'other-64', vmwOsType: 'otherGuest64', cimId: 1 } : { vmx: 'other', vmwOsType: 'otherGuest', cimId: 1 };
}
