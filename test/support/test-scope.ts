// Each test file runs in a node --test process of its own, and two files run at
// once (package.json: --test-concurrency=2). So that the harness guard can tell
// this file's leftovers from the other file's, each process gets, at import:
//   - a marker, FERRY_TEST_MARK=t<pid>, in its environment: every child inherits
//     it (ferry, qemu-storage-daemon --daemonize, tgtd, dnsmasq, qemu, nbdkit
//     keep their parent's environment), so /proc/PID/environ names the owner;
//   - a root dir of its own, $FERRY_TEST_TMP/ferrytests/<marker> (default base
//     /var/tmp), holding TMPDIR and FERRY_TMP (tmp/: ferry's work dirs and
//     mount points), the test's temp dirs (FERRY_TEST_TMP), FERRY_RUN_DIR
//     (run/: a SIGKILLed run is reclaimed only by this file's ferry commands)
//     and the default FERRY_HOME (home/: catalog, job store, drivers-db);
//   - netns/: the network namespaces this file made (test/support/netns.ts).
// A test that sets one of these itself afterwards (process.env.FERRY_HOME = …, or
// env: { FERRY_RUN_DIR } for one command) still gets its own.
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const MARK_VAR = 'FERRY_TEST_MARK';

export interface TestScope {
  /** this process's marker, the value of FERRY_TEST_MARK */
  mark: string;
  /** its root dir (no trailing slash) */
  root: string;
  /** the dir holding every test process's root */
  scopes: string;
}

/** whether a process of this pid exists (EPERM: it does, owned by another user) */
export const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; } };
const mountPoints = () => readFileSync('/proc/self/mounts', 'utf8').split('\n').map(l => l.split(' ')[1]).filter(Boolean);

/** Roots of test processes that are gone and left nothing mounted under them: removed (a killed file's dir). */
function pruneDead(scopes: string): void {
  let names: string[];
  try { names = readdirSync(scopes); } catch { return; }
  const mounts = mountPoints();
  for (const n of names) {
    const pid = Number(/^t(\d+)$/.exec(n)?.[1]);
    if (!pid || alive(pid)) continue;
    const dir = join(scopes, n);
    if (mounts.some(m => m === dir || m.startsWith(`${dir}/`))) continue; // a leak to look at, not to rm -r through
    rmSync(dir, { recursive: true, force: true });
  }
}

function enter(): TestScope {
  const scopes = join(process.env.FERRY_TEST_TMP ?? '/var/tmp', 'ferrytests');
  const mark = `t${process.pid}`;
  const root = join(scopes, mark);
  pruneDead(scopes);
  rmSync(root, { recursive: true, force: true }); // a dead process with our pid: nothing mounted (pruneDead)
  for (const d of ['tmp', 'run', 'home', 'netns']) mkdirSync(join(root, d), { recursive: true, mode: 0o755 });
  process.env[MARK_VAR] = mark;
  process.env.FERRY_TEST_TMP = root;
  process.env.TMPDIR = join(root, 'tmp');
  process.env.FERRY_TMP = join(root, 'tmp');
  process.env.FERRY_RUN_DIR = join(root, 'run');
  process.env.FERRY_HOME = join(root, 'home');
  return { mark, root, scopes };
}

export const testScope: TestScope = enter();

/** The root dir goes once the guard found nothing left in it (never through a mount). */
export function leaveScope(): void {
  const mounts = mountPoints();
  if (mounts.some(m => m.startsWith(`${testScope.root}/`))) return;
  rmSync(testScope.root, { recursive: true, force: true });
}
