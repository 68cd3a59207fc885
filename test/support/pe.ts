// Real, tiny Windows PE files for tests: a resource-only image whose version
// resource names its original file name and version (what Ferry reads to tell
// HAL and kernel variants apart), linked by mingw's windres and ld.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

export async function buildPe(out: string, original: string, version: string, arch: 'i686' | 'x86_64' = 'i686'): Promise<void> {
  const nums = version.split('.').join(',');
  // the .rc and .o stay out of the container trees being built
  const work = await mkdtemp(join(tmpdir(), 'pe-build-'));
  try {
    const rc = join(work, 'version.rc');
    await writeFile(rc, `1 VERSIONINFO
FILEVERSION ${nums}
PRODUCTVERSION ${nums}
FILEOS 0x40004
FILETYPE 0x3
BEGIN
  BLOCK "StringFileInfo"
  BEGIN
    BLOCK "040904B0"
    BEGIN
      VALUE "CompanyName", "Ferry tests"
      VALUE "FileVersion", "${version} (test)"
      VALUE "OriginalFilename", "${original}"
    END
  END
  BLOCK "VarFileInfo"
  BEGIN
    VALUE "Translation", 0x409, 1200
  END
END
`);
    await execa(`${arch}-w64-mingw32-windres`, ['--preprocessor=cpp', '-O', 'coff', '-i', rc, '-o', `${rc}.o`]);
    await execa(`${arch}-w64-mingw32-ld`, [...(/\.(dll|sys)$/.test(original) ? ['--dll'] : []), '--subsystem', 'native', '-e', '0', '-o', out, `${rc}.o`]);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
