// Typed errors: every failure a user can meet has a code, an exit status and
// a sentence saying what to do next. The CLI prints `code: message` and exits.

import { constants as osConstants } from 'node:os';

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

// Exit codes are grouped: 2 usage, 3 source, 4 target, 5 fit, 6 verify, 7 tool, 8 permission,
// 9 network source unreachable, 10 network authentication, 130 interrupted.
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

export const lvmInvalid = (where: string, why: string) =>
  new FerryError('LVM_INVALID', 3, `the LVM physical volume on ${where} cannot be used: ${why}; check it with 'pvck' and 'vgck' on a copy of the disk`, { where, why });

export const lvmPvMissing = (vg: string, pvs: string[]) =>
  new FerryError('LVM_PV_MISSING', 3, `volume group ${vg} also lives on physical volume(s) ${pvs.join(', ')}, which this disk does not hold; convert a disk that holds every PV of the group`, { vg, pvs });

// NTFS: a volume Windows did not close cleanly (dirty, or hibernated by fast start-up) may hold
// changes only in its journal or in hiberfil.sys; a copy of it is not what Windows would see.
export const ntfsNotClean = (partition: number, state: string[]) =>
  new FerryError('NTFS_NOT_CLEAN', 3,
    `partition ${partition}: the NTFS volume is ${state.join(' and ')}; shut Windows down fully (turn off fast start-up, or run 'shutdown /s /t 0') and convert again, or pass --force-ntfs-dirty to copy it as it is`,
    { partition, state });

export const ntfsDamaged = (where: string, why: string) =>
  new FerryError('NTFS_DAMAGED', 3,
    `the NTFS volume on ${where} cannot be read: ${why}; repair a copy of the source (chkdsk /f on Windows, or ntfsfix) and convert that copy`,
    { why });

export const partitionOutsideDisk = (partition: number, endByte: number, diskBytes: number) =>
  new FerryError('PARTITION_OUTSIDE_DISK', 3,
    `partition ${partition} ends at byte ${endByte}, beyond the end of the disk (${diskBytes} bytes): the partition table is damaged or the image was cut short; fix the table (on a copy) or give the whole image`,
    { partition, endByte, diskBytes });

/** what checks (and repairs, on a copy) each kernel file system */
const FS_CHECKER: Record<string, string> = { ext2: 'e2fsck -f', ext3: 'e2fsck -f', ext4: 'e2fsck -f', xfs: 'xfs_repair', btrfs: 'btrfs check' };

// a source file system its own tools or the kernel refuse to read (a bad superblock, a checksum, "Structure needs cleaning")
export const fsDamaged = (type: string, where: string, why: string) =>
  new FerryError('FS_DAMAGED', 3,
    `the ${type} file system on ${where} cannot be read: ${why}; check and repair a copy of the source${FS_CHECKER[type] ? ` (${FS_CHECKER[type]})` : ''} and convert that copy`,
    { type, why });

export const notRoot = () =>
  new FerryError('NOT_ROOT', 8, 'ferry needs root for loop devices and mounts; run it with sudo or as root');

// the shell's convention, 128 + the signal's number: SIGINT 130, SIGTERM 143, SIGHUP 129, SIGQUIT 131
export const interrupted = (signal: NodeJS.Signals) =>
  new FerryError('INTERRUPTED', 128 + (osConstants.signals[signal] ?? 2), `stopped by ${signal}; the partial target was removed and the source is unchanged`, { signal });

export const verifyFailed = (differences: string[]) =>
  new FerryError('VERIFY_FAILED', 6, `target differs from source in ${differences.length} place(s):\n  ${differences.slice(0, 50).join('\n  ')}`, { differences });

export const unsupportedEndpoint = (url: string, why: string) =>
  new FerryError('UNSUPPORTED_ENDPOINT', 2, `cannot use ${url}: ${why}`, { url });

// Network sources. Messages name the host, port, target or export, never a secret.
export const secretFileMissing = (path: string, option: string) =>
  new FerryError('SECRET_FILE_MISSING', 2, `${option} ${path} does not exist or cannot be read`, { path });

