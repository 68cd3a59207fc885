// The substitute-file cache (`drivers-db`): every file stored once by its
// sha256 under objects/<2 hex>/<sha256>, and a SQLite version database saying
// what each stored file is (component, OS, version, variant, arch, patch
// levels) and which container it came from.
//
// One object may back several rows: the same hal.dll shipped on the SP1 and the
// SP2 medium is one object with one row per container. A row's identity is its
// hash plus its metadata; importing it again only merges new patch levels.
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, readSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ferryHome } from '../catalog/db.js';
import { FerryError, driversDbNotWritable, driverNotFound } from '../errors.js';

export type OsFamily = 'linux' | 'windows';

export interface DriverFile {
  id: number;
  sha256: string;
  size: number;
  /** kernel module name ('virtio_blk'), or a Windows file name in lower case ('viostor.sys', 'hal.dll') */
  component: string;
  osFamily: OsFamily;
  /** 'debian 12', 'rhel 9.4'; Windows: '2003', 'xp', '2008r2', '10', '2019' … */
  osRelease?: string;
  /** Linux: the kernel release (uname -r); Windows: the file or DriverVer version */
  version: string;
  /** Linux: the kernel flavour; Windows HAL/kernel: the original file name (halmacpi.dll, ntkrpamp.exe) */
  variant?: string;
  /** canonical: amd64, x86, arm64 (see normalizeArch) */
  arch: string;
  /** 'SP1', 'SP2', '17763.1234' …; empty: the file is not tied to a patch level */
  patchLevels: string[];
  /** the package name, or the medium's file name */
  container: string;
  containerVersion?: string;
  pathInContainer: string;
  pinned: boolean;
  lastUsed?: string;
  importedAt: string;
}

/** What an importer knows about a file before it is stored. */
export type DriverMeta = Omit<DriverFile, 'id' | 'sha256' | 'size' | 'pinned' | 'lastUsed' | 'importedAt'>;

export type AddStatus = 'new' | 'present' | 'merged';

export interface DriverQuery {
  component?: string;
  osFamily?: OsFamily;
  /** exact, or a prefix at a word boundary: 'debian' finds 'debian 12' */
  osRelease?: string;
  arch?: string;
  version?: string;
  variant?: string;
  container?: string;
}

export interface Damage { id: number; sha256: string; problem: string }

/** $FERRY_DRIVERS_DB, else $FERRY_HOME/drivers-db. */
export function driversDbDir(): string {
  return process.env.FERRY_DRIVERS_DB || join(ferryHome(), 'drivers-db');
}

/** amd64 / x86 / arm64 whatever the packager called them. */
export function normalizeArch(arch: string): string {
  const a = arch.trim().toLowerCase();
  if (['x86_64', 'amd64', 'x64', 'x86-64'].includes(a)) return 'amd64';
  if (['i386', 'i486', 'i586', 'i686', 'x86', '686', '686-pae'].includes(a)) return 'x86';
  if (['aarch64', 'arm64'].includes(a)) return 'arm64';
  return a;
}

/** Numbered migrations, run once each in order (PRAGMA user_version); append, never edit. */
const MIGRATIONS: string[] = [
  // 1: the version database (issue 6). Optional text columns hold '' for
  // "unknown" so that the UNIQUE key treats two unknowns as the same.
  `CREATE TABLE objects (
     sha256 TEXT PRIMARY KEY,
     size INTEGER NOT NULL,
     stored_at TEXT NOT NULL
   );
   CREATE TABLE files (
     id INTEGER PRIMARY KEY,
     sha256 TEXT NOT NULL REFERENCES objects(sha256),
     component TEXT NOT NULL,
     os_family TEXT NOT NULL CHECK (os_family IN ('linux', 'windows')),
     os_release TEXT NOT NULL DEFAULT '',
     version TEXT NOT NULL,
     variant TEXT NOT NULL DEFAULT '',
     arch TEXT NOT NULL,
     -- JSON array of patch levels, kept sorted
     patch_levels TEXT NOT NULL DEFAULT '[]',
     container TEXT NOT NULL,
     container_version TEXT NOT NULL DEFAULT '',
     path_in_container TEXT NOT NULL,
     pinned INTEGER NOT NULL DEFAULT 0,
     last_used TEXT,
     imported_at TEXT NOT NULL,
     UNIQUE (sha256, component, os_family, os_release, version, variant, arch, container, container_version, path_in_container)
   );
   CREATE INDEX files_component ON files(component, os_family);
   CREATE INDEX files_sha ON files(sha256);`,
];

interface Row {
  id: number; sha256: string; size: number; component: string; os_family: OsFamily; os_release: string;
  version: string; variant: string; arch: string; patch_levels: string; container: string;
  container_version: string; path_in_container: string; pinned: number; last_used: string | null; imported_at: string;
}

const SELECT = 'SELECT f.*, o.size FROM files f JOIN objects o ON o.sha256 = f.sha256';

