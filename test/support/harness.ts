// Shared test helpers: run the real `ferry` binary, hash files, make temp
// dirs, and guard each test file against leftovers.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { leftBehind, machineState, type MachineState } from './guard.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const FERRY = join(ROOT, 'dist', 'src', 'cli', 'main.js');

export interface FerryRun { exitCode: number; stdout: string; stderr: string }

export async function ferry(args: string[], opts: { env?: Record<string, string> } = {}): Promise<FerryRun> {
  const r = await execa('node', [FERRY, ...args], { reject: false, env: opts.env, stdin: 'ignore' });
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

export function ferryProcess(args: string[], opts: { env?: Record<string, string> } = {}): ResultPromise {
  return execa('node', [FERRY, ...args], { reject: false, env: opts.env, stdin: 'ignore' });
}

export { sha256, sha256All } from './hash.js';

/** temp dirs to remove; the guard removes them too, since node:test skips later `after` hooks once one fails */
const tempDirs: string[] = [];
const removeTempDirs = async () => { for (const d of tempDirs.splice(0)) await rm(d, { recursive: true, force: true }); };

/** A temp dir removed after the file's tests; call it at the top level of a test file. */
export async function tempDir(prefix = 'ferrytest-'): Promise<string> {
  const d = await mkdtemp(join(process.env.FERRY_TEST_TMP ?? '/var/tmp', prefix));
  tempDirs.push(d);
  after(removeTempDirs);
  return d;
}

/** Fail the test file if it leaves loop devices, mounts, daemons or work dirs behind. */
export function guardMachine(): void {
  let start: MachineState;
  before(async () => { start = await machineState(); });
  after(async () => {
    await removeTempDirs();
    const left = leftBehind(start, await machineState());
    assert.deepEqual(left, [], `left behind on the machine:\n${left.join('\n')}`);
  });
}

export async function run(cmd: string, args: string[]): Promise<string> {
  return String((await execa(cmd, args)).stdout);
}

export { tmpdir };
