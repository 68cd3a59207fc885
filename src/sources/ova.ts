// An OVA as a conversion source. An OVA is a tar holding the .ovf envelope,
// the .mf manifest and the disk file(s): the tar's headers are walked here to
// find each member's offset and size, the .ovf names the disk member, and
// qemu reads that member in place through a `raw` node with offset/size under
// the vmdk driver — the OVA is neither extracted nor changed. (Writing an OVA
// is register/ova.ts.)
import { open, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { ovaInvalid } from '../errors.js';
import { exportAsFile } from '../blockdev/qsd.js';
import type { Scope } from '../util/scope.js';

export interface TarMember { name: string; offset: number; size: number; type: string }

/** ustar: 512-byte headers; size is octal, or GNU base-256 for members of 8 GiB and more. */
function headerSize(h: Buffer): number {
  const field = h.subarray(124, 136);
  if (field[0] & 0x80) {
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i];
    return n;
  }
  return parseInt(field.toString('latin1').replace(/\0.*$/s, '').trim() || '0', 8);
}
const cstr = (b: Buffer) => b.toString('utf8').replace(/\0.*$/s, '');

/** pax extended header records: "LEN key=value\n" */
function paxRecords(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = Number(data.subarray(i, sp).toString('latin1'));
    if (!(len > 0)) break;
    const rec = data.subarray(sp + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}

/** The members of a tar file, without reading their data; undefined when the file is not a tar. */
export async function tarMembers(path: string): Promise<TarMember[] | undefined> {
  const fh = await open(path, 'r');
  try {
    const { size: fileSize } = await fh.stat();
    const members: TarMember[] = [];
    let pos = 0;
    let longName: string | undefined;
    let pax: Record<string, string> = {};
    const h = Buffer.alloc(512);
    while (pos + 512 <= fileSize) {
      await fh.read(h, 0, 512, pos);
      if (h.every(b => b === 0)) break; // end-of-archive blocks
      if (h.subarray(257, 262).toString('latin1') !== 'ustar') return undefined;
      const sum = h.reduce((s, b, i) => s + (i >= 148 && i < 156 ? 32 : b), 0);
      if (sum !== parseInt(cstr(h.subarray(148, 156)).trim(), 8)) return undefined;
      const type = String.fromCharCode(h[156] || 0x30);
      let size = headerSize(h);
      const dataAt = pos + 512;
      if (type === 'L' || type === 'x') {
        const data = Buffer.alloc(size);
        await fh.read(data, 0, size, dataAt);
        if (type === 'L') longName = cstr(data);
        else pax = paxRecords(data);
      } else {
        const prefix = cstr(h.subarray(345, 500));
        const name = pax.path ?? longName ?? (prefix ? `${prefix}/${cstr(h.subarray(0, 100))}` : cstr(h.subarray(0, 100)));
        if (pax.size) size = Number(pax.size);
        members.push({ name, offset: dataAt, size, type });
        longName = undefined;
        pax = {};
      }
      pos = dataAt + Math.ceil(size / 512) * 512;
    }
    return members;
  } finally {
    await fh.close();
  }
}

/** Is this file a tar (an OVA)? Only the first header is read. */
export async function looksLikeTar(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const h = Buffer.alloc(512);
    const { bytesRead } = await fh.read(h, 0, 512, 0);
    return bytesRead === 512 && h.subarray(257, 262).toString('latin1') === 'ustar';
  } finally {
    await fh.close();
  }
}

export interface OvaDisk { member: TarMember; ovf: string; format: string }

