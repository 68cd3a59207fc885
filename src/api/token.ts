// The API's bearer token: 32 random bytes (hex) in $FERRY_HOME/api-token,
// mode 0600, made on the first start and reused after. Whoever can read the
// file can drive the service, so a file open to group or others is refused
// rather than silently tightened: the token may already have leaked.
import { randomBytes } from 'node:crypto';
import { link, lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ferryHome } from '../catalog/db.js';
import { apiTokenInvalid, apiTokenUnsafe, ferryHomeNotWritable } from '../errors.js';

export const TOKEN_FILE = 'api-token';
const TOKEN_RE = /^[0-9a-f]{64}$/;

export interface ApiToken { token: string; path: string; created: boolean }

async function readToken(path: string): Promise<string> {
  const st = await lstat(path);
  if (!st.isFile()) throw apiTokenInvalid(path, 'is not a regular file');
  if (st.mode & 0o077) throw apiTokenUnsafe(path, st.mode);
  if (process.getuid && st.uid !== process.getuid()) throw apiTokenInvalid(path, `belongs to uid ${st.uid}, not to this user`);
  const token = (await readFile(path, 'utf8')).trim();
  if (!TOKEN_RE.test(token)) throw apiTokenInvalid(path, 'does not hold a token (64 hex digits)');
  return token;
}

/** The token of $FERRY_HOME (or `home`), created on first use. */
export async function loadOrCreateToken(home = ferryHome()): Promise<ApiToken> {
  const path = join(home, TOKEN_FILE);
  try {
    return { token: await readToken(path), path, created: false };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  try {
    await mkdir(home, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw ferryHomeNotWritable(home, (e as NodeJS.ErrnoException).code ?? (e as Error).message);
  }
  // written whole under a temporary name, then linked into place: a second
  // `ferry serve` starting at the same moment never reads a half-written file,
  // and link() fails if the other one won, whose token we then take
  const token = randomBytes(32).toString('hex');
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, token + '\n', { mode: 0o600, flag: 'wx' });
    await link(tmp, path);
    return { token, path, created: true };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return { token: await readToken(path), path, created: false };
    throw ferryHomeNotWritable(home, (e as NodeJS.ErrnoException).code ?? (e as Error).message);
  } finally {
    await rm(tmp, { force: true });
  }
}