function toFile(r: Row): DriverFile {
  const f: DriverFile = {
    id: r.id, sha256: r.sha256, size: r.size, component: r.component, osFamily: r.os_family,
    version: r.version, arch: r.arch, patchLevels: JSON.parse(r.patch_levels) as string[],
    container: r.container, pathInContainer: r.path_in_container, pinned: r.pinned === 1, importedAt: r.imported_at,
  };
  if (r.os_release) f.osRelease = r.os_release;
  if (r.variant) f.variant = r.variant;
  if (r.container_version) f.containerVersion = r.container_version;
  if (r.last_used) f.lastUsed = r.last_used;
  return f;
}

/** sha256 of a file, read in 1 MiB pieces (modules are small, ntoskrnl a few MB). */
export function hashFile(path: string): { sha256: string; size: number } {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 20);
  const fd = openSync(path, 'r');
  let size = 0;
  try {
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) { h.update(buf.subarray(0, n)); size += n; }
  } finally { closeSync(fd); }
  return { sha256: h.digest('hex'), size };
}

// ISO time with a counter behind it so that two uses in one millisecond still order.
let lastStamp = '';
function now(): string {
  let t = new Date().toISOString();
  if (t <= lastStamp) t = new Date(Date.parse(lastStamp) + 1).toISOString();
  lastStamp = t;
  return t;
}

export class DriverStore {
  private constructor(readonly dir: string, private readonly db: Database.Database) {}

  /** Open (creating if need be) the store at `dir` (default: driversDbDir()). */
  static open(dir = driversDbDir()): DriverStore {
    let db: Database.Database;
    try {
      mkdirSync(join(dir, 'objects'), { recursive: true, mode: 0o755 });
      mkdirSync(join(dir, 'tmp'), { recursive: true, mode: 0o700 });
      db = new Database(join(dir, 'drivers.db'));
      db.pragma('journal_mode = WAL');
      db.pragma('busy_timeout = 10000');
      db.pragma('foreign_keys = ON');
      const at = db.pragma('user_version', { simple: true }) as number;
      if (at > MIGRATIONS.length) throw driversDbNotWritable(dir, `it was written by a newer Ferry (schema ${at}, this one knows ${MIGRATIONS.length})`);
      for (let v = at; v < MIGRATIONS.length; v++) {
        db.transaction(() => { db.exec(MIGRATIONS[v]); db.pragma(`user_version = ${v + 1}`); })();
      }
    } catch (e) {
      if (e instanceof FerryError) throw e;
      throw driversDbNotWritable(dir, (e as NodeJS.ErrnoException).code ?? (e as Error).message);
    }
    return new DriverStore(dir, db);
  }

  /** A scratch directory inside the store (same file system as objects/, so big unpacks do not fill /tmp). */
  scratchDir(): string { return join(this.dir, 'tmp'); }

  objectPath(file: Pick<DriverFile, 'sha256'>): string {
    return join(this.dir, 'objects', file.sha256.slice(0, 2), file.sha256);
  }

  /**
   * Store a file: its bytes once per hash (temp file + rename, read-only), and
   * one row per distinct metadata. A row that exists gains the new patch levels.
   */
  add(meta: DriverMeta, sourceFile: string): DriverFile & { status: AddStatus } {
    const { sha256, size } = hashFile(sourceFile);
    const obj = this.objectPath({ sha256 });
    if (!existsSync(obj)) {
      mkdirSync(join(obj, '..'), { recursive: true });
      const tmp = join(this.scratchDir(), `.obj-${randomBytes(6).toString('hex')}`);
      copyFileSync(sourceFile, tmp);
      chmodSync(tmp, 0o444);
      renameSync(tmp, obj);
    }
    const key = {
      sha256, component: meta.component, os_family: meta.osFamily, os_release: meta.osRelease ?? '',
      version: meta.version, variant: meta.variant ?? '', arch: normalizeArch(meta.arch), container: meta.container,
      container_version: meta.containerVersion ?? '', path_in_container: meta.pathInContainer,
    };
    return this.db.transaction(() => {
      this.db.prepare('INSERT OR IGNORE INTO objects (sha256, size, stored_at) VALUES (?, ?, ?)').run(sha256, size, now());
      const existing = this.db.prepare(`${SELECT} WHERE ${Object.keys(key).map(k => `f.${k} = @${k}`).join(' AND ')}`).get(key) as Row | undefined;
      if (existing) {
        const had = JSON.parse(existing.patch_levels) as string[];
        const merged = [...new Set([...had, ...meta.patchLevels])].sort();
        if (merged.length === had.length) return { ...toFile(existing), status: 'present' as const };
        this.db.prepare('UPDATE files SET patch_levels = ? WHERE id = ?').run(JSON.stringify(merged), existing.id);
        return { ...this.get(existing.id), status: 'merged' as const };
      }
      const r = this.db.prepare(`INSERT INTO files (${Object.keys(key).join(', ')}, patch_levels, imported_at)
        VALUES (${Object.keys(key).map(k => `@${k}`).join(', ')}, @patch_levels, @imported_at)`)
        .run({ ...key, patch_levels: JSON.stringify([...new Set(meta.patchLevels)].sort()), imported_at: now() });
      return { ...this.get(Number(r.lastInsertRowid)), status: 'new' as const };
    })();
  }

