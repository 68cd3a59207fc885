// The one door to external programs: execa with argument arrays, never a shell.
// Failures become ToolError with the program's own last stderr lines.
import { execa, type Options, type ResultPromise } from 'execa';
import { ToolError } from '../errors.js';
import { currentAbortSignal } from './abort.js';

export interface RunOptions {
  input?: string | Buffer;
  cwd?: string;
  env?: Record<string, string>;
  /** accept these exit codes as success */
  okCodes?: number[];
  /** cleanup commands must run even after SIGINT aborted the job */
  ignoreAbort?: boolean;
}

export interface RunResult { stdout: string; stderr: string; exitCode: number }

export async function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const signal = opts.ignoreAbort ? undefined : currentAbortSignal();
  const options: Options = {
    input: opts.input,
    cwd: opts.cwd,
    env: opts.env ? { ...process.env, ...opts.env } : undefined,
    reject: false,
    stripFinalNewline: false,
    cancelSignal: signal,
    forceKillAfterDelay: 3000,
    stdin: opts.input === undefined ? 'ignore' : 'pipe',
  };
  const r = await execa(cmd, args, options);
  if (signal?.aborted) throw signal.reason;
  const ok = r.exitCode === 0 || (opts.okCodes ?? []).includes(r.exitCode ?? -1);
  if (!ok || r.failed && r.exitCode === undefined) {
    const msg = String(r.stderr || '') || (r as { message?: string }).message || '';
    throw new ToolError(cmd, args, msg, r.exitCode);
  }
  return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), exitCode: r.exitCode ?? 0 };
}

/**
 * Start a long-lived child whose output the caller reads live (a booting
 * guest's serial line). The caller owns it and must stop it; it is killed if
 * this process exits first.
 */
export function spawnLive(cmd: string, args: readonly string[]): ResultPromise<{ stdin: 'ignore'; stdout: 'pipe'; stderr: 'pipe'; buffer: false; reject: false; cleanup: true; forceKillAfterDelay: number }> {
  return execa(cmd, args, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe', buffer: false, reject: false, cleanup: true, forceKillAfterDelay: 3000 });
}