export const secretFileUnsafe = (path: string, mode: number, option: string) =>
  new FerryError('SECRET_FILE_UNSAFE', 2,
    `${option} ${path} can be read or written by ${mode & 0o007 ? 'every user' : 'its group'} (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); run 'chmod 600 ${path}' and try again`,
    { path, mode: (mode & 0o777).toString(8) });

export const secretFileInvalid = (path: string, why: string) =>
  new FerryError('SECRET_FILE_INVALID', 2, `secret file ${path} ${why}`, { path });

export const tlsCertsInvalid = (dir: string, why: string) =>
  new FerryError('TLS_CERTS_INVALID', 2,
    `--tls-certs ${dir} ${why}; it must hold ca-cert.pem and, if the server wants a client certificate, client-cert.pem and client-key.pem (mode 600)`, { path: dir });

export const mutualChapUnavailable = (why: string) =>
  new FerryError('MUTUAL_CHAP_UNAVAILABLE', 7, `mutual CHAP cannot be used: ${why}`);

export const sourceUnreachable = (where: string, why: string, details: Record<string, unknown>) =>
  new FerryError('SOURCE_UNREACHABLE', 9, `cannot reach ${where}: ${why}; check the host, the port and that the server runs`, details);

export const sourceConnectionLost = (where: string, why: string, details: Record<string, unknown>) =>
  new FerryError('SOURCE_CONNECTION_LOST', 9,
    `lost the connection to ${where} during the conversion (${why}); the partial target was removed; check that the server runs and convert again`, details);

export const authRequired = (where: string, what: string, details: Record<string, unknown>) =>
  new FerryError('AUTH_REQUIRED', 10, `${where} requires ${what}`, details);

export const authFailed = (what: string, hint: string, details: Record<string, unknown>) =>
  new FerryError('AUTH_FAILED', 10, `authentication failed: ${what}; ${hint}`, details);

export const tlsUnavailable = (where: string, details: Record<string, unknown>) =>
  new FerryError('TLS_UNAVAILABLE', 10, `${where} does not offer TLS; use nbd:// without --tls-psk-file or --tls-certs, or enable TLS on the server`, details);

export const exportMissing = (where: string, name: string, available: string[], details: Record<string, unknown>) =>
  new FerryError('EXPORT_MISSING', 3,
    `${where} has no export '${name}'; ${available.length ? `its exports: ${available.map(e => `'${e}'`).join(', ')}` : 'it lists no exports'}`,
    { ...details, export: name, available });

export const targetMissing = (where: string, iqn: string, available: string[], details: Record<string, unknown>) =>
  new FerryError('ISCSI_TARGET_MISSING', 3,
    `the iSCSI portal ${where} has no target ${iqn}; ${available.length ? `its targets: ${available.join(', ')}` : 'it lists no targets'}`,
    { ...details, target: iqn, available });

export const lunMissing = (where: string, iqn: string, lun: number, available: string[], details: Record<string, unknown>) =>
  new FerryError('LUN_MISSING', 3,
    `iSCSI target ${iqn} at ${where} has no LUN ${lun}; ${available.length ? `its disk LUNs: ${available.join(', ')}` : 'it has no disk LUNs'}`,
    { ...details, target: iqn, lun, available });

export const networkSourceFailed = (where: string, why: string, details: Record<string, unknown>) =>
  new FerryError('NETWORK_SOURCE_FAILED', 3, `could not open ${where}: ${why}`, details);

export class ToolError extends FerryError {
  constructor(readonly tool: string, readonly args: readonly string[], readonly stderr: string, exitCode: number | undefined) {
    super('TOOL_FAILED', 7, `${tool} failed${exitCode === undefined ? '' : ` (exit ${exitCode})`}: ${stderr.trim().split('\n').slice(-3).join(' | ') || 'no message'}`,
      { tool, exitCode });
  }
}

