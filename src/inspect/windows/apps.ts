// Installed applications: the Uninstall keys of the native view and, on
// 64-bit Windows, of the 32-bit view (Wow6432Node).
import type { WindowsOs } from '../report.js';
import type { RegKey } from './hive.js';

export const UNINSTALL = '\\Microsoft\\Windows\\CurrentVersion\\Uninstall';
export const UNINSTALL_32 = '\\Wow6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall';

/** entries without a DisplayName are not shown by Windows either and are skipped */
export function readApplications(views: (RegKey | undefined)[]): WindowsOs['applications'] {
  const out: WindowsOs['applications'] = [];
  const seen = new Set<string>();
  for (const view of views) {
    for (const k of view?.children() ?? []) {
      const name = k.str('DisplayName')?.trim();
      if (!name) continue;
      const app: WindowsOs['applications'][number] = { name };
      const version = k.str('DisplayVersion')?.trim();
      if (version) app.version = version;
      const publisher = k.str('Publisher')?.trim();
      if (publisher) app.publisher = publisher;
      const id = `${name}\0${version ?? ''}`;
      if (seen.has(id)) continue;
      seen.add(id);
      out.push(app);
    }
  }
  return out.sort((a, b) => a.name.toLowerCase().localeCompare(b.name.toLowerCase()));
}
