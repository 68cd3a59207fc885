// The register step: the finished, verified target becomes a libvirt domain
// through `ferry register`'s own code (src/register/). A resumed job whose
// register step was cut off may find the domain it defined itself.
import { FerryError } from '../errors.js';
import { register } from '../register/register.js';
import type { JobSpec } from './types.js';

export interface Registered { uri: string; name: string; uuid?: string; started: boolean }

export async function registerDomain(spec: JobSpec, image: string, opts: { interrupted: boolean }, log: (line: string) => void): Promise<Registered> {
  const r = spec.register!;
  try {
    const d = await register({ image, uri: r.libvirt, name: r.name, memory: r.memory, cpus: r.cpus, mac: spec.mac, start: r.start, profile: spec.profile });
    log(`defined domain ${d.name} (${d.uuid}) on ${d.uri}${d.started ? ' and started it' : ''}`);
    return { uri: d.uri, name: d.name, uuid: d.uuid, started: d.started };
  } catch (e) {
    // most likely our own definition from the run that died; a name taken by someone else fails the same way without a crash
    if (opts.interrupted && e instanceof FerryError && e.code === 'DOMAIN_EXISTS') {
      log(`domain ${r.name} already exists on ${r.libvirt}: defined by the interrupted run`);
      return { uri: r.libvirt, name: r.name, started: !!r.start };
    }
    throw e;
  }
}
