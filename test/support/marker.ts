// The guests' boot marker, read by the tests' own regex: a boot is judged
// from the serial log itself, never from src/verify/boot.ts's parse of it.
import assert from 'node:assert/strict';

const MARKER = /FERRY-BOOT-OK root=(\S+) host=(\S+)((?: [a-z]+=\S*)*)/;

export interface Marker { root: string; host: string; fields: Record<string, string> }

/** The marker's root UUID, hostname and further key=value words; fails the test (with the log's tail) when there is none. */
export function readMarker(serialLog: string, what: string): Marker {
  const m = MARKER.exec(serialLog);
  assert.ok(m, `${what}: no boot marker on the serial console; its tail:\n${serialLog.slice(-2000)}`);
  const fields = Object.fromEntries(m[3].trim().split(' ').filter(Boolean).map(kv => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  return { root: m[1], host: m[2], fields };
}
