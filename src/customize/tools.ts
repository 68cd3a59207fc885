// The registered-tool store (`ferry tools`): on-demand customization tools
// (a sysprep-style tool, a first-boot script) kept outside any image and put
// into one only when a customization asks (--new-identity on Windows, --run).
//
// Layout: $FERRY_TOOLS, else $FERRY_HOME/tools:
//   <name>/<version>/tool.json   what the version is (entry, files, hashes)
//   <name>/<version>/files/...   the unpacked container
// A version is written in the store's .tmp/ and renamed into place, so a
// container that does not unpack leaves the store as it was. Registered
// versions never change; the highest version (dpkg's ordering, like
// drivers-db's kernel versions) is the one later customizations use.
import { createHash, randomBytes } from 'node:crypto';
import { chmod, copyFile, lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { extname, join, posix, relative, resolve } from 'node:path';
import { ferryHome } from '../catalog/db.js';
import { compareVersions } from '../catalog/version.js';
import { containerUnreadable, FerryError, usageError } from '../errors.js';
import { removeTree, unpack } from '../drivers/unpack.js';

export type ToolOs = 'windows' | 'linux' | 'any';

export interface ToolFile { path: string; size: number; sha256: string; mode: number }

export interface Tool {
  name: string;
  version: string;
  /** the file run in the guest, relative to the tool's root ('/' separated) */
  entry: string;
  /** which guests can run the entry (by its kind: .cmd/.bat/.exe/.ps1 Windows, .sh or an executable Linux) */
  os: ToolOs;
  container: string;
  kind: string;
  files: ToolFile[];
  /** sha256 over the files' paths and hashes: two registrations of one tree have the same digest */
  digest: string;
  addedAt: string;
}

/** NAME[@VERSION] as --run and `tools rm` take it */
export interface ToolRef { name: string; version?: string }

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/i;
/** the store's scratch space: no tool name starts with a dot */
const TMP = '.tmp';
const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9.+~_-]{0,63}$/;

/** Windows kinds of entry, by extension */
const WINDOWS_EXT = ['.cmd', '.bat', '.exe', '.ps1', '.vbs'];
/** names taken as the entry when --entry is not given, best first */
const ENTRY_NAMES = ['run.cmd', 'run.bat', 'run.ps1', 'run.exe', 'setup.cmd', 'sysprep.exe', 'run.sh', 'run', 'setup.sh'];

export const toolNotFound = (ref: ToolRef, known: string[]) =>
  new FerryError('TOOL_NOT_FOUND', 2,
    `no registered tool ${ref.name}${ref.version ? ` version ${ref.version}` : ''}${known.length ? ` (registered: ${known.join(', ')})` : ''}; register it with 'ferry tools add CONTAINER --name ${ref.name}${ref.version ? ` --version ${ref.version}` : ''}'`,
    { name: ref.name, ...(ref.version ? { version: ref.version } : {}), known });

export const toolVersionExists = (name: string, version: string) =>
  new FerryError('TOOL_VERSION_EXISTS', 2, `tool ${name} version ${version} is registered with other files; registered versions do not change: give the new files a new --version`, { name, version });

export const toolNoEntry = (path: string, names: string[]) =>
  new FerryError('TOOL_NO_ENTRY', 2, `${path} has no file Ferry can run (looked for ${ENTRY_NAMES.join(', ')}; it holds ${names.slice(0, 8).join(', ')}${names.length > 8 ? ', …' : ''}); name it with --entry PATH`, { path });

export const toolWrongOs = (t: Tool, guest: 'windows' | 'linux') =>
  new FerryError('TOOL_WRONG_OS', 5, `tool ${t.name} ${t.version} runs ${t.entry}, which a ${guest} guest cannot run; register a ${guest} build of it (nothing was changed)`, { name: t.name, version: t.version, entry: t.entry });

export const toolsStoreNotWritable = (dir: string, why: string) =>
  new FerryError('TOOLS_STORE_NOT_WRITABLE', 8, `cannot keep the tool store in ${dir}: ${why}; set FERRY_TOOLS (or FERRY_HOME) to a writable directory`, { dir });

/** $FERRY_TOOLS, else $FERRY_HOME/tools */
export function toolsDir(): string {
  return process.env.FERRY_TOOLS || join(ferryHome(), 'tools');
}

