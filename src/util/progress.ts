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

/**
 * The rate is measured over the last WINDOW_MS of updates, from the first
 * update that showed bytes done: the time a phase spends before its data
 * flows (mkfs, mounting, walking trees) and the early bursts do not skew the
 * ETA. Until bytes have flowed for MIN_SPAN_MS the rate is not known: JSON
 * progress events wait for it (the phase's last event is always written), the
 * bar shows ETA --:--. A stall longer than the window falls back to the
 * average since the data began, so the ETA stays finite.
 */
const WINDOW_MS = 5000, MIN_SPAN_MS = 1000, SAMPLE_MS = 100;

interface Sample { t: number; done: number }

export function createProgress(mode: ProgressMode, out: NodeJS.WriteStream = process.stderr): ProgressSink {
  let name = '', total = 0, done = 0, started = Date.now(), lastDraw = 0;
  /** samples since the data began: [0] is the window's anchor, `first` the first with bytes done */
  let samples: Sample[] = [], first: Sample | undefined;
  const sample = (now: number) => {
    if (done <= 0 || (samples.length && now - samples.at(-1)!.t < SAMPLE_MS)) return;
    const s = { t: now, done };
    first ??= s;
    samples.push(s);
    while (samples.length > 1 && samples[1].t <= now - WINDOW_MS) samples.shift();
  };
  /** bytes per second, or undefined while too little is known */
  const measured = (now: number): number | undefined => {
    const a = samples[0];
    if (!a || !first || now - first.t < MIN_SPAN_MS) return undefined;
    const windowRate = now > a.t ? (done - a.done) / ((now - a.t) / 1000) : 0;
    return windowRate > 0 ? windowRate : (done - first.done) / ((now - first.t) / 1000);
  };
  const draw = (force = false) => {
    const now = Date.now();
    if (!force && now - lastDraw < (mode === 'json' ? 1000 : 200)) return;
    const m = measured(now);
    if (m === undefined && !force && mode === 'json') return;
    lastDraw = now;
    // a phase ended before its rate was known: the average from its start
    const r = m ?? done / Math.max(0.001, (now - started) / 1000);
    const eta = total > done && r > 0 ? (total - done) / r : 0;
    if (mode === 'json') {
      process.stdout.write(JSON.stringify({ event: 'progress', phase: name, done, total, rate: Math.round(r), eta: Math.round(eta) }) + '\n');
    } else if (mode === 'bar' && out.isTTY) {
      const width = 30;
      const frac = total ? Math.min(1, done / total) : 0;
      const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
      out.write(`\r${name.padEnd(18).slice(0, 18)} [${bar}] ${fmtBytes(done)}/${fmtBytes(total)} ${fmtBytes(r)}/s ETA ${fmtTime(m === undefined ? NaN : eta)}  `);
    }
  };
  const endLine = () => { if (mode === 'bar' && out.isTTY && name) out.write('\n'); };
  return {
    phase(n, t) {
      if (name) { draw(true); endLine(); }
      name = n; total = t; done = 0; started = Date.now(); lastDraw = 0; samples = []; first = undefined;
      if (mode === 'json') process.stdout.write(JSON.stringify({ event: 'phase', phase: n, total: t }) + '\n');
      else if (mode === 'bar' && !out.isTTY) out.write(`${n}: ${fmtBytes(t)}\n`);
    },
    update(d) { done = d; sample(Date.now()); draw(); },
    note(message) {
      if (mode === 'json') process.stdout.write(JSON.stringify({ event: 'note', message }) + '\n');
      else if (mode === 'bar') { if (out.isTTY && name) out.write('\n'); out.write(`${message}\n`); }
    },
    end() { if (name) { draw(true); endLine(); } name = ''; },
  };
}

export const silentProgress: ProgressSink = { phase() {}, update() {}, note() {}, end() {} };
