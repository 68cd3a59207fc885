// Read-only routes over what `ferry images search/show`, `ferry drivers list`
// and `ferry profiles list` print: the catalog (src/catalog/), the driver
// store (src/drivers/) and the hardware profiles (src/profiles/). The console
// pages read these; scripts may too. Nothing here changes anything, except
// that a changed image is inspected again before it is answered for, exactly
// as the CLI does.
import type { FastifyInstance, FastifyReply } from 'fastify';
import { openDb } from '../catalog/db.js';
import { driverKey, searchImages, showImage, type Catalog } from '../catalog/images.js';
import { DriverStore, type DriverQuery } from '../drivers/store.js';
import { FerryError } from '../errors.js';
import { inspect } from '../inspect/inspect.js';
import type { LinuxOs } from '../inspect/report.js';
import { listProfiles, type Profile } from '../profiles/profiles.js';
import type { AnyJobStore } from '../store/types.js';
import { driversQuerySchema, imageParamsSchema, imagesQuerySchema } from './openapi.js';

type Many = string | string[] | undefined;
const many = (v: Many) => v === undefined ? undefined : [v].flat();

async function withCatalog<T>(fn: (c: Catalog) => Promise<T>): Promise<T> {
  const db = openDb();
  try { return await fn({ db, inspect }); } finally { db.close(); }
}

/** a catalog error as a reply: unknown image 404, a bad filter 400, the rest 422 */
function catalogError(reply: FastifyReply, e: unknown): FastifyReply {
  if (!(e instanceof FerryError)) throw e;
  const status = e.code === 'IMAGE_NOT_FOUND' ? 404 : e.exitCode === 2 ? 400 : 422;
  return reply.code(status).send({ error: e.code, message: e.message });
}

/** For each Linux kernel and each profile: the profile's boot drivers that kernel's initramfs lacks. */
export function initramfsGaps(os: LinuxOs, profiles: Profile[]): { kernel: string; profile: string; lacks: string[] }[] {
  const out: { kernel: string; profile: string; lacks: string[] }[] = [];
  for (const k of os.kernels) {
    const inside = new Set((k.initramfs?.modules ?? []).map(driverKey));
    for (const p of profiles) {
      out.push({ kernel: k.version, profile: p.name, lacks: p.linux.bootDrivers.map(driverKey).filter(m => !inside.has(m)) });
    }
  }
  return out;
}

export function catalogRoutes(app: FastifyInstance, store: Pick<AnyJobStore, 'list'>): void {
  app.get<{ Querystring: Record<string, Many> }>('/images', { schema: { querystring: imagesQuerySchema } }, async (req, reply) => {
    const q = req.query;
    const one = (v: Many) => many(v)?.at(-1);
    try {
      return await withCatalog(c => searchImages(c, {
        os: one(q.os), distro: one(q.distro), firmware: one(q.firmware),
        version: many(q.version), kernel: many(q.kernel), hasDriver: many(q.hasDriver), tag: many(q.tag),
      }));
    } catch (e) { return catalogError(reply, e); }
  });

  app.get<{ Params: { name: string } }>('/images/:name', { schema: { params: imageParamsSchema } }, async (req, reply) => {
    try {
      const image = await withCatalog(c => showImage(c, req.params.name));
      const profiles = await listProfiles();
      const initramfs = image.report.operatingSystems.flatMap(os => os.type === 'linux' ? initramfsGaps(os, profiles) : []);
      // its history: when it came into the catalog, its last inspection, and every job that read or wrote it
      const jobs = (await store.list()).filter(j => j.spec.source === image.source || j.spec.target === image.source);
      const history = [
        { at: image.addedAt, event: 'added' },
        { at: image.inspectedAt, event: image.refreshed ? 'inspected again (it had changed)' : 'inspected' },
        ...jobs.map(j => ({ at: j.createdAt, event: `${j.spec.kind ?? 'convert'} ${j.spec.source === image.source ? 'from' : 'to'} it: ${j.state}`, jobId: j.id })),
      ].sort((a, b) => a.at.localeCompare(b.at));
      return { ...image, initramfs, history };
    } catch (e) { return catalogError(reply, e); }
  });

  app.get<{ Querystring: { os?: string; component?: string; arch?: string; kernel?: string } }>('/drivers', { schema: { querystring: driversQuerySchema } }, async req => {
    const s = DriverStore.open();
    try {
      const { os, component, arch, kernel } = req.query;
      const q: DriverQuery = { component, arch, version: kernel };
      if (os === 'linux' || os === 'windows') q.osFamily = os;
      else if (os) q.osRelease = os;
      return { files: s.find(q) };
    } finally { s.close(); }
  });

  app.get('/profiles', async () => ({ profiles: await listProfiles() }));
}