/** `NAME[@VERSION]` → a reference; usage errors name the option as written */
export function parseToolRef(text: string, option = '--run'): ToolRef {
  const [name, version, ...rest] = text.trim().split('@');
  if (rest.length || !NAME_RE.test(name ?? '')) throw usageError(`${option} ${text}: write it as NAME[@VERSION], a registered tool (see 'ferry tools list')`);
  if (version !== undefined && !VERSION_RE.test(version)) throw usageError(`${option} ${text}: '${version}' is not a version`);
  return version === undefined ? { name } : { name, version };
}

export const toolLabel = (t: Pick<Tool, 'name' | 'version'>) => `${t.name}@${t.version}`;

/** the kind of guest an entry runs in, by its name */
export function entryOs(entry: string, mode: number): ToolOs {
  const ext = extname(entry).toLowerCase();
  if (WINDOWS_EXT.includes(ext)) return 'windows';
  if (ext === '.sh' || (mode & 0o111) !== 0 || ext === '') return 'linux';
  return 'any';
}

const now = () => new Date().toISOString();

export class ToolStore {
  constructor(readonly dir = toolsDir()) {}

  private versionDir(name: string, version: string) { return join(this.dir, name, version); }

  /** the host directory holding a version's files */
  filesDir(t: Pick<Tool, 'name' | 'version'>): string { return join(this.versionDir(t.name, t.version), 'files'); }

  /** every registered version, by name then version (oldest first) */
  async list(name?: string): Promise<Tool[]> {
    const names = name ? [name] : (await readdir(this.dir).catch(() => [] as string[])).filter(n => NAME_RE.test(n)).sort();
    const out: Tool[] = [];
    for (const n of names) {
      const versions = await readdir(join(this.dir, n)).catch(() => [] as string[]);
      for (const v of versions) {
        const meta = await readFile(join(this.dir, n, v, 'tool.json'), 'utf8').catch(() => undefined);
        if (meta) out.push(JSON.parse(meta) as Tool);
      }
    }
    return out.sort((a, b) => a.name.localeCompare(b.name) || compareVersions(a.version, b.version) || a.addedAt.localeCompare(b.addedAt));
  }

  /** the version a reference names: the given one, else the highest registered */
  async resolve(ref: ToolRef): Promise<Tool> {
    const versions = await this.list(ref.name);
    const t = ref.version ? versions.find(v => v.version === ref.version) : versions.at(-1);
    if (!t) {
      const known = ref.version ? versions.map(toolLabel) : (await this.list()).map(toolLabel);
      throw toolNotFound(ref, known);
    }
    return t;
  }

