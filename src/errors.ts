// Typed errors: every failure a user can meet has a code, an exit status and
// a sentence saying what to do next. The CLI prints `code: message` and exits.

export class FerryError extends Error {
  readonly code: string;
  readonly exitCode: number;
  readonly details: Record<string, unknown>;
  constructor(code: string, exitCode: number, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'FerryError';
    this.code = code;
    this.exitCode = exitCode;
    this.details = details;
  }
}

// Exit codes are grouped: 2 usage, 3 source, 4 target, 5 fit, 6 verify, 7 tool, 8 permission, 130 interrupted.
export const usageError = (msg: string) => new FerryError('USAGE', 2, msg);

export const sourceMissing = (path: string) =>
  new FerryError('SOURCE_MISSING', 3, `source ${path} does not exist; check the path`, { path });

export const notADiskImage = (path: string, why: string) =>
  new FerryError('NOT_A_DISK_IMAGE', 3, `${path} is not a usable disk image (${why}); give a raw, qcow2, vmdk, vhd, vhdx or vdi disk`, { path });

export const corruptImage = (path: string, why: string) =>
  new FerryError('CORRUPT_IMAGE', 3, `${path} could not be opened as a disk image: ${why}; check the file with 'qemu-img check'`, { path });

export const targetExists = (path: string) =>
  new FerryError('TARGET_EXISTS', 4, `target ${path} already exists; pass --force to replace it`, { path });

export const targetNotWritable = (dir: string, why: string) =>
  new FerryError('TARGET_NOT_WRITABLE', 4, `cannot write the target in ${dir}: ${why}`, { dir });

export const targetNoSpace = (dir: string, needed: number, free: number) =>
  new FerryError('TARGET_NO_SPACE', 4,
    `${dir} has ${free} bytes free but the target needs about ${needed}; free space or choose another directory`,
    { dir, needed, free });

export const unsupportedFormat = (format: string, allowed: readonly string[]) =>
  new FerryError('UNSUPPORTED_FORMAT', 2, `format '${format}' is not supported; use one of ${allowed.join(', ')}`, { format });

export const doesNotFit = (needed: number, size: number) =>
  new FerryError('DOES_NOT_FIT', 5,
    `the data needs at least ${needed} bytes but --size gives ${size}; choose --size ${Math.ceil(needed / 2 ** 20)}M or more`,
    { needed, size });

export const notRoot = () =>
  new FerryError('NOT_ROOT', 8, 'ferry needs root for loop devices and mounts; run it with sudo or as root');

export const interrupted = (signal: string) =>
  new FerryError('INTERRUPTED', signal === 'SIGTERM' ? 143 : 130, `stopped by ${signal}; the partial target was removed and the source is unchanged`, { signal });

export const verifyFailed = (differences: string[]) =>
  new FerryError('VERIFY_FAILED', 6, `target differs from source in ${differences.length} place(s):\n  ${differences.slice(0, 50).join('\n  ')}`, { differences });

export const unsupportedEndpoint = (url: string, why: string) =>
  new FerryError('UNSUPPORTED_ENDPOINT', 2, `cannot use ${url}: ${why}`, { url });

export class ToolError extends FerryError {
  constructor(readonly tool: string, readonly args: readonly string[], readonly stderr: string, exitCode: number | undefined) {
    super('TOOL_FAILED', 7, `${tool} failed${exitCode === undefined ? '' : ` (exit ${exitCode})`}: ${stderr.trim().split('\n').slice(-3).join(' | ') || 'no message'}`,
      { tool, exitCode });
  }
}
