// /etc/fstab and how each entry names its device.
import type { FstabEntry } from '../report.js';

export function parseFstab(text: string): FstabEntry[] {
  const out: FstabEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const [spec, mountpoint, type = 'auto', options = 'defaults'] = line.split(/\s+/).map(unescapeOctal);
    if (!spec || !mountpoint) continue;
    out.push({ spec, by: namedBy(spec), mountpoint, type, options });
  }
  return out;
}

export function namedBy(spec: string): FstabEntry['by'] {
  const m = /^(UUID|LABEL|PARTUUID|PARTLABEL)=/i.exec(spec);
  if (m) return m[1].toLowerCase() as FstabEntry['by'];
  if (spec.startsWith('/dev/disk/by-uuid/')) return 'uuid';
  if (spec.startsWith('/dev/disk/by-label/')) return 'label';
  if (spec.startsWith('/dev/disk/by-partuuid/')) return 'partuuid';
  if (spec.startsWith('/dev/disk/by-partlabel/')) return 'partlabel';
  if (spec.startsWith('/dev/')) return 'path';
  return 'other';
}

/** fstab writes spaces in names as \040 */
const unescapeOctal = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
