// The console's files: plain ES module, one style sheet and the page shell,
// read from src/web/assets at start (no build step). Each file is served under
// a name carrying its content hash, so it can be cached for a year; the shell
// (GET /) is never cached and names the current hashes.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const DIR = join(resolve(dirname(fileURLToPath(import.meta.url)), '../../..'), 'src', 'web', 'assets'); // dist/src/web → repo

export interface Asset { body: Buffer; type: string }

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png',
};

export interface Assets {
  /** hashed name → file */
  files: Map<string, Asset>;
  /** the shell with the hashed names filled in */
  shell: Buffer;
}

export function loadAssets(dir = DIR): Assets {
  const files = new Map<string, Asset>();
  const names: Record<string, string> = {};
  for (const f of ['app.js', 'app.css', 'icon.svg']) {
    const body = readFileSync(join(dir, f));
    const ext = f.slice(f.lastIndexOf('.'));
    const hashed = `${f.slice(0, -ext.length)}.${createHash('sha256').update(body).digest('hex').slice(0, 16)}${ext}`;
    files.set(hashed, { body, type: TYPES[ext] });
    names[f] = `/assets/${hashed}`;
  }
  const shell = readFileSync(join(dir, 'index.html'), 'utf8').replace(/\{\{([\w.]+)\}\}/g, (_, n: string) => names[n] ?? '');
  return { files, shell: Buffer.from(shell) };
}
