// The job service's tables as Kysely sees them, and their one set of
// migrations, written with Kysely's schema builder so that the same steps run
// on SQLite and on PostgreSQL. The job tables match the embedded database's
// (catalog/db.ts migrations 2 and 3, which an existing ferry.db already has:
// hence IF NOT EXISTS); the fleet's own tables (workers, their leftovers) are
// new on both. Times are ISO-8601 text in UTC on both, so that they compare as
// strings and move between the stores unchanged.
import { sql, type ColumnDefinitionBuilder, type Generated, type Kysely, type Migration, type MigrationProvider } from 'kysely';

export interface JobsTable {
  id: string; state: string; spec: string; source_host: string; error: string | null; result: string | null;
  created_at: string; updated_at: string; attempts: number; runner: string | null; cancel_requested: number;
}
export interface JobStepsTable {
  job_id: string; idx: number; name: string; state: string; started_at: string | null; ended_at: string | null;
  checkpoint: string | null; progress: string | null;
}
export interface JobLogsTable { job_id: string; n: number; at: string; line: string }
export interface JobResourcesTable {
  seq: Generated<number>; job_id: string; kind: string; res_id: string; pid: number | null; detail: string | null; held_at: string;
}
export interface JobRunnersTable { id: string; started_at: string; seen_at: string }
export interface WorkersTable {
  name: string; host: string; pid: number; tags: string; version: string; concurrency: number; per_host: number;
  started_at: string; heartbeat_at: string;
}
/** What a worker's job held on its host when another worker took the job over: undone when that worker comes back. */
export interface WorkerLeftoversTable {
  seq: Generated<number>; worker: string; job_id: string; kind: string; res_id: string; pid: number | null; detail: string | null;
}

/** The image catalog (catalog/db.ts migrations 1 and 5, the embedded ferry.db's own): JSON as text, times as ISO text. */
export interface ImagesTable {
  id: Generated<number>; name: string; source: string; kind: string; credentials: string | null; added_at: string;
  identity: string; inspected_at: string; report: string; recipe: string | null;
}
export interface ImageTagsTable { image_id: number; tag: string }
export interface ImageOsTable {
  image_id: number; idx: number; type: string; distro: string | null; name: string | null; version: string | null;
  patch_level: string | null; match_version: string | null; arch: string | null; firmware: string | null;
}
export interface ImageKernelsTable { image_id: number; os_idx: number; version: string }
export interface ImageDriversTable { image_id: number; os_idx: number; name: string; kind: string }
/**
 * The substitute-file cache's version database (drivers/store.ts: objects, files). The embedded
 * installation keeps it in drivers-db/drivers.db beside the objects themselves; the shared store holds
 * its records as driver_objects and driver_files (the object files stay on the storage they are on).
 */
export interface DriverObjectsTable { sha256: string; size: number; stored_at: string }
export interface DriverFilesTable {
  id: Generated<number>; sha256: string; component: string; os_family: string; os_release: string; version: string; variant: string;
  arch: string; patch_levels: string; container: string; container_version: string; path_in_container: string;
  pinned: number; last_used: string | null; imported_at: string;
}

export interface StoreDb {
  jobs: JobsTable; job_steps: JobStepsTable; job_logs: JobLogsTable; job_resources: JobResourcesTable;
  job_runners: JobRunnersTable; workers: WorkersTable; worker_leftovers: WorkerLeftoversTable;
  images: ImagesTable; image_tags: ImageTagsTable; image_os: ImageOsTable; image_kernels: ImageKernelsTable; image_drivers: ImageDriversTable;
  driver_objects: DriverObjectsTable; driver_files: DriverFilesTable;
}

export type Dialect = 'sqlite' | 'postgres';

