// Version resources of PE files (OriginalFilename, FileVersion), read with
// python3-pefile: a well-kept parser from Debian instead of our own.
import { run } from '../../util/exec.js';

export interface PeInfo {
  /** IMAGE_FILE_HEADER.Machine: 0x14c i386, 0x8664 amd64, 0xaa64 arm64 */
  machine: number;
  /** StringFileInfo entries (the first table that has each key) */
  strings: Record<string, string>;
  /** VS_FIXEDFILEINFO's file version, a.b.c.d */
  fileVersion?: string;
}

export const MACHINE_I386 = 0x14c;

const SCRIPT = String.raw`
import json, sys
import pefile
out = {}
for p in sys.argv[1:]:
    try:
        pe = pefile.PE(p, fast_load=True)
        pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY['IMAGE_DIRECTORY_ENTRY_RESOURCE']])
        strings = {}
        for fi in getattr(pe, 'FileInfo', None) or []:
            for e in fi:
                for st in getattr(e, 'StringTable', None) or []:
                    for k, v in st.entries.items():
                        strings.setdefault(k.decode('utf-8', 'replace'), v.decode('utf-8', 'replace'))
        info = {'machine': pe.FILE_HEADER.Machine, 'strings': strings}
        ffi = getattr(pe, 'VS_FIXEDFILEINFO', None)
        if ffi:
            f = ffi[0]
            info['fileVersion'] = '%d.%d.%d.%d' % (f.FileVersionMS >> 16, f.FileVersionMS & 0xffff, f.FileVersionLS >> 16, f.FileVersionLS & 0xffff)
        out[p] = info
        pe.close()
    except Exception as e:
        out[p] = {'error': '%s: %s' % (type(e).__name__, e)}
print(json.dumps(out))
`;

/**
 * Read the version resources of several files in one python run. A file that
 * is not a PE file maps to { error }.
 */
export async function readPe(paths: string[]): Promise<Record<string, PeInfo | { error: string }>> {
  if (!paths.length) return {};
  // Debian's interpreter by its full path: python3-pefile is installed for it,
  // not for whatever python3 comes first in PATH (pyenv, a venv).
  const r = await run('/usr/bin/python3', ['-c', SCRIPT, ...paths]);
  return JSON.parse(r.stdout) as Record<string, PeInfo | { error: string }>;
}