  find(q: DriverQuery = {}): DriverFile[] {
    const where: string[] = [];
    const args: Record<string, string> = {};
    // module names are spelt with '_' (virtio_blk), but users type 'virtio-blk'
    if (q.component) { where.push('lower(f.component) IN (lower(@component), lower(@module))'); Object.assign(args, { component: q.component, module: q.component.replace(/-/g, '_') }); }
    if (q.osFamily) { where.push('f.os_family = @osFamily'); args.osFamily = q.osFamily; }
    if (q.osRelease) { where.push("(lower(f.os_release) = lower(@osRelease) OR lower(f.os_release) LIKE lower(@osRelease) || ' %')"); args.osRelease = q.osRelease; }
    if (q.arch) { where.push('f.arch = @arch'); args.arch = normalizeArch(q.arch); }
    if (q.version) { where.push('f.version = @version'); args.version = q.version; }
    if (q.variant) { where.push('lower(f.variant) = lower(@variant)'); args.variant = q.variant; }
    if (q.container) { where.push('f.container = @container'); args.container = q.container; }
    const rows = this.db.prepare(`${SELECT}${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY f.os_family, f.component, f.os_release, f.version, f.variant, f.id`).all(args) as Row[];
    return rows.map(toFile);
  }

  get(id: number): DriverFile {
    const r = this.db.prepare(`${SELECT} WHERE f.id = ?`).get(id) as Row | undefined;
    if (!r) throw driverNotFound(id);
    return toFile(r);
  }

  /** Record that a conversion used this file (gc keeps recently used files longest). */
  markUsed(id: number): void {
    if (this.db.prepare('UPDATE files SET last_used = ? WHERE id = ?').run(now(), id).changes === 0) throw driverNotFound(id);
  }

  pin(id: number, pinned = true): void {
    if (this.db.prepare('UPDATE files SET pinned = ? WHERE id = ?').run(pinned ? 1 : 0, id).changes === 0) throw driverNotFound(id);
  }

  /** Re-hash every stored object; one entry per row whose object is missing, resized or altered. */
  verify(): Damage[] {
    const out: Damage[] = [];
    const objects = this.db.prepare('SELECT sha256, size FROM objects ORDER BY sha256').all() as { sha256: string; size: number }[];
    const rowsOf = this.db.prepare('SELECT id FROM files WHERE sha256 = ? ORDER BY id');
    for (const o of objects) {
      const path = this.objectPath(o);
      let problem: string | undefined;
      if (!existsSync(path)) problem = `object ${path} is missing`;
      else {
        const h = hashFile(path);
        if (h.size !== o.size) problem = `object ${path} has ${h.size} bytes, ${o.size} were stored`;
        else if (h.sha256 !== o.sha256) problem = `object ${path} is damaged: its sha256 is now ${h.sha256}`;
      }
      if (problem) for (const r of rowsOf.all(o.sha256) as { id: number }[]) out.push({ id: r.id, sha256: o.sha256, problem });
    }
    return out;
  }

  /** Bytes held by stored objects. */
  totalSize(): number {
    return (this.db.prepare('SELECT coalesce(sum(size), 0) AS n FROM objects').get() as { n: number }).n;
  }

  /**
   * Evict least-recently-used objects (and their rows) until the store holds
   * at most maxBytes. An object any pinned row refers to is never evicted, even
   * if that leaves the store above the limit.
   */
  gc(maxBytes: number): DriverFile[] {
    const evicted: DriverFile[] = [];
    let total = this.totalSize();
    if (total <= maxBytes) return evicted;
    const candidates = this.db.prepare(`SELECT o.sha256, o.size, max(coalesce(f.last_used, f.imported_at)) AS used
      FROM objects o LEFT JOIN files f ON f.sha256 = o.sha256
      GROUP BY o.sha256 HAVING coalesce(max(f.pinned), 0) = 0
      ORDER BY used, o.stored_at, o.sha256`).all() as { sha256: string; size: number }[];
    for (const c of candidates) {
      if (total <= maxBytes) break;
      const rows = (this.db.prepare(`${SELECT} WHERE f.sha256 = ? ORDER BY f.id`).all(c.sha256) as Row[]).map(toFile);
      this.db.transaction(() => {
        this.db.prepare('DELETE FROM files WHERE sha256 = ?').run(c.sha256);
        this.db.prepare('DELETE FROM objects WHERE sha256 = ?').run(c.sha256);
      })();
      rmSync(this.objectPath(c), { force: true });
      evicted.push(...rows);
      total -= c.size;
    }
    return evicted;
  }

  close(): void { this.db.close(); }
}

