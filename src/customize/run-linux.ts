// `--run TOOL[@VERSION]` on a Linux guest: the registered tool's files go to
// /usr/local/lib/ferry/tools/NAME/VERSION, and a systemd one-shot unit runs
// its entry once at first boot. "Once" is a trigger file: the unit runs only
// while /var/lib/ferry/run/NAME.pending exists (ConditionPathExists) and
// removes it when the tool has run (ExecStopPost, which runs whether the tool
// succeeded or not), so later boots skip the unit. The unit stays, inert, as
// the record of what ran; the report lists every file written.
import { chmod, copyFile, lstat, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Change } from '../../converters/linux/change.js';
import type { GuestFs } from '../inspect/guest-fs.js';
import { customizeUnsupported } from './identity.js';
import { toolLabel, toolWrongOs, type Tool, type ToolStore } from './tools.js';

export const RUN_TOOLS_DIR = '/usr/local/lib/ferry/tools';
export const RUN_TRIGGER_DIR = '/var/lib/ferry/run';
export const runUnitName = (t: Pick<Tool, 'name'>) => `ferry-run-${t.name}.service`;

/** what stops the tools from being placed in this guest; undefined when they can be */
export async function runLinuxProblem(fs: GuestFs, tools: Tool[]): Promise<string | undefined> {
  if (!tools.length) return undefined;
  const wrong = tools.find(t => t.os === 'windows');
  if (wrong) return toolWrongOs(wrong, 'linux').message;
  if (!(await fs.isDir('/etc/systemd/system'))) return '--run needs systemd in the guest (/etc/systemd/system); it has none';
  return undefined;
}

/** systemd's quoting for one ExecStart word */
const quoteWord = (s: string) => /^[A-Za-z0-9_./+:@-]+$/.test(s) ? s : `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

export function runUnit(t: Tool): string {
  const trigger = `${RUN_TRIGGER_DIR}/${t.name}.pending`;
  return `[Unit]
Description=Ferry: run ${toolLabel(t)} once at first boot
# the trigger file is removed after the run: later boots skip this unit
ConditionPathExists=${trigger}
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=${quoteWord(`${RUN_TOOLS_DIR}/${t.name}/${t.version}/${t.entry}`)}
ExecStopPost=/bin/rm -f ${trigger}
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
`;
}

/** make a guest directory (and its parents) that may not exist; returns its host path */
async function guestMkdir(fs: GuestFs, dir: string): Promise<string> {
  let at = '/';
  for (const part of dir.split('/').filter(Boolean)) {
    at = posix.join(at, part);
    const host = await fs.hostPathForWrite(at);
    if (!host) throw customizeUnsupported(`the guest has no directory for ${at}`);
    const st = await lstat(host).catch(() => undefined);
    if (!st) await mkdir(host, { mode: 0o755 });
    else if (!st.isDirectory()) throw customizeUnsupported(`${at} in the guest is not a directory`);
  }
  return (await fs.resolve(dir))!;
}

/** Place the tools and their one-shot units; returns the changes. Call runLinuxProblem first. */
export async function placeRunLinux(fs: GuestFs, tools: Tool[], store: ToolStore): Promise<Change[]> {
  const problem = await runLinuxProblem(fs, tools);
  if (problem) throw customizeUnsupported(problem);
  const changes: Change[] = [];
  for (const t of tools) {
    const base = `${RUN_TOOLS_DIR}/${t.name}/${t.version}`;
    for (const f of t.files) {
      const guest = `${base}/${f.path}`;
      const dir = await guestMkdir(fs, posix.dirname(guest));
      const host = join(dir, posix.basename(guest));
      const before = await readFile(host).catch(() => undefined);
      await copyFile(join(store.filesDir(t), f.path), host);
      await chmod(host, f.mode);
      changes.push({ file: guest, before: before ? `${before.length} bytes` : 'absent', after: `${f.size} bytes of ${toolLabel(t)} (sha256 ${f.sha256.slice(0, 16)}…)`, reason: `registered tool ${toolLabel(t)}, run once at first boot (--run)` });
    }
    const unitPath = `/etc/systemd/system/${runUnitName(t)}`;
    const unitHost = join(await guestMkdir(fs, '/etc/systemd/system'), runUnitName(t));
    const unitBefore = await readFile(unitHost, 'utf8').catch(() => undefined);
    await writeFile(unitHost, runUnit(t), { mode: 0o644 });
    changes.push({ file: unitPath, before: unitBefore === undefined ? 'absent' : 'an earlier unit', after: `one-shot unit running ${base}/${t.entry} while ${RUN_TRIGGER_DIR}/${t.name}.pending exists`, reason: `runs ${toolLabel(t)} once at first boot (--run)` });

    const trigger = `${RUN_TRIGGER_DIR}/${t.name}.pending`;
    const triggerHost = join(await guestMkdir(fs, RUN_TRIGGER_DIR), `${t.name}.pending`);
    await writeFile(triggerHost, `${toolLabel(t)}\n`, { mode: 0o644 });
    changes.push({ file: trigger, before: 'absent', after: toolLabel(t), reason: 'the one-shot trigger: the unit removes it after the run, so the tool runs once' });

    const wants = `/etc/systemd/system/multi-user.target.wants/${runUnitName(t)}`;
    const wantsHost = join(await guestMkdir(fs, '/etc/systemd/system/multi-user.target.wants'), runUnitName(t));
    if (!(await lstat(wantsHost).catch(() => undefined))) {
      await symlink(unitPath, wantsHost);
      changes.push({ file: wants, before: 'absent', after: `-> ${unitPath}`, reason: `enables the first-boot run of ${toolLabel(t)}` });
    }
  }
  return changes;
}