/** Each migration once, in order (Kysely's Migrator records them in kysely_migration); append, never edit. */
export function migrations(dialect: Dialect): Record<string, Migration> {
  // an auto-numbered key: INTEGER PRIMARY KEY AUTOINCREMENT on SQLite, a serial on PostgreSQL
  const serial = dialect === 'sqlite' ? 'integer' : 'serial';
  return {
    '001-jobs': {
      async up(db: Kysely<unknown>) {
        await db.schema.createTable('jobs').ifNotExists()
          .addColumn('id', 'text', c => c.primaryKey())
          .addColumn('state', 'text', c => c.notNull())
          .addColumn('spec', 'text', c => c.notNull())
          .addColumn('source_host', 'text', c => c.notNull())
          .addColumn('error', 'text').addColumn('result', 'text')
          .addColumn('created_at', 'text', c => c.notNull())
          .addColumn('updated_at', 'text', c => c.notNull())
          .addColumn('attempts', 'integer', c => c.notNull().defaultTo(0))
          .addColumn('runner', 'text')
          .addColumn('cancel_requested', 'integer', c => c.notNull().defaultTo(0))
          .execute();
        await db.schema.createIndex('jobs_state').ifNotExists().on('jobs').column('state').execute();
        await db.schema.createTable('job_steps').ifNotExists()
          .addColumn('job_id', 'text', c => c.notNull().references('jobs.id').onDelete('cascade'))
          .addColumn('idx', 'integer', c => c.notNull())
          .addColumn('name', 'text', c => c.notNull())
          .addColumn('state', 'text', c => c.notNull())
          .addColumn('started_at', 'text').addColumn('ended_at', 'text')
          .addColumn('checkpoint', 'text').addColumn('progress', 'text')
          .addPrimaryKeyConstraint('job_steps_pk', ['job_id', 'idx'])
          .execute();
        await db.schema.createTable('job_logs').ifNotExists()
          .addColumn('job_id', 'text', c => c.notNull().references('jobs.id').onDelete('cascade'))
          .addColumn('n', 'integer', c => c.notNull())
          .addColumn('at', 'text', c => c.notNull())
          .addColumn('line', 'text', c => c.notNull())
          .addPrimaryKeyConstraint('job_logs_pk', ['job_id', 'n'])
          .execute();
        await db.schema.createTable('job_resources').ifNotExists()
          .addColumn('seq', serial, c => (dialect === 'sqlite' ? c.primaryKey().autoIncrement() : c.primaryKey()))
          .addColumn('job_id', 'text', c => c.notNull().references('jobs.id').onDelete('cascade'))
          .addColumn('kind', 'text', c => c.notNull())
          .addColumn('res_id', 'text', c => c.notNull())
          .addColumn('pid', 'integer').addColumn('detail', 'text')
          .addColumn('held_at', 'text', c => c.notNull())
          .execute();
        await db.schema.createIndex('job_resources_job').ifNotExists().on('job_resources').column('job_id').execute();
        await db.schema.createTable('job_runners').ifNotExists()
          .addColumn('id', 'text', c => c.primaryKey())
          .addColumn('started_at', 'text', c => c.notNull())
          .addColumn('seen_at', 'text', c => c.notNull())
          .execute();
      },
    },
    '002-workers': {
      async up(db: Kysely<unknown>) {
        await db.schema.createTable('workers').ifNotExists()
          .addColumn('name', 'text', c => c.primaryKey())
          .addColumn('host', 'text', c => c.notNull())
          .addColumn('pid', 'integer', c => c.notNull())
          // JSON list
          .addColumn('tags', 'text', c => c.notNull())
          .addColumn('version', 'text', c => c.notNull())
          .addColumn('concurrency', 'integer', c => c.notNull())
          .addColumn('per_host', 'integer', c => c.notNull())
          .addColumn('started_at', 'text', c => c.notNull())
          .addColumn('heartbeat_at', 'text', c => c.notNull())
          .execute();
        await db.schema.createTable('worker_leftovers').ifNotExists()
          .addColumn('seq', serial, c => (dialect === 'sqlite' ? c.primaryKey().autoIncrement() : c.primaryKey()))
          .addColumn('worker', 'text', c => c.notNull())
          .addColumn('job_id', 'text', c => c.notNull())
          .addColumn('kind', 'text', c => c.notNull())
          .addColumn('res_id', 'text', c => c.notNull())
          .addColumn('pid', 'integer').addColumn('detail', 'text')
          .execute();
        await db.schema.createIndex('jobs_runner').ifNotExists().on('jobs').column('runner').execute();
      },
    },
    '003-catalog': {
      async up(db: Kysely<unknown>) {
        // an embedded ferry.db has these from catalog/db.ts already (IF NOT EXISTS); a shared store gets them here
        const idKey = serial;
        await db.schema.createTable('images').ifNotExists()
          .addColumn('id', idKey, c => c.primaryKey())
          .addColumn('name', 'text', c => c.notNull().unique())
          .addColumn('source', 'text', c => c.notNull())
          .addColumn('kind', 'text', c => c.notNull())
          .addColumn('credentials', 'text')
          .addColumn('added_at', 'text', c => c.notNull())
          .addColumn('identity', 'text', c => c.notNull())
          .addColumn('inspected_at', 'text', c => c.notNull())
          .addColumn('report', 'text', c => c.notNull())
          .addColumn('recipe', 'text')
          .execute();
        const imageRef = (c: ColumnDefinitionBuilder) => c.notNull().references('images.id').onDelete('cascade');
        await db.schema.createTable('image_tags').ifNotExists()
          .addColumn('image_id', 'integer', imageRef).addColumn('tag', 'text', c => c.notNull())
          .addPrimaryKeyConstraint('image_tags_pk', ['image_id', 'tag']).execute();
        await db.schema.createTable('image_os').ifNotExists()
          .addColumn('image_id', 'integer', imageRef).addColumn('idx', 'integer', c => c.notNull())
          .addColumn('type', 'text', c => c.notNull())
          .addColumn('distro', 'text').addColumn('name', 'text').addColumn('version', 'text').addColumn('patch_level', 'text')
          .addColumn('match_version', 'text').addColumn('arch', 'text').addColumn('firmware', 'text')
          .addPrimaryKeyConstraint('image_os_pk', ['image_id', 'idx']).execute();
        await db.schema.createTable('image_kernels').ifNotExists()
          .addColumn('image_id', 'integer', imageRef).addColumn('os_idx', 'integer', c => c.notNull())
          .addColumn('version', 'text', c => c.notNull()).execute();
        await db.schema.createTable('image_drivers').ifNotExists()
          .addColumn('image_id', 'integer', imageRef).addColumn('os_idx', 'integer', c => c.notNull())
          .addColumn('name', 'text', c => c.notNull()).addColumn('kind', 'text', c => c.notNull())
          .addPrimaryKeyConstraint('image_drivers_pk', ['image_id', 'os_idx', 'name', 'kind']).execute();
        await db.schema.createIndex('image_drivers_name').ifNotExists().on('image_drivers').column('name').execute();
        await db.schema.createIndex('image_tags_tag').ifNotExists().on('image_tags').column('tag').execute();
        // the embedded store's driver records live in drivers-db/drivers.db, beside their objects
        if (dialect === 'sqlite') return;
        await db.schema.createTable('driver_objects')
          .addColumn('sha256', 'text', c => c.primaryKey())
          .addColumn('size', 'bigint', c => c.notNull())
          .addColumn('stored_at', 'text', c => c.notNull()).execute();
        await db.schema.createTable('driver_files')
          .addColumn('id', 'serial', c => c.primaryKey())
          .addColumn('sha256', 'text', c => c.notNull().references('driver_objects.sha256'))
          .addColumn('component', 'text', c => c.notNull())
          .addColumn('os_family', 'text', c => c.notNull().check(sql`os_family IN ('linux', 'windows')`))
          .addColumn('os_release', 'text', c => c.notNull().defaultTo(''))
          .addColumn('version', 'text', c => c.notNull())
          .addColumn('variant', 'text', c => c.notNull().defaultTo(''))
          .addColumn('arch', 'text', c => c.notNull())
          .addColumn('patch_levels', 'text', c => c.notNull().defaultTo('[]'))
          .addColumn('container', 'text', c => c.notNull())
          .addColumn('container_version', 'text', c => c.notNull().defaultTo(''))
          .addColumn('path_in_container', 'text', c => c.notNull())
          .addColumn('pinned', 'integer', c => c.notNull().defaultTo(0))
          .addColumn('last_used', 'text')
          .addColumn('imported_at', 'text', c => c.notNull())
          .addUniqueConstraint('driver_files_key', ['sha256', 'component', 'os_family', 'os_release', 'version', 'variant', 'arch', 'container', 'container_version', 'path_in_container'])
          .execute();
        await db.schema.createIndex('driver_files_component').on('driver_files').columns(['component', 'os_family']).execute();
      },
    },
  };
}

export const migrationProvider = (dialect: Dialect): MigrationProvider => ({ getMigrations: async () => migrations(dialect) });

/** The database's clock as our ISO text, offset by ms: hosts' clocks may differ, the database's is the one judge. */
export function dbNow(dialect: Dialect, offsetMs = 0) {
  if (dialect === 'postgres') {
    return sql<string>`to_char((now() + ${`${offsetMs} milliseconds`}::interval) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
  }
  return sql<string>`strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ${`${offsetMs / 1000} seconds`})`;
}
