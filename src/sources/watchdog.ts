// Watching a network source while it is read. qemu's nbd driver reconnects
// by itself within reconnect-delay, but libiscsi retries a lost iSCSI
// connection forever, so a vanished server would hang a conversion. The
// watchdog gives both the same bounded behaviour: while the endpoint does not
// answer it tries again with backoff (1, 2, 4, 8 s apart), says so in the
// progress, and when the window (FERRY_RECONNECT_SECONDS) has run out it cuts
// the source's daemon off, so pending reads fail at once and the step that
// waited on them ends; convert then reports SOURCE_CONNECTION_LOST.
// While the source's daemon keeps receiving bytes the connection is plainly
// alive and nothing is probed; only a daemon that has gone quiet gets a TCP
// connect (which a server may log as a client that went away).
// Nothing here may use the libuv thread pool (fs.promises, dns.lookup): reads
// of the hung source can hold all of its threads, and the watchdog is what
// frees them.
import type { ProgressSink } from '../util/progress.js';
import type { Scope } from '../util/scope.js';
import { describeEndpoint, type Endpoint } from './endpoint.js';
import { connectionLost, reconnectSeconds, tryConnect, whereOf, withAddress, type NetworkEndpoint } from './network.js';

/** how often a healthy connection is looked at: the daemon's read count, or a TCP connect when that stood still */
const HEALTHY_POLL_MS = 3000;
const MAX_BACKOFF_MS = 8000;
/** growth of the daemon's read count that proves data arrives: far more than the FUSE request headers it also reads while stuck */
const FLOWING_BYTES = 256 * 1024;

export interface WatchedSource {
  /** bytes the source's daemon has read so far (undefined: unknown) */
  readBytes(): Promise<number | undefined>;
  /** stop it at once, so that waiting reads fail */
  cutOff(): Promise<void>;
}

export function watchConnection(scope: Scope, ep: NetworkEndpoint, progress: ProgressSink | undefined, source: WatchedSource): void {
  const windowMs = reconnectSeconds() * 1000;
  const where = `${whereOf(ep)} (${describeEndpoint(ep)})`;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let lostAt = 0, attempt = 0, lastRead: number | undefined;
  // the probe connects by address: a later name lookup would wait in the thread pool behind the hung reads
  let probe = ep;
  void withAddress(ep).then(e => { probe = e; });

  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(() => void check(), ms);
    timer.unref(); // never what keeps the process alive
  };
  const check = async () => {
    const read = await source.readBytes();
    const flowing = !lostAt && read !== undefined && lastRead !== undefined && read - lastRead >= FLOWING_BYTES;
    lastRead = read;
    if (flowing) return schedule(HEALTHY_POLL_MS);
    const why = await tryConnect(probe, 2000);
    if (stopped) return;
    if (!why) {
      if (lostAt) progress?.note(`connection to ${where} is back after ${Math.round((Date.now() - lostAt) / 1000)} s`);
      lostAt = 0; attempt = 0;
      return schedule(HEALTHY_POLL_MS);
    }
    if (!lostAt) lostAt = Date.now();
    attempt++;
    const elapsed = Date.now() - lostAt;
    if (elapsed >= windowMs) {
      progress?.note(`gave up on ${where} after ${attempt} attempts in ${Math.round(elapsed / 1000)} s: ${why}`);
      stopped = true;
      await source.cutOff();
      return;
    }
    progress?.note(`lost the connection to ${where} (${why}); reconnecting, attempt ${attempt}, ${Math.round(elapsed / 1000)} of ${windowMs / 1000} s`);
    schedule(Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (attempt - 1), Math.max(250, windowMs - elapsed)));
  };

  schedule(HEALTHY_POLL_MS);
  scope.defer(`connection watch on ${where}`, async () => { stopped = true; if (timer) clearTimeout(timer); });
}

/**
 * Run a command that reads network sources; when it fails because one of
 * them stopped answering (its reconnect window ran out), say that instead
 * of the I/O error some tool met.
 */
export async function reportingLostSources<T>(endpoints: Endpoint[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    for (const ep of endpoints) {
      if (ep.kind === 'file') continue;
      const lost = await connectionLost(ep, e);
      if (lost) throw lost;
    }
    throw e;
  }
}
