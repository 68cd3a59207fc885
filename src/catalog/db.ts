// Ferry's own database: one embedded SQLite file, $FERRY_HOME/ferry.db.
//
// The schema grows by numbered migrations kept here in code; PRAGMA
// user_version records how many ran. A later feature (the job store) appends
// a migration and never edits one that has shipped, so every existing
// database walks the same path to the current schema.
import { mkdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { FerryError, ferryHomeNotWritable } from '../errors.js';
import { versionMatches, kernelMatches, type VersionFilter } from './version.js';

export type Db = Database.Database;

/** FERRY_HOME, else $XDG_DATA_HOME/ferry, else ~/.local/share/ferry. */
export function ferryHome(): string {
  if (process.env.FERRY_HOME) return process.env.FERRY_HOME;
  const data = process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
  return join(data, 'ferry');
}

/** Each entry runs once, in order, inside a transaction; append, never edit. */
const MIGRATIONS: string[] = [
  // 1: the image catalog (issue 5)
  `CREATE TABLE images (
     id INTEGER PRIMARY KEY,
     name TEXT NOT NULL UNIQUE,
     -- an absolute path or a URL (never a secret: those stay in the files named in credentials)
     source TEXT NOT NULL,
     kind TEXT NOT NULL,
     -- JSON: the secret file paths a network source was added with
     credentials TEXT,
     added_at TEXT NOT NULL,
     -- JSON: the identity the stored report belongs to (identity.ts)
     identity TEXT NOT NULL,
     inspected_at TEXT NOT NULL,
     report TEXT NOT NULL
   );
   CREATE TABLE image_tags (
     image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
     tag TEXT NOT NULL,
     PRIMARY KEY (image_id, tag)
   );
   -- searchable facts, rebuilt from the report whenever it is
   CREATE TABLE image_os (
     image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
     idx INTEGER NOT NULL,
     type TEXT NOT NULL,
     distro TEXT,
     name TEXT,
     version TEXT,
     patch_level TEXT,
     -- the most precise comparable version: 12.7 for Debian 12.7, 10.0.19045 for Windows 10 build 19045
     match_version TEXT,
     arch TEXT,
     firmware TEXT,
     PRIMARY KEY (image_id, idx)
   );
   CREATE TABLE image_kernels (
     image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
     os_idx INTEGER NOT NULL,
     version TEXT NOT NULL
   );
   CREATE TABLE image_drivers (
     image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
     os_idx INTEGER NOT NULL,
     -- lower case, '-' as '_'
     name TEXT NOT NULL,
     -- storage, network (Linux modules) or service (Windows drivers and services)
     kind TEXT NOT NULL,
     PRIMARY KEY (image_id, os_idx, name, kind)
   );
   CREATE INDEX image_drivers_name ON image_drivers(name);
   CREATE INDEX image_tags_tag ON image_tags(tag);`,
  // 2: the job service (issue 7): jobs, their checkpointed steps, logs, and the
  // resources a running job holds (reclaimed after its runner died)
  `CREATE TABLE jobs (
     id TEXT PRIMARY KEY,
     state TEXT NOT NULL,
     -- JSON JobSpec (credentials only as secret file paths)
     spec TEXT NOT NULL,
     source_host TEXT NOT NULL,
     -- JSON {code, message, exitCode}
     error TEXT,
     result TEXT,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     -- host:pid:start time of the runner process while the job runs
     runner TEXT,
     cancel_requested INTEGER NOT NULL DEFAULT 0
   );
   CREATE INDEX jobs_state ON jobs(state);
   CREATE TABLE job_steps (
     job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     idx INTEGER NOT NULL,
     name TEXT NOT NULL,
     state TEXT NOT NULL,
     started_at TEXT,
     ended_at TEXT,
     checkpoint TEXT,
     progress TEXT,
     PRIMARY KEY (job_id, idx)
   );
   CREATE TABLE job_logs (
     job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     n INTEGER NOT NULL,
     at TEXT NOT NULL,
     line TEXT NOT NULL,
     PRIMARY KEY (job_id, n)
   );
   CREATE TABLE job_resources (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
     kind TEXT NOT NULL,
     res_id TEXT NOT NULL,
     pid INTEGER,
     detail TEXT,
     held_at TEXT NOT NULL
   );
   CREATE INDEX job_resources_job ON job_resources(job_id);`,
  // 3: the job runners that are up (ferry serve, ferry jobs run-worker), so
  // that `ferry jobs submit --wait` can tell when nothing will ever run a job
  `CREATE TABLE job_runners (
     id TEXT PRIMARY KEY,
     started_at TEXT NOT NULL,
     seen_at TEXT NOT NULL
   );`,
  // 4: the machine registry (src/machines/registry.ts): physical machines that
  // booted the Ferry agent, their MACs, their history and the agent's work
  `CREATE TABLE machines (
     id TEXT PRIMARY KEY,
     -- lower case; NULL when the firmware gives none (or a placeholder such as all zeros)
     smbios_uuid TEXT UNIQUE,
     serial TEXT,
     state TEXT NOT NULL,
     -- JSON: the agent's last inventory
     inventory TEXT NOT NULL,
     created_at TEXT NOT NULL,
     updated_at TEXT NOT NULL,
     last_seen_at TEXT,
     peer TEXT,
     -- the URL the agent reached the server at (its register request's Host): where a deployed system reports its first boot
     server_url TEXT,
     -- hex SHA-256 of the agent token issued at the last registration (never the token)
     agent_token_hash TEXT,
     -- hex SHA-256 of the one-time token the deployed system reports its first boot with
     boot_token_hash TEXT,
     boot_target TEXT NOT NULL DEFAULT 'agent',
     -- the job that holds the machine while it is capturing or deploying, and its image
     job_id TEXT,
     image TEXT,
     -- JSON: the work the agent is handed (an export's PSK only as a 0600 file path, psk_file)
     work TEXT
   );
   CREATE TABLE machine_macs (
     mac TEXT PRIMARY KEY,
     machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE
   );
   CREATE INDEX machine_macs_machine ON machine_macs(machine_id);
   CREATE TABLE machine_history (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
     at TEXT NOT NULL,
     event TEXT NOT NULL,
     state TEXT NOT NULL,
     image TEXT,
     job_id TEXT,
     detail TEXT
   );
   CREATE INDEX machine_history_machine ON machine_history(machine_id);
   -- the agent's last status per ticket ('' for the one without: booting-disk)
   CREATE TABLE machine_status (
     machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
     ticket TEXT NOT NULL,
     state TEXT NOT NULL,
     message TEXT,
     at TEXT NOT NULL,
     PRIMARY KEY (machine_id, ticket)
   );`,
  // how `ferry factory build` made an image: its recipe, as JSON (issue 15)
  `ALTER TABLE images ADD COLUMN recipe TEXT;`,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

function migrate(db: Db): void {
  const at = db.pragma('user_version', { simple: true }) as number;
  if (at > MIGRATIONS.length) {
    throw ferryHomeNotWritable(db.name, `it was written by a newer Ferry (schema ${at}, this one knows ${MIGRATIONS.length})`);
  }
  for (let v = at; v < MIGRATIONS.length; v++) {
    // IMMEDIATE, and the version read again inside: two processes opening a new
    // database at once (ferry serve and ferry jobs submit) must not both run a step
    db.transaction(() => {
      if ((db.pragma('user_version', { simple: true }) as number) !== v) return;
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
}

/** SQL functions the searches use: version comparisons take dpkg ordering, which SQLite does not have. */
function registerFunctions(db: Db): void {
  const parse = (s: string) => JSON.parse(s) as VersionFilter;
  db.function('version_matches', { deterministic: true },
    (value: unknown, filter: unknown) => versionMatches(value as string | null, parse(filter as string)) ? 1 : 0);
  db.function('kernel_matches', { deterministic: true },
    (value: unknown, filter: unknown) => kernelMatches(value as string | null, parse(filter as string)) ? 1 : 0);
}

/** Open (creating if need be) the database at $FERRY_HOME/ferry.db, migrated to the current schema. */
export function openDb(home = ferryHome()): Db {
  try {
    mkdirSync(home, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw ferryHomeNotWritable(home, (e as NodeJS.ErrnoException).code ?? (e as Error).message);
  }
  if (!statSync(home).isDirectory()) throw ferryHomeNotWritable(home, 'it is not a directory');
  const path = join(home, 'ferry.db');
  let db: Db;
  try {
    db = new Database(path);
    db.pragma('journal_mode = WAL');
    // other ferry processes (a search refreshing an image) may hold the write lock for a moment
    db.pragma('busy_timeout = 10000');
    db.pragma('foreign_keys = ON');
    migrate(db);
  } catch (e) {
    if (e instanceof FerryError) throw e;
    throw ferryHomeNotWritable(home, (e as Error).message);
  }
  registerFunctions(db);
  return db;
}
