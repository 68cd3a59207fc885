// Progress for long steps: a bar with bytes, rate and ETA on a terminal,
// newline-delimited JSON events with --json, nothing with --no-progress.

export interface ProgressSink {
  /** start a phase; total bytes if known */
  phase(name: string, total: number): void;
  /** bytes done so far in the current phase */
  update(done: number): void;
  /** a notice the user should read (what was done how) */
  note(message: string): void;
  end(): void;
}

export type ProgressMode = 'bar' | 'json' | 'none';

const fmtBytes = (n: number) => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
};

const fmtTime = (s: number) => !isFinite(s) ? '--:--' : `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;

export function createProgress(mode: ProgressMode, out: NodeJS.WriteStream = process.stderr): ProgressSink {
  let name = '', total = 0, done = 0, started = Date.now(), lastDraw = 0;
  const rate = () => done / Math.max(0.001, (Date.now() - started) / 1000);
  const draw = (force = false) => {
    const now = Date.now();
    if (!force && now - lastDraw < (mode === 'json' ? 1000 : 200)) return;
    lastDraw = now;
    const r = rate();
    const eta = total > done && r > 0 ? (total - done) / r : 0;
    if (mode === 'json') {
      process.stdout.write(JSON.stringify({ event: 'progress', phase: name, done, total, rate: Math.round(r), eta: Math.round(eta) }) + '\n');
    } else if (mode === 'bar' && out.isTTY) {
      const width = 30;
      const frac = total ? Math.min(1, done / total) : 0;
      const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
      out.write(`\r${name.padEnd(18).slice(0, 18)} [${bar}] ${fmtBytes(done)}/${fmtBytes(total)} ${fmtBytes(r)}/s ETA ${fmtTime(eta)}  `);
    }
  };
  const endLine = () => { if (mode === 'bar' && out.isTTY && name) out.write('\n'); };
  return {
    phase(n, t) {
      if (name) { draw(true); endLine(); }
      name = n; total = t; done = 0; started = Date.now(); lastDraw = 0;
      if (mode === 'json') process.stdout.write(JSON.stringify({ event: 'phase', phase: n, total: t }) + '\n');
      else if (mode === 'bar' && !out.isTTY) out.write(`${n}: ${fmtBytes(t)}\n`);
    },
    update(d) { done = d; draw(); },
    note(message) {
      if (mode === 'json') process.stdout.write(JSON.stringify({ event: 'note', message }) + '\n');
      else if (mode === 'bar') { if (out.isTTY && name) out.write('\n'); out.write(`${message}\n`); }
    },
    end() { if (name) { draw(true); endLine(); } name = ''; },
  };
}

export const silentProgress: ProgressSink = { phase() {}, update() {}, note() {}, end() {} };
