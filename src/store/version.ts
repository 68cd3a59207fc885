// This Ferry's version (package.json), as a worker reports it in `ferry workers list`.
import { readFileSync } from 'node:fs';

export const VERSION = (() => {
  try {
    // dist/src/store/version.js -> the repository's package.json
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
})();