/** The disk an OVA's envelope names, located inside the tar. */
export async function ovaDisk(path: string): Promise<OvaDisk> {
  const members = await tarMembers(path);
  if (!members) throw ovaInvalid(path, 'it is not a tar archive');
  const files = members.filter(m => m.type === '0' || m.type === '\0' || m.type === '7');
  const ovfMember = files.find(m => m.name.toLowerCase().endsWith('.ovf'));
  if (!ovfMember) throw ovaInvalid(path, `it holds no .ovf envelope (members: ${files.map(m => m.name).join(', ') || 'none'})`);
  const fh = await open(path, 'r');
  let ovf: string;
  try {
    const buf = Buffer.alloc(ovfMember.size);
    await fh.read(buf, 0, ovfMember.size, ovfMember.offset);
    ovf = buf.toString('utf8');
  } finally {
    await fh.close();
  }
  const ref = firstDiskHref(ovf);
  if (!ref) throw ovaInvalid(path, `${ovfMember.name} names no disk (DiskSection/References)`);
  const member = files.find(m => m.name === ref.href || basename(m.name) === basename(ref.href));
  if (!member) throw ovaInvalid(path, `its envelope names disk ${ref.href}, which the archive does not hold`);
  if (ref.format && !/vmdk/i.test(ref.format) && !/qcow2|raw/i.test(ref.format)) throw ovaInvalid(path, `its disk has format ${ref.format}; Ferry reads vmdk disks from an OVA`);
  const magic = Buffer.alloc(4);
  const fh2 = await open(path, 'r');
  try { await fh2.read(magic, 0, 4, member.offset); } finally { await fh2.close(); }
  const format = magic.toString('latin1') === 'KDMV' ? 'vmdk' : magic.toString('latin1') === 'QFI\xfb' ? 'qcow2' : 'raw';
  return { member, ovf: ovfMember.name, format };
}

/**
 * qemu blockdevs reading the OVA's disk member in place: the file, a raw
 * window (offset, size) over the member, the disk format on top. Node "disk".
 */
export function ovaBlockdevs(path: string, d: OvaDisk): Record<string, unknown>[] {
  return [
    { driver: 'file', 'node-name': 'proto', filename: path, 'read-only': true },
    { driver: 'raw', 'node-name': 'member', file: 'proto', offset: d.member.offset, size: d.member.size, 'read-only': true },
    { driver: d.format, 'node-name': 'disk', file: 'member', 'read-only': true },
  ];
}

/**
 * An OVA opened as a read-only source: its disk member exported as a plain
 * file by qemu-storage-daemon (stopped by `scope`). Reading in place costs
 * nothing up front; the alternative, extracting the vmdk into the work dir,
 * would copy the whole disk first.
 */
export async function openOva(scope: Scope, path: string, work: string, name: string, describe: string): Promise<{ file: string; size: number; format: string; sourceFormat: string; describe: string }> {
  const d = await ovaDisk(path);
  const file = await exportAsFile(scope, work, name, ovaBlockdevs(path, d), { writable: false, describe: `${describe} (${d.member.name})` });
  // the exported file holds the decoded disk (raw bytes); the OVA is what the user gave
  return { file, size: (await stat(file)).size, format: 'raw', sourceFormat: 'ova', describe };
}

/**
 * The disk file of an envelope's first disk: DiskSection's first Disk →
 * its fileRef → the References File's href. Read with patterns rather than
 * a full XML parser: the envelope is small and the fields are attributes,
 * whatever prefix the writer bound the OVF namespace to.
 */
export function firstDiskHref(ovf: string): { href: string; format?: string } | undefined {
  const attr = (el: string, name: string) => new RegExp(`(?:^|\\s)(?:[\\w-]+:)?${name}\\s*=\\s*"([^"]*)"`).exec(el)?.[1];
  const section = /<(?:[\w-]+:)?DiskSection\b[\s\S]*?<\/(?:[\w-]+:)?DiskSection>/.exec(ovf)?.[0] ?? '';
  const disk = /<(?:[\w-]+:)?Disk\b[^>]*>/.exec(section)?.[0];
  const fileRef = disk && attr(disk, 'fileRef');
  if (!fileRef) return undefined;
  for (const m of ovf.matchAll(/<(?:[\w-]+:)?File\b[^>]*>/g)) {
    if (attr(m[0], 'id') === fileRef) {
      const href = attr(m[0], 'href');
      return href ? { href: unescapeXml(href), format: attr(disk!, "format") } : undefined;
    }
  }
  return undefined;
}

const unescapeXml = (s: string) => s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
