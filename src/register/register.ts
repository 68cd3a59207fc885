// `ferry register IMAGE --libvirt URI --name NAME`: a finished target
// becomes a libvirt domain with the profile's hardware. Order matters: the
// image, the URI, the name and the disk's reachability are all checked
// before the domain is defined, and a domain that does not start is
// undefined again.
import type { Change } from '../../converters/linux/change.js';
import { customizeImage } from '../customize/customize.js';
import { checkCustomization, type Customization } from '../customize/identity.js';
import { usageError } from '../errors.js';
import { loadProfile } from '../profiles/profiles.js';
import { describeHardware, NAME_RE, parseMemory, type VirtualHardware } from './hardware.js';
import { readGuest, readyImage } from './image.js';
import { domainXml } from './libvirt-xml.js';
import { checkDiskReachable, DEFAULT_URI, defineDomain, refuseExisting, withConnection } from './libvirt.js';

export const DEFAULT_REGISTER_PROFILE = 'kvm-virtio';

export interface RegisterRequest {
  image: string;
  /** default qemu:///system */
  uri?: string;
  name: string;
  /** default kvm-virtio */
  profile?: string;
  /** "2G", "512M" or MiB */
  memory?: string | number;
  cpus?: number;
  mac?: string;
  start?: boolean;
  /** default 'qemu' (TCG): KVM is not usable on the build hosts */
  domainType?: 'qemu' | 'kvm';
  /** where the serial console is logged; default /var/log/libvirt/qemu/NAME-serial0.log on the libvirt host */
  serialLog?: string;
  /** a libvirt network for the NIC; default QEMU's user-mode network */
  network?: string;
  /** identity given to the image (in place) before the domain is defined */
  customize?: Customization;
}

export interface RegisterResult {
  uri: string;
  name: string;
  uuid: string;
  started: boolean;
  state: string;
  image: string;
  format: string;
  profile: string;
  domainType: 'qemu' | 'kvm';
  serialLog: string;
  hardware: VirtualHardware;
  xml: string;
  /** what the customization changed in the image */
  customized?: Change[];
}

const checkName = (name: string) => {
  if (!NAME_RE.test(name)) throw usageError(`--name '${name}' must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit`);
};

/**
 * What a job with a `register:` block checks before it converts anything:
 * the name and profile, that the URI answers, that the name is free, and
 * that QEMU there will reach the image where it is going to be written.
 */
export async function preflightRegister(req: Pick<RegisterRequest, 'uri' | 'name' | 'profile'> & { image: string }): Promise<void> {
  const uri = req.uri ?? DEFAULT_URI;
  checkName(req.name);
  await loadProfile(req.profile ?? DEFAULT_REGISTER_PROFILE);
  await withConnection(uri, async h => {
    await refuseExisting(h, uri, req.name);
    await checkDiskReachable(uri, req.image, { imageExists: false });
  });
}

export async function register(req: RegisterRequest): Promise<RegisterResult> {
  const uri = req.uri ?? DEFAULT_URI;
  checkName(req.name);
  const domainType = req.domainType ?? 'qemu';
  if (domainType !== 'qemu' && domainType !== 'kvm') throw usageError(`--domain-type must be qemu or kvm, not ${String(domainType)}`);
  if (req.customize) checkCustomization(req.customize);
  const profile = await loadProfile(req.profile ?? DEFAULT_REGISTER_PROFILE);
  const memoryMiB = req.memory === undefined ? undefined : parseMemory(req.memory);
  const image = await readyImage(req.image);
  const serialLog = req.serialLog ?? `/var/log/libvirt/qemu/${req.name}-serial0.log`;
  if (!serialLog.startsWith('/')) throw usageError(`--serial-log must be an absolute path on the libvirt host, not ${serialLog}`);
  return withConnection(uri, async h => {
    await refuseExisting(h, uri, req.name);
    await checkDiskReachable(uri, image.path);
    // the image gets its identity before libvirt ever sees it; customizeImage checks everything before it writes
    const customized = req.customize && (await customizeImage({ image: image.path, customization: req.customize })).changes;
    // the guest's own MAC binding is only needed when no --mac was given
    const guest = await readGuest(image.path, req.mac === undefined);
    const hardware = describeHardware(profile, { name: req.name, memoryMiB, cpus: req.cpus, mac: req.mac },
      { path: image.path, format: image.format, virtualSize: image.virtualSize }, guest);
    const xml = domainXml(hardware, { domainType, serialLog, network: req.network });
    const d = await defineDomain(h, uri, req.name, xml, !!req.start);
    return { uri, ...d, image: image.path, format: image.format, profile: profile.name, domainType, serialLog, hardware, xml, ...(customized ? { customized } : {}) };
  });
}

