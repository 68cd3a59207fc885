// Customizing a Windows guest offline: computer name, static addresses or
// DHCP for the NIC bindings `inspect` reports, a domain-join request in the
// answer file, a new identity (the registered sysprep-style tool, run once at
// next boot) and registered first-boot tools (--run, RunOnce).
//
// As the Windows re-fit: plan reads the hives (hivexregedit) and the tool
// store and throws before anything is written; apply copies files and merges
// the registry edits with hivexregedit. Every change is reported (file or
// key, before, after, why); a dry run reports the plan without applying it.
// Registry values are set in every boot control set (Select\Current and
// Default), as the re-fit does.
import { copyFile, lstat, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { OpenDisk } from '../blockdev/disk.js';
import { FerryError, usageError } from '../errors.js';
import { openFileSystems, type ReadableFs } from '../inspect/filesystems.js';
import type { RegKey } from '../inspect/windows/hive.js';
import { findWindowsRoot, inspectWindows } from '../inspect/windows/index.js';
import { findCi } from '../inspect/windows/paths.js';
import type { WindowsNic, WindowsOs } from '../inspect/report.js';
import { nothingToRefit } from '../refit/refit.js';
import { withScope, type Scope } from '../util/scope.js';
import type { Change } from '../../converters/linux/change.js';
import { describe, openRegistry, sameValue, windowsHiveUnreadable, type HiveEdits } from '../../converters/windows/index.js';
import { mergeIntoHive, showValue, type RegData } from '../../converters/windows/registry.js';
import { readJoinPassword, splitUser, type DomainJoin } from './domain-join.js';
import { mergeUnattend } from './unattend-merge.js';
import { customizeUnsupported, type Customization, type IpSetting } from './identity.js';
import { toolLabel, toolNotFound, ToolStore, toolWrongOs, type Tool } from './tools.js';

/** the tool --new-identity places on Windows: register it with `ferry tools add CONTAINER --name sysprep` */
export const SYSPREP_TOOL = 'sysprep';

interface FileWrite { host: string; data?: string; from?: string; change: Change }

export interface WindowsCustomizePlan {
  dir: string;
  os: WindowsOs;
  files: FileWrite[];
  system: HiveEdits;
  software: HiveEdits;
  /** registered tools placed (recorded in the report) */
  tools: { name: string; version: string; trigger: string }[];
}

const RUN_ONCE = 'Microsoft\\Windows\\CurrentVersion\\RunOnce';
const lc = (s: string) => s.toLowerCase();

const windowsNicUnknown = (iface: string, nics: WindowsNic[], partition: number) =>
  new FerryError('WINDOWS_NIC_UNKNOWN', 2,
    `the Windows guest on partition ${partition} has no network adapter '${iface}'; name one by its connection name, its GUID or ethN (the N-th adapter): ${nics.map((n, i) => `eth${i} = ${n.name ?? '?'} ${n.guid}`).join('; ') || 'it has none'} (nothing was changed)`,
    { iface, partition, nics: nics.map(n => ({ guid: n.guid, name: n.name })) });

/** Check what only a Windows guest needs of the options (before anything is opened). */
export function windowsComputerName(hostname: string): { netbios: string; host: string; domain?: string } {
  const [host, ...rest] = hostname.split('.');
  if (host.length > 15) throw usageError(`--hostname ${hostname}: a Windows computer name is at most 15 characters before the first dot ('${host}' has ${host.length})`);
  if (/^\d+$/.test(host)) throw usageError(`--hostname ${hostname}: a Windows computer name cannot be all digits`);
  return { netbios: host.toUpperCase(), host, ...(rest.length ? { domain: rest.join('.') } : {}) };
}

/** the NIC an --ip/--dhcp interface names: connection name, GUID (braces optional), or ethN / nicN in inspect order */
export function findNic(nics: WindowsNic[], iface: string): WindowsNic | undefined {
  const bare = lc(iface).replace(/^\{|\}$/g, '');
  const byName = nics.find(n => lc(n.name ?? '') === lc(iface)) ?? nics.find(n => lc(n.guid).replace(/^\{|\}$/g, '') === bare);
  if (byName) return byName;
  const m = /^(?:eth|nic)(\d+)$/i.exec(iface);
  return m ? nics[Number(m[1])] : undefined;
}

const prefixToMask = (p: number) => [24, 16, 8, 0].map(s => ((p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0) >>> s) & 255).join('.');

/** Tcpip\Parameters\Interfaces\{GUID} values as Windows keeps them (addresses REG_MULTI_SZ, NameServer a comma list in REG_SZ) */
export function interfaceValues(ip: IpSetting | undefined): Record<string, RegData> {
  if (!ip) return {
    EnableDHCP: { dword: 1 }, IPAddress: { multi: ['0.0.0.0'] }, SubnetMask: { multi: ['0.0.0.0'] },
    DefaultGateway: { multi: [] }, DefaultGatewayMetric: { multi: [] }, NameServer: { sz: '' },
  };
  return {
    EnableDHCP: { dword: 0 }, IPAddress: { multi: [ip.address] }, SubnetMask: { multi: [prefixToMask(ip.prefix)] },
    DefaultGateway: { multi: ip.gateway ? [ip.gateway] : [] }, DefaultGatewayMetric: { multi: ip.gateway ? ['0'] : [] },
    NameServer: { sz: ip.dns.join(',') },
  };
}

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * The answer file of NT 6 and later (unattend.xml): the specialize pass sets
 * the computer name ('*': Windows picks one) and, with --domain-join, asks
 * Microsoft-Windows-UnattendedJoin to join. `secret` is the password or a
 * placeholder (the report's copy).
 */
export function unattendXml(o: { arch: string; computerName?: string; join?: DomainJoin; secret?: string }): string {
  const arch = ['amd64', 'x86', 'arm64'].includes(o.arch) ? o.arch : 'amd64';
  const component = (name: string, body: string[]) => [
    `    <component name="${name}" processorArchitecture="${arch}" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">`,
    ...body.map(l => `      ${l}`), '    </component>'];
  const specialize: string[] = [];
  if (o.computerName) specialize.push(...component('Microsoft-Windows-Shell-Setup', [`<ComputerName>${xml(o.computerName)}</ComputerName>`]));
  if (o.join) {
    const u = splitUser(o.join);
    const id = [`<JoinDomain>${xml(o.join.domain)}</JoinDomain>`];
    if (o.join.ou) id.push(`<MachineObjectOU>${xml(o.join.ou)}</MachineObjectOU>`);
    if (u) id.push('<Credentials>', `  <Domain>${xml(u.domain)}</Domain>`, `  <Username>${xml(u.name)}</Username>`, `  <Password>${xml(o.secret ?? '')}</Password>`, '</Credentials>');
    else id.push('<UnsecureJoin>true</UnsecureJoin>');
    specialize.push(...component('Microsoft-Windows-UnattendedJoin', ['<Identification>', ...id.map(l => `  ${l}`), '</Identification>']));
  }
  return ['<?xml version="1.0" encoding="utf-8"?>',
    '<!-- written by Ferry (ferry customize): read by Windows setup after the sysprep-style tool generalizes this system -->',
    '<unattend xmlns="urn:schemas-microsoft-com:unattend">',
    '  <settings pass="specialize">', ...specialize, '  </settings>',
    '  <settings pass="oobeSystem">', ...component('Microsoft-Windows-Shell-Setup', ['<OOBE>', '  <HideEULAPage>true</HideEULAPage>', '</OOBE>']), '  </settings>',
    '</unattend>', ''].join('\r\n');
}

/** The answer file of NT 5 (sysprep.inf, read by mini-setup from %SystemDrive%\sysprep). */
export function sysprepInf(o: { computerName?: string; join?: DomainJoin; secret?: string }): string {
  const lines = ['; written by Ferry (ferry customize): read by mini-setup after sysprep reseals this system',
    '[Unattended]', 'OemSkipEula=Yes', '', '[UserData]', `ComputerName=${o.computerName ?? '*'}`];
  if (o.join) {
    const u = splitUser(o.join);
    lines.push('', '[Identification]', `JoinDomain=${o.join.domain}`);
    if (o.join.ou) lines.push(`MachineObjectOU="${o.join.ou}"`);
    if (u) lines.push(`DomainAdmin=${u.domain}\\${u.name}`, `DomainAdminPassword="${o.secret ?? ''}"`);
  }
  return lines.join('\r\n') + '\r\n';
}

/** how Windows starts an entry, by its kind */
function commandFor(winPath: string): string {
  const ext = posix.extname(winPath).toLowerCase();
  if (ext === '.exe') return `"${winPath}"`;
  if (ext === '.ps1') return `%SystemRoot%\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -NoProfile -ExecutionPolicy Bypass -File "${winPath}"`;
  if (ext === '.vbs') return `%SystemRoot%\\System32\\wscript.exe "${winPath}"`;
  return `%SystemRoot%\\System32\\cmd.exe /c "${winPath}"`;
}

const winPathOf = (prefix: string, rel: string) => `${prefix}\\${rel.split('/').join('\\')}`;

export interface WindowsPlanInput {
  dir: string;
  os: WindowsOs;
  c: Customization;
  store: ToolStore;
  /** the join password (read once by the caller, never shown) */
  secret?: string;
}

export async function planWindowsCustomization(input: WindowsPlanInput): Promise<WindowsCustomizePlan> {
  const { dir, os, c, store, secret } = input;
  const hiveError = os.errors.find(e => /^HIVE_/.test(e.code));
  if (hiveError) throw windowsHiveUnreadable(/\/[^\s:]+/.exec(hiveError.message)?.[0] ?? `${os.systemRoot}/System32/config`, hiveError.message, os.partition);
  const root = os.systemRoot;
  const ntMajor = Number((os.version ?? '').split('.')[0]) || 0;
  const { system, software, controlSets: sets, readKey } = await openRegistry(dir, os);

  const plan: WindowsCustomizePlan = { dir, os, files: [], system, software, tools: [] };
  const setValues = async (h: HiveEdits, key: string, values: Record<string, RegData>, reason: string, existing?: RegKey) => {
    existing ??= await readKey(h.hive, `\\${key}`);
    const changed = Object.entries(values).filter(([name, v]) => !sameValue(existing, name, v));
    if (!changed.length) return;
    const before = !existing ? 'absent' : changed.map(([name]) => `${name}=${describe(existing!, name)}`).join(' ');
    const after = changed.map(([name, v]) => `${name}=${showValue(v)}`).join(' ');
    h.edits.push({ edit: { key, values: Object.fromEntries(changed) }, before, after, reason });
  };

  // guest paths keep the case the guest has; a link on the way is refused (it may lead off the volume)
  const place = async (guest: string): Promise<{ host: string; guest: string }> => {
    let host = dir;
    let done = '';
    for (const part of guest.split('/').filter(Boolean)) {
      const found = await findCi(dir, `${done}/${part}`);
      const name = found ? posix.basename(found.guest) : part;
      const st = await lstat(join(host, name)).catch(() => undefined);
      if (st?.isSymbolicLink()) throw customizeUnsupported(`${done}/${name} in the Windows guest is a link or junction; Ferry does not write through it`);
      host = join(host, name);
      done += `/${name}`;
    }
    return { host, guest: done };
  };
  const addFile = async (guest: string, what: { data?: string; from?: string }, after: string, reason: string, showBefore = true) => {
    const p = await place(guest);
    const old = await readFile(p.host).catch(() => undefined);
    if (old && what.data !== undefined && old.equals(Buffer.from(what.data))) return;
    plan.files.push({ host: p.host, ...what, change: { file: p.guest, before: old ? (showBefore ? `${old.length} bytes` : 'an earlier file') : 'absent', after, reason } });
  };
  /** a registered tool's files into the guest; returns the Windows path of its entry */
  const placeTool = async (t: Tool, guestDir: string, winDir: string, why: string) => {
    if (t.os === 'linux') throw toolWrongOs(t, 'windows');
    for (const f of t.files) {
      await addFile(`${guestDir}/${f.path}`, { from: join(store.filesDir(t), f.path) }, `${f.size} bytes of ${toolLabel(t)} (sha256 ${f.sha256.slice(0, 16)}…)`, why);
    }
    return winPathOf(winDir, t.entry);
  };

  // --- computer name: ComputerName (NetBIOS, upper case), Tcpip's DNS host name
  if (c.hostname) {
    const n = windowsComputerName(c.hostname);
    for (const cs of sets) {
      await setValues(system, `${cs}\\Control\\ComputerName\\ComputerName`, { ComputerName: { sz: n.netbios } }, 'the machine gets its own computer name (NetBIOS name, read at boot)');
      // ActiveComputerName is volatile: Windows makes it at boot from ComputerName; a saved copy is corrected, none is created
      const active = await readKey(system.hive, `\\${cs}\\Control\\ComputerName\\ActiveComputerName`);
      if (active) await setValues(system, `${cs}\\Control\\ComputerName\\ActiveComputerName`, { ComputerName: { sz: n.netbios } }, 'the saved copy of the running computer name follows', active);
      const tcpip: Record<string, RegData> = { Hostname: { sz: n.host }, 'NV Hostname': { sz: n.host } };
      if (n.domain) Object.assign(tcpip, { Domain: { sz: n.domain }, 'NV Domain': { sz: n.domain } });
      await setValues(system, `${cs}\\Services\\Tcpip\\Parameters`, tcpip, 'the DNS host name (and domain) TCP/IP registers: NV Hostname is the one set, Hostname the one in use');
    }
  }

  // --- addresses: the Tcpip interface key of each NIC inspect reports
  const wanted: [string, IpSetting | undefined][] = [...(c.ip ?? []).map(i => [i.iface, i] as [string, IpSetting]), ...(c.dhcp ?? []).map(d => [d, undefined] as [string, undefined])];
  for (const [iface, ip] of wanted) {
    const nic = findNic(os.nics, iface);
    if (!nic) throw windowsNicUnknown(iface, os.nics, os.partition);
    const label = `${nic.name ?? nic.guid}${nic.description ? ` (${nic.description})` : ''}`;
    for (const cs of sets) {
      await setValues(system, `${cs}\\Services\\Tcpip\\Parameters\\Interfaces\\${nic.guid}`, interfaceValues(ip),
        ip ? `the static address given for ${label}` : `DHCP asked for ${label}`);
    }
  }

  // --- --run: registered tools, started once from RunOnce
  for (const ref of c.run ?? []) {
    const t = await store.resolve(ref);
    const entry = await placeTool(t, `${root}/Ferry/tools/${t.name}/${t.version}`, `%SystemRoot%\\Ferry\\tools\\${t.name}\\${t.version}`, `registered tool ${toolLabel(t)}, run once at first boot (--run)`);
    const value = `Ferry-${t.name}`;
    // RunOnce: Windows deletes the value before it runs the command (no '!' prefix), so the trigger removes itself;
    // it runs at the first administrator's logon, in that session, where interactive tools can show themselves
    await setValues(software, RUN_ONCE, { [value]: { expand: commandFor(entry) } }, `runs ${toolLabel(t)} once at the first logon; Windows removes the entry before running it`);
    plan.tools.push({ name: t.name, version: t.version, trigger: `HKLM\\SOFTWARE\\${RUN_ONCE}\\${value}` });
  }

  // --- answer file (--domain-join, --new-identity)
  const computerName = c.hostname ? windowsComputerName(c.hostname).netbios : c.newIdentity ? '*' : undefined;
  const answer = ntMajor >= 6
    ? { guest: `${root}/Panther/unattend.xml`, win: '%SystemRoot%\\Panther\\unattend.xml', text: (s?: string) => unattendXml({ arch: normalArch(os.arch), computerName, join: c.domainJoin, secret: s }) }
    : { guest: '/sysprep/sysprep.inf', win: '%SystemDrive%\\sysprep\\sysprep.inf', text: (s?: string) => sysprepInf({ computerName, join: c.domainJoin, secret: s }) };
  if (c.domainJoin || c.newIdentity) {
    const parts = [computerName ? `ComputerName=${computerName}` : undefined, c.domainJoin ? `join ${c.domainJoin.domain}${c.domainJoin.ou ? ` in ${c.domainJoin.ou}` : ''}${c.domainJoin.user ? ` as ${c.domainJoin.user}` : ' (pre-staged account)'}` : undefined].filter(Boolean);
    // a newer Windows' own answer file keeps its other settings: Ferry's are merged into it
    const existing = ntMajor >= 6 ? await readFile((await place(answer.guest)).host).catch(() => undefined) : undefined;
    const text = existing ? await mergeUnattend(existing, answer.text(secret), answer.guest) : answer.text(secret);
    await addFile(answer.guest, { data: text }, `answer file: ${parts.join(', ')}${existing ? ' (merged into the guest\'s own; its other settings kept)' : ''}`,
      c.domainJoin ? `the domain-join request, read by Windows setup when the sysprep-style tool has generalized the system${c.newIdentity ? '' : ' (run sysprep with this answer file to join)'}; Windows setup deletes the password from it once used`
        : 'the new identity\'s answer file, read by Windows setup after the sysprep-style tool runs', false);
    // the change names the account, never the password (it is only in the file)
  }

  // --- --new-identity: the registered sysprep-style tool, run once at next boot
  if (c.newIdentity) {
    const t = await store.resolve({ name: SYSPREP_TOOL }).catch(e => {
      if ((e as FerryError).code === 'TOOL_NOT_FOUND') throw toolNotFound({ name: SYSPREP_TOOL }, []);
      throw e;
    });
    // NT 5's sysprep runs from %SystemDrive%\sysprep beside its sysprep.inf; later ones from Ferry's folder with /unattend
    const entry = ntMajor >= 6
      ? await placeTool(t, `${root}/Ferry/tools/${t.name}/${t.version}`, `%SystemRoot%\\Ferry\\tools\\${t.name}\\${t.version}`, `the sysprep-style tool ${toolLabel(t)} that gives this clone a new identity (--new-identity)`)
      : await placeTool(t, '/sysprep', '%SystemDrive%\\sysprep', `the sysprep-style tool ${toolLabel(t)} that gives this clone a new identity (--new-identity); NT 5 sysprep runs from %SystemDrive%\\sysprep`);
    const args = ntMajor >= 6 ? `/generalize /oobe /reboot /quiet "/unattend:${answer.win}"` : '-reseal -mini -quiet -reboot';
    const script = ['@echo off',
      `rem Ferry: give this clone a new identity once, with ${toolLabel(t)}.`,
      'set LOG=%SystemRoot%\\Ferry\\new-identity.log',
      'echo %DATE% %TIME% new identity >> "%LOG%"',
      'rem the trigger goes first: the tool reboots, and Setup must not start this again',
      'reg add HKLM\\SYSTEM\\Setup /v SetupType /t REG_DWORD /d 0 /f >> "%LOG%" 2>&1',
      'reg add HKLM\\SYSTEM\\Setup /v CmdLine /t REG_SZ /d "" /f >> "%LOG%" 2>&1',
      `${entry.endsWith('.exe') ? `"${entry}"` : commandFor(entry)} ${args} >> "%LOG%" 2>&1`,
      'echo %DATE% %TIME% tool exited with %ERRORLEVEL% >> "%LOG%"', ''].join('\r\n');
    await addFile(`${root}/Ferry/new-identity.cmd`, { data: script }, `runs ${toolLabel(t)} ${args}, after clearing its own trigger`, 'the new identity is made by the guest itself, once, at the next boot');
    // Setup\CmdLine (SetupType 2), not RunOnce: it runs at the next boot before anyone logs on, as SYSTEM — a
    // clone needs no administrator to log on first — and it is how sysprep itself chains its next stage.
    // The script resets SetupType and CmdLine before the tool runs, so it runs once. CmdLine is a REG_SZ
    // started as it is: cmd.exe is found on the system path and expands %SystemRoot% itself.
    const setup = await readKey(system.hive, '\\Setup');
    await setValues(system, 'Setup', { SetupType: { dword: 2 }, CmdLine: { sz: 'cmd.exe /c "%SystemRoot%\\Ferry\\new-identity.cmd"' } },
      'starts the new-identity script once at the next boot, before logon (the script clears this first)', setup);
    plan.tools.push({ name: t.name, version: t.version, trigger: 'HKLM\\SYSTEM\\Setup\\CmdLine (SetupType=2)' });
  }
  return plan;
}

function normalArch(arch: string | undefined): string {
  const a = lc(arch ?? '');
  if (['x86_64', 'amd64', 'x64'].includes(a)) return 'amd64';
  if (['i386', 'i686', 'x86'].includes(a)) return 'x86';
  if (['aarch64', 'arm64'].includes(a)) return 'arm64';
  return 'amd64';
}

/** what apply would report, without writing (--dry-run) */
export function plannedChanges(plan: WindowsCustomizePlan): Change[] {
  return [
    ...plan.files.map(f => f.change),
    ...[plan.system, plan.software].flatMap(h => h.edits.map(e => ({ file: `${h.hive.guestPath} \\${e.edit.key}`, before: e.before, after: e.after, reason: e.reason }))),
  ];
}

export async function applyWindowsCustomization(plan: WindowsCustomizePlan, work: string): Promise<Change[]> {
  for (const f of plan.files) {
    await mkdir(posix.dirname(f.host), { recursive: true });
    if (f.from) await copyFile(f.from, f.host);
    else await writeFile(f.host, f.data!);
  }
  for (const [i, h] of [plan.system, plan.software].entries()) {
    await mergeIntoHive(h.hive.path, h.prefix, h.edits.map(e => e.edit), join(work, `customize-p${plan.os.partition}-${i}.reg`));
  }
  return plannedChanges(plan);
}

/** the Windows installations among opened file systems */
export async function findWindows(readable: ReadableFs[], work: string): Promise<{ dir: string; os: WindowsOs }[]> {
  const out: { dir: string; os: WindowsOs }[] = [];
  for (const r of readable.filter(x => x.entry.type === 'ntfs')) {
    const systemRoot = await findWindowsRoot(r.dir);
    if (systemRoot) out.push({ dir: r.dir, os: await inspectWindows(r.dir, systemRoot, r.entry.partition, work) });
  }
  return out;
}

/** Plan every Windows guest among opened file systems (throws before anything is written). */
export async function planWindowsGuests(readable: ReadableFs[], work: string, c: Customization, store = new ToolStore()): Promise<WindowsCustomizePlan[]> {
  const guests = await findWindows(readable, work);
  if (!guests.length) return [];
  const secret = c.domainJoin ? await readJoinPassword(c.domainJoin) : undefined;
  const plans: WindowsCustomizePlan[] = [];
  for (const g of guests) plans.push(await planWindowsCustomization({ ...g, c, store, secret }));
  return plans;
}

export interface WindowsCustomizeResult {
  systems: { type: 'windows'; name: string; partition: number }[];
  changes: Change[];
  tools: { name: string; version: string; trigger: string }[];
  dryRun: boolean;
}

/** What can be refused before the disk is opened at all: the computer name, the tools, the password file. */
export async function checkWindowsRequest(c: Customization, store: ToolStore): Promise<void> {
  if (c.hostname) windowsComputerName(c.hostname);
  for (const ref of c.run ?? []) {
    const t = await store.resolve(ref);
    if (t.os === 'linux') throw toolWrongOs(t, 'windows');
  }
  if (c.domainJoin) await readJoinPassword(c.domainJoin);
}

/**
 * Customize the Windows guests of a disk. Everything is planned on a
 * read-only open first — even mounting NTFS writable changes the volume — so
 * a refused customization leaves the image byte for byte as it was; then
 * (unless dryRun) the disk is opened writable, planned again and changed.
 * A disk with no Windows is refused.
 */
export async function customizeWindowsDisk(scope: Scope, disk: OpenDisk, work: string, c: Customization, opts: { dryRun?: boolean; store?: ToolStore } = {}): Promise<WindowsCustomizeResult> {
  await checkWindowsRequest(c, opts.store ?? new ToolStore());
  const planOn = async (s: Scope, writable: boolean) => {
    const { readable } = await openFileSystems(s, disk.file, disk.size, work, { writable });
    const plans = await planWindowsGuests(readable, work, c, opts.store);
    if (!plans.length) throw nothingToRefit(disk.describe);
    return plans;
  };
  const checked = await withScope(s => planOn(s, false).then(plans => ({ plans, changes: plans.flatMap(plannedChanges) })));
  const done = opts.dryRun ? checked : await (async () => {
    const plans = await planOn(scope, true);
    const changes: Change[] = [];
    for (const p of plans) changes.push(...await applyWindowsCustomization(p, work));
    return { plans, changes };
  })();
  return {
    systems: done.plans.map(p => ({ type: 'windows' as const, name: p.os.productName ?? 'Windows', partition: p.os.partition })),
    changes: done.changes, tools: done.plans.flatMap(p => p.tools), dryRun: !!opts.dryRun,
  };
}
