// The API's bearer token: 32 random bytes (hex) in $FERRY_HOME/api-token,
// mode 0600, made on the first start and reused after. Whoever can read the
// file can drive the service, so a file open to group or others is refused
// rather than silently tightened: the token may already have leaked.
// The agents' enrolment token ($FERRY_HOME/enrol-token) is kept the same way.
import { randomBytes } from 'node:crypto';
import { link, lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ferryHome } from '../catalog/db.js';
import { apiTokenInvalid, apiTokenUnsafe, ferryHomeNotWritable, type TokenKind } from '../errors.js';

export const TOKEN_FILE = 'api-token';
export const ENROL_TOKEN_FILE = 'enrol-token';
const FILES: Record<TokenKind, string> = { api: TOKEN_FILE, enrol: ENROL_TOKEN_FILE };
const TOKEN_RE = /^[0-9a-f]{64}$/;

export interface ApiToken { token: string; path: string; created: boolean }

async function readToken(path: string, kind: TokenKind): Promise<string> {
  const st = await lstat(path);
  if (!st.isFile()) throw apiTokenInvalid(path, 'is not a regular file', kind);
  if (st.mode & 0o077) throw apiTokenUnsafe(path, st.mode, kind);
  if (process.getuid && st.uid !== process.getuid()) throw apiTokenInvalid(path, `belongs to uid ${st.uid}, not to this user`, kind);
  const token = (await readFile(path, 'utf8')).trim();
  if (!TOKEN_RE.test(token)) throw apiTokenInvalid(path, 'does not hold a token (64 hex digits)', kind);
  return token;
}

/** The token of $FERRY_HOME (or `home`), created on first use: the API token, or the agents' enrolment token. */
export async function loadOrCreateToken(home = ferryHome(), kind: TokenKind = 'api'): Promise<ApiToken> {
  const path = join(home, FILES[kind]);
  try {
    return { token: await readToken(path, kind), path, created: false };
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
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return { token: await readToken(path, kind), path, created: false };
    throw ferryHomeNotWritable(home, (e as NodeJS.ErrnoException).code ?? (e as Error).message);
  } finally {
    await rm(tmp, { force: true });
  }
}