  /**
   * Register a container (.cab, .zip/.tar, or a directory) as NAME at VERSION
   * (default: the package's version, else one more than the highest numbered
   * version). Re-adding identical files is a no-op; other files under a
   * registered version are refused.
   */
  async add(container: string, name: string, opts: { version?: string; entry?: string } = {}): Promise<Tool & { status: 'new' | 'present' }> {
    if (!NAME_RE.test(name)) throw usageError(`--name ${name}: letters, digits, '.', '_' and '-', up to 64 characters`);
    if (opts.version !== undefined && !VERSION_RE.test(opts.version)) throw usageError(`--version ${opts.version}: letters, digits and . + ~ _ -, starting with a letter or digit`);
    const path = resolve(container);
    const tmpRoot = join(this.dir, TMP);
    try { await mkdir(tmpRoot, { recursive: true }); } catch (e) { throw toolsStoreNotWritable(this.dir, (e as NodeJS.ErrnoException).code ?? String(e)); }
    const scratch = join(tmpRoot, `add-${randomBytes(6).toString('hex')}`);
    await mkdir(scratch);
    try {
      let c;
      try { c = await unpack(path, scratch); } catch (e) {
        if (e instanceof FerryError && e.code === 'CONTAINER_UNREADABLE') throw e;
        throw containerUnreadable(path, `it does not unpack (${firstLine(e)})`);
      }
      const stage = join(scratch, 'version');
      const filesDir = join(stage, 'files');
      const files = await copyTree(c.root, filesDir);
      if (!files.length) throw containerUnreadable(path, 'it holds no files');
      const entry = opts.entry ? normalEntry(opts.entry) : pickEntry(files);
      const entryFile = entry && files.find(f => f.path.toLowerCase() === entry.toLowerCase());
      if (!entryFile) throw toolNoEntry(path, files.map(f => f.path));
      // the entry runs in the guest: executable on Linux whatever the container kept
      if (entryOs(entryFile.path, entryFile.mode) !== 'windows' && !(entryFile.mode & 0o111)) {
        await chmod(join(filesDir, entryFile.path), 0o755);
        entryFile.mode = 0o755;
      }
      const version = opts.version ?? c.version ?? await this.nextVersion(name);
      const digest = createHash('sha256').update(files.map(f => `${f.path}\0${f.sha256}\0${f.mode & 0o111 ? 'x' : '-'}\n`).join('')).digest('hex');
      const existing = (await this.list(name)).find(t => t.version === version);
      if (existing) {
        if (existing.digest === digest && existing.entry === entryFile.path) return { ...existing, status: 'present' };
        throw toolVersionExists(name, version);
      }
      const tool: Tool = { name, version, entry: entryFile.path, os: entryOs(entryFile.path, entryFile.mode), container: c.name, kind: c.kind, files, digest, addedAt: now() };
      await writeFile(join(stage, 'tool.json'), JSON.stringify(tool, null, 2) + '\n');
      await mkdir(join(this.dir, name), { recursive: true });
      try {
        await rename(stage, this.versionDir(name, version));
      } catch (e) {
        // another `tools add` registered this version meanwhile: the same answer as if it had come first
        if (!['ENOTEMPTY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '')) throw toolsStoreNotWritable(this.dir, (e as Error).message);
        const now = (await this.list(name)).find(t => t.version === version);
        if (now?.digest === digest && now.entry === entryFile.path) return { ...now, status: 'present' };
        throw toolVersionExists(name, version);
      }
      return { ...tool, status: 'new' };
    } finally {
      removeTree(scratch);
    }
  }

  /** remove one version, or every version of a tool; returns what was removed */
  async remove(ref: ToolRef): Promise<Tool[]> {
    const versions = await this.list(ref.name);
    const gone = ref.version ? versions.filter(v => v.version === ref.version) : versions;
    if (!gone.length) throw toolNotFound(ref, (ref.version ? versions : await this.list()).map(toolLabel));
    for (const t of gone) {
      // renamed aside first: a reader never sees half a version
      const aside = join(this.dir, TMP, `rm-${randomBytes(6).toString('hex')}`);
      await mkdir(join(this.dir, TMP), { recursive: true });
      await rename(this.versionDir(t.name, t.version), aside);
      await rm(aside, { recursive: true, force: true });
    }
    if (!(await this.list(ref.name)).length) await rm(join(this.dir, ref.name), { recursive: true, force: true });
    return gone;
  }

  private async nextVersion(name: string): Promise<string> {
    const numbers = (await this.list(name)).map(t => t.version).filter(v => /^\d+$/.test(v)).map(Number);
    return String(numbers.length ? Math.max(...numbers) + 1 : 1);
  }
}

const firstLine = (e: unknown) => String((e as { stderr?: string }).stderr?.trim() || (e as Error).message || e).split('\n')[0];

function normalEntry(entry: string): string {
  const p = posix.normalize(entry.split('\\').join('/')).replace(/^\/+/, '');
  if (!p || p.startsWith('..')) throw usageError(`--entry ${entry}: a path inside the container`);
  return p;
}

/** a well-known name, shallowest first; else the only file there is */
function pickEntry(files: ToolFile[]): string | undefined {
  const byDepth = [...files].sort((a, b) => a.path.split('/').length - b.path.split('/').length);
  for (const n of ENTRY_NAMES) {
    const f = byDepth.find(x => posix.basename(x.path).toLowerCase() === n);
    if (f) return f.path;
  }
  return files.length === 1 ? files[0].path : undefined;
}

/** copy regular files and directories (links are not followed: they may point out of the container) */
async function copyTree(from: string, to: string): Promise<ToolFile[]> {
  const out: ToolFile[] = [];
  const walk = async (dir: string): Promise<void> => {
    await mkdir(join(to, relative(from, dir)), { recursive: true });
    for (const d of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const abs = join(dir, d.name);
      if (d.isDirectory()) { await walk(abs); continue; }
      if (!d.isFile()) continue;
      const rel = relative(from, abs).split('\\').join('/');
      const dst = join(to, rel);
      await copyFile(abs, dst);
      const st = await stat(abs);
      const mode = st.mode & 0o777;
      await chmod(dst, (mode | 0o444) & 0o755);
      const data = await readFile(dst);
      out.push({ path: rel, size: data.length, sha256: createHash('sha256').update(data).digest('hex'), mode: (mode | 0o444) & 0o755 });
    }
  };
  if (!(await lstat(from)).isDirectory()) throw containerUnreadable(from, 'it is not a directory');
  await walk(from);
  return out;
}