// The image catalog (`ferry images`).
export const imageNotFound = (name: string, known: string[]) =>
  new FerryError('IMAGE_NOT_FOUND', 3,
    `no image named '${name}' in the catalog; ${known.length ? `its images: ${known.join(', ')}` : "it is empty; add one with 'ferry images add SOURCE'"}`,
    { name, known });

export const imageNameTaken = (name: string, source: string) =>
  new FerryError('IMAGE_NAME_TAKEN', 2,
    `the catalog already has an image named '${name}' (${source}); choose another --name or run 'ferry images rm ${name}' first`, { name, source });

export const imageSourceMissing = (name: string, source: string) =>
  new FerryError('IMAGE_SOURCE_MISSING', 3,
    `image '${name}': its source ${source} no longer exists; restore it or run 'ferry images rm ${name}'`, { name, source });

export const badFilter = (option: string, value: string, why: string) =>
  new FerryError('BAD_FILTER', 2, `${option} '${value}' ${why}`, { option, value });

export const ferryHomeNotWritable = (dir: string, why: string) =>
  new FerryError('FERRY_HOME_NOT_WRITABLE', 8,
    `cannot keep the image catalog in ${dir}: ${why}; set FERRY_HOME to a writable directory`, { dir });

// Hardware profiles (drivers-db/profiles, FERRY_PROFILES).
export const unknownProfile = (name: string, known: string[]) =>
  new FerryError('UNKNOWN_PROFILE', 2, `no hardware profile named '${name}'; known profiles: ${known.join(', ')} (see 'ferry profiles list')`, { name, known });

export const invalidProfile = (file: string, why: string) =>
  new FerryError('PROFILE_INVALID', 2, `hardware profile ${file} is not valid: ${why}`, { file });

// The substitute-file cache (`ferry drivers`). DRIVER_MISSING is exit 5, the
// "fit" group: the guest cannot be fitted to its new hardware until the named
// package or medium is imported; nothing was written when it is raised.
export const driverMissing = (what: string, toImport: string, details: Record<string, unknown>) =>
  new FerryError('DRIVER_MISSING', 5,
    `the substitute-file cache has no ${what}; import ${toImport} with 'ferry drivers import CONTAINER' and convert again (nothing was written)`,
    { ...details, import: toImport });

export const driverNotFound = (id: number | string) =>
  new FerryError('DRIVER_NOT_FOUND', 2, `the substitute-file cache has no file with id ${id}; see 'ferry drivers list'`, { id });

export const containerUnreadable = (path: string, why: string) =>
  new FerryError('CONTAINER_UNREADABLE', 3,
    `cannot import ${path}: ${why}; give a .deb, .rpm, .iso, .cab, .zip or .tar file or a directory`, { path });

export const driversDbNotWritable = (dir: string, why: string) =>
  new FerryError('DRIVERS_DB_NOT_WRITABLE', 8,
    `cannot keep the substitute-file cache in ${dir}: ${why}; set FERRY_DRIVERS_DB (or FERRY_HOME) to a writable directory`, { dir });

// The HTTP API (`ferry serve`). Messages name the token file, never the token.
// `kind` tells the API token (API_TOKEN_…) from the agents' enrolment token (ENROL_TOKEN_…).
export type TokenKind = 'api' | 'enrol';
const TOKEN_LABEL: Record<TokenKind, [code: string, label: string]> = { api: ['API_TOKEN', 'API token'], enrol: ['ENROL_TOKEN', 'enrolment token'] };

export const apiTokenUnsafe = (path: string, mode: number, kind: TokenKind = 'api') =>
  new FerryError(`${TOKEN_LABEL[kind][0]}_UNSAFE`, 8,
    `the ${TOKEN_LABEL[kind][1]} file ${path} can be read or written by ${mode & 0o007 ? 'every user' : 'its group'} (mode ${(mode & 0o777).toString(8).padStart(4, '0')}); run 'chmod 600 ${path}' (or delete it to get a new token) and start again`,
    { path, mode: (mode & 0o777).toString(8) });

