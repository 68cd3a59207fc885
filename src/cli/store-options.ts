// --store and --store-password-file, shared by serve, worker, workers and store.
import type { Argv } from 'yargs';
import { storeLocation, type StoreLocation } from '../store/connection.js';

export interface StoreArgs { store?: string; 'store-password-file'?: string }

export function storeOptions<T>(y: Argv<T>): Argv<T & StoreArgs> {
  return y
    .option('store', { type: 'string', describe: 'the job store: postgres://USER@HOST[:PORT]/DB[?sslmode=verify-full&sslrootcert=CA.pem] or sqlite:PATH (default: FERRY_STORE, else $FERRY_HOME/ferry.db)' })
    .option('store-password-file', { type: 'string', describe: "a 0600 file holding the database user's password (else PGPASSFILE or ~/.pgpass); never put it in the URL" }) as Argv<T & StoreArgs>;
}

export const locationOf = (a: StoreArgs): StoreLocation => storeLocation({ store: a.store, passwordFile: a['store-password-file'] });
