// The INI dialect of NetworkManager keyfiles and systemd units: [Section]
// headers (a section may repeat), key=value lines, # and ; comments.
export interface IniSection { name: string; values: Record<string, string[]> }

export function parseIni(text: string): IniSection[] {
  const sections: IniSection[] = [];
  let cur: IniSection | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const h = /^\[(.+)\]$/.exec(line);
    if (h) { cur = { name: h[1].trim(), values: {} }; sections.push(cur); continue; }
    const i = line.indexOf('=');
    if (!cur || i < 0) continue;
    const key = line.slice(0, i).trim();
    (cur.values[key] ??= []).push(line.slice(i + 1).trim());
  }
  return sections;
}

/** all values of key in every section called name (systemd repeats both) */
export const iniValues = (s: IniSection[], name: string, key: string): string[] =>
  s.filter(x => x.name === name).flatMap(x => x.values[key] ?? []);

export const iniValue = (s: IniSection[], name: string, key: string): string | undefined => iniValues(s, name, key).at(-1);