export const apiTokenInvalid = (path: string, why: string, kind: TokenKind = 'api') =>
  new FerryError(`${TOKEN_LABEL[kind][0]}_INVALID`, 8, `the ${TOKEN_LABEL[kind][1]} file ${path} ${why}; delete it and start again to get a new token`, { path });

export const listenFailed = (address: string, why: string) =>
  new FerryError('LISTEN_FAILED', 2, `cannot listen on ${address}: ${why}; choose another --listen HOST:PORT`, { address });

// The job service (`ferry jobs`, `ferry serve`).
export class SpecInvalidError extends FerryError {
  /** the same shape as jobs/types.ts FieldError */
  constructor(readonly fieldErrors: { field: string; message: string }[], where = 'the job spec') {
    super('SPEC_INVALID', 2, `${where} is not valid:\n  ${fieldErrors.map(f => `${f.field}: ${f.message}`).join('\n  ')}`, { fieldErrors });
  }
}

export const jobNotFound = (id: string) =>
  new FerryError('JOB_NOT_FOUND', 2, `there is no job ${id}; see 'ferry jobs list'`, { id });

export const jobStateConflict = (id: string, state: string, wanted: string) =>
  new FerryError('JOB_STATE_CONFLICT', 2, `job ${id} is ${state}; ${wanted}`, { id, state });

export const jobCancelled = (id: string) =>
  new FerryError('JOB_CANCELLED', 130, `job ${id} was cancelled; its partial target was removed and the source is unchanged; 'ferry jobs retry ${id}' runs it again`, { id });

/** The runner is shutting down: the job stops where it is and resumes at the next start. */
export const jobInterrupted = (id: string) =>
  new FerryError('JOB_INTERRUPTED', 130, `job ${id} was interrupted by the service stopping; it resumes when 'ferry serve' starts again`, { id });

/** `ferry jobs submit --wait` with nothing to run the job: it stays queued for a runner started later. */
export const noJobRunner = (id: string, state: string) =>
  new FerryError('NO_JOB_RUNNER', 9,
    `job ${id} is ${state}, but no job runner is up to run it: start 'ferry serve' or 'ferry jobs run-worker' (the job runs then), or 'ferry jobs cancel ${id}'`, { id, state });

export const jobResumeFailed = (id: string, why: string) =>
  new FerryError('JOB_RESUME_FAILED', 7, `job ${id} could not be resumed: ${why}; 'ferry jobs retry ${id}' starts it again from the beginning`, { id });

// Registration (`ferry register`) and export (`ferry export`). Checked before anything is defined or written.
export const libvirtUnreachable = (uri: string, why: string) =>
  new FerryError('LIBVIRT_UNREACHABLE', 9,
    `cannot connect to libvirt at ${uri}: ${why}; check the URI and that libvirtd (and virtlogd) run there`, { uri });

export const domainExists = (name: string, uri: string) =>
  new FerryError('DOMAIN_EXISTS', 4,
    `${uri} already has a domain named '${name}'; choose another --name (Ferry never replaces a domain)`, { name, uri });

export const diskNotAccessible = (path: string, user: string, dir: string) =>
  new FerryError('DISK_NOT_ACCESSIBLE', 8,
    `libvirt runs QEMU as '${user}', which cannot reach ${path}: ${dir} is not searchable by it; run 'chmod o+x ${dir}' or move the image under /var/lib/libvirt/images`,
    { path, user, dir });

export const unsupportedHardware = (what: string, where: string, hint: string) =>
  new FerryError('UNSUPPORTED_HARDWARE', 2, `${where} has no ${what}; ${hint}`, { what, where });

export const libvirtFailed = (uri: string, action: string, why: string) =>
  new FerryError('LIBVIRT_FAILED', 7, `libvirt at ${uri} could not ${action}: ${why}; nothing was left defined`, { uri, action });

export const ovaInvalid = (path: string, why: string) =>
  new FerryError('OVA_INVALID', 3, `${path} is not a usable OVA: ${why}`, { path });

