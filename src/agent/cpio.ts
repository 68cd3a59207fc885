// A cpio "newc" writer for the agent's initrd. Written here rather than with
// GNU cpio because the archive needs /dev/console (a device node the kernel
// opens before /init runs) and root ownership, which a tree staged by an
// ordinary user cannot hold; it also makes the archive reproducible (mtime 0).
import { createWriteStream } from 'node:fs';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';

export interface DeviceNode { path: string; mode: number; major: number; minor: number }

const S_IFCHR = 0o020000;

function header(ino: number, mode: number, nlink: number, size: number, name: string, rdev: [number, number] = [0, 0]): Buffer {
  const hex = (n: number) => n.toString(16).padStart(8, '0');
  const nameBytes = Buffer.from(name + '\0');
  const fields = ['070701', hex(ino), hex(mode), hex(0), hex(0), hex(nlink), hex(0), hex(size),
    hex(0), hex(0), hex(rdev[0]), hex(rdev[1]), hex(nameBytes.length), hex(0)].join('');
  return pad(Buffer.concat([Buffer.from(fields, 'ascii'), nameBytes]));
}

/** newc aligns headers+names and file data to 4 bytes */
function pad(b: Buffer): Buffer {
  const rest = b.length % 4;
  return rest ? Buffer.concat([b, Buffer.alloc(4 - rest)]) : b;
}

/** Every path under dir, parents before children, in a stable order. */
async function walk(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    out.push(r);
    if ((await lstat(join(dir, r))).isDirectory()) out.push(...await walk(dir, r));
  }
  return out;
}

/** Write the tree under dir (plus device nodes) as a newc archive owned by root. Returns its byte count. */
export async function writeNewc(dir: string, devices: DeviceNode[], file: string): Promise<number> {
  const out = createWriteStream(file);
  let bytes = 0, ino = 1;
  const put = (b: Buffer) => { bytes += b.length; return out.write(b) ? Promise.resolve() : new Promise<void>(r => out.once('drain', () => r())); };
  for (const rel of await walk(dir)) {
    const st = await lstat(join(dir, rel));
    const perm = st.mode & 0o7777;
    if (st.isDirectory()) await put(header(ino++, 0o040000 | perm, 2, 0, rel));
    else if (st.isSymbolicLink()) {
      const target = Buffer.from(await readlink(join(dir, rel)));
      await put(header(ino++, 0o120000 | 0o777, 1, target.length, rel));
      await put(pad(target));
    } else if (st.isFile()) {
      const data = await readFile(join(dir, rel));
      await put(header(ino++, 0o100000 | perm, 1, data.length, rel));
      await put(pad(data));
    } else throw new Error(`${join(dir, rel)}: only files, directories and symlinks can be staged`);
  }
  for (const d of devices) await put(header(ino++, S_IFCHR | d.mode, 1, 0, d.path, [d.major, d.minor]));
  await put(header(0, 0, 1, 0, 'TRAILER!!!'));
  out.end();
  await finished(out);
  return bytes;
}