// The machine registry (`ferry machines`, the agent routes of `ferry serve`).
export const machineNotFound = (id: string) =>
  new FerryError('MACHINE_NOT_FOUND', 2, `there is no machine ${id}; see 'ferry machines list'`, { id });

export const machineBusy = (id: string, state: string, jobId: string | null) =>
  new FerryError('MACHINE_BUSY', 4,
    `machine ${id} is ${state}${jobId ? ` for job ${jobId}` : ''}; wait until that ends (or cancel it)${state === 'discovered' ? ', or until its agent asks for work' : ''}`,
    { id, state, jobId });

/** the agent did not report the wanted state in time (it may be down or unreachable) */
export const agentTimeout = (id: string, what: string, seconds: number) =>
  new FerryError('AGENT_TIMEOUT', 9, `the agent of machine ${id} did not report ${what} within ${seconds} s; check that the machine runs the Ferry agent and reaches the server`, { id });

export const agentStatusInvalid = (why: string) =>
  new FerryError('STATUS_INVALID', 2, `the agent's status ${why}; see src/agent/README.md`);

export const workInvalid = (why: string) =>
  new FerryError('WORK_INVALID', 2, `the agent's work ${why}`);

export const agentFailed = (id: string, ticket: string, message: string) =>
  new FerryError('AGENT_FAILED', 7, `the agent of machine ${id} failed ${ticket}: ${message || 'no message'}`, { id, ticket });

// `ferry pxe serve`.
export const interfaceMissing = (name: string, known: string[]) =>
  new FerryError('INTERFACE_MISSING', 2, `there is no network interface ${name}; this host has ${known.join(', ') || 'none'}`, { interface: name, known });

export const interfaceNoIpv4 = (name: string) =>
  new FerryError('INTERFACE_NO_IPV4', 2, `interface ${name} has no IPv4 address; give it one (ip addr add A.B.C.D/24 dev ${name}) and start again`, { interface: name });

// The agent image (`ferry agent build`): its parts come from this host's Debian packages.
export const agentInputMissing = (what: string, pkg: string) =>
  new FerryError('AGENT_INPUT_MISSING', 3,
    `the agent image needs ${what}, which this host lacks; install it with 'apt-get install ${pkg}' and build again (nothing was written)`,
    { what, package: pkg });

// UEFI: converting a guest's firmware, and the EFI system partition it boots from
export const espNotFat = (partition: number, type: string | undefined) =>
  new FerryError('ESP_NOT_FAT', 3,
    `partition ${partition} is an EFI system partition but holds ${type ?? 'no file system'}, not FAT: UEFI firmware cannot boot from it; repair the source's ESP (mkfs.vfat and its loader) and convert again (nothing was written)`,
    { partition, type });

export const firmwareUnsupported = (what: string, why: string, details: Record<string, unknown> = {}) =>
  new FerryError('FIRMWARE_UNSUPPORTED', 5, `cannot convert ${what} to UEFI: ${why} (nothing was written)`, details);

/** DRIVER_MISSING for GRUB's x86_64-efi files: neither the guest nor drivers-db has them for the guest's GRUB version */
export const grubEfiMissing = (os: string, want: { version?: string; package: string; packageKind: string }) =>
  new FerryError('DRIVER_MISSING', 5, want.version
    ? `${os} has no GRUB for x86_64-efi (/usr/lib/grub/x86_64-efi) and the substitute-file cache has none for its GRUB ${want.version}; import the ${want.packageKind} package ${want.package} (version ${want.version}) with 'ferry drivers import CONTAINER' (or install it in the guest) and convert again (nothing was written)`
    : `${os} has no GRUB for x86_64-efi (/usr/lib/grub/x86_64-efi) and no GRUB package that says its GRUB version, so the substitute-file cache cannot supply one; install ${want.package} in the guest and convert again (nothing was written)`,
    { package: want.package, version: want.version, import: `${want.packageKind} package ${want.package}${want.version ? ` (version ${want.version})` : ''}` });
