// The guard's attribution, on real loops and daemons: what this file leaves is
// reported, what another test file (another FERRY_TEST_MARK, another root) has
// running at the same moment is not. And the guard at work: child test files
// that leak a link with a qdisc, a namespace, a `ferry serve` fail.
import assert from 'node:assert/strict';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { readlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { execa, type ResultPromise } from 'execa';
import { guardMachine, ROOT, tempDir, testScope } from './support/harness.js';
import { domainIsOurs, leftBehind, linkIsOurs, machineState, markOf, netnsIsOurs } from './support/guard.js';
import { alive, MARK_VAR } from './support/test-scope.js';
import { deleteNetns, makeNetnsLink, netnsMounted } from './support/netns.js';

guardMachine();
const dir = await tempDir('ferrytest-guard-');
// another test file's root, as its harness would have made it (no live process has this pid-less marker)
const otherMark = 'tother';
const otherRoot = join(testScope.scopes, `${otherMark}-${process.pid}`);
// a shared file outside every temp dir, like a cached fixture under /var/cache/ferry/fixtures
const sharedDir = join('/var/cache/ferry', `guard-test-${process.pid}`);
const procs: ResultPromise[] = [];
const loops: string[] = [];

const image = async (path: string) => { await writeFile(path, Buffer.alloc(1 << 20)); return path; };
const attach = async (file: string) => {
  const dev = String((await execa('losetup', ['--find', '--show', '--read-only', file])).stdout).trim();
  loops.push(dev);
  return dev;
};
/** a qemu-storage-daemon in the foreground with this environment (extendEnv false: nothing else inherited) */
const qsd = (env: Record<string, string>, file: string) => {
  const p = execa('qemu-storage-daemon', ['--blockdev', `driver=file,node-name=f,filename=${file},read-only=on`],
    { env: { PATH: process.env.PATH!, ...env }, extendEnv: false, reject: false, stdin: 'ignore' });
  procs.push(p);
  return p;
};
const until = async (what: string, ok: () => Promise<boolean>) => {
  for (let i = 0; i < 100; i++) { if (await ok()) return; await new Promise(r => setTimeout(r, 50)); }
  assert.fail(`${what} within 5 s`);
};
const hasPid = (lines: string[], pid: number) => lines.some(l => l.startsWith(`${pid} `));

describe('the guard counts only this test file\'s leftovers', () => {
  // in the describe: the file's own after hook (the guard) runs after it
  after(async () => {
    for (const p of procs) { p.kill('SIGKILL'); await p; }
    for (const l of loops) await execa('losetup', ['-d', l], { reject: false });
    await rm(otherRoot, { recursive: true, force: true });
    await rm(sharedDir, { recursive: true, force: true });
  });

  it('a loop on a file under our root is ours; one under another file\'s root is not', async () => {
    await mkdir(otherRoot, { recursive: true });
    const ours = await attach(await image(join(dir, 'ours.img')));
    const theirs = await attach(await image(join(otherRoot, 'theirs.img')));
    const s = await machineState();
    assert.ok(s.loops.some(l => l.startsWith(`${ours} `)), `${ours} reported: ${s.loops.join('; ')}`);
    assert.ok(!s.loops.some(l => l.startsWith(`${theirs} `)), `${theirs} not reported`);
  });

  it('a loop on a shared file is ours unless a process of another marker holds it', async () => {
    await mkdir(sharedDir, { recursive: true });
    const dev = await attach(await image(join(sharedDir, 'fixture.img')));
    assert.ok((await machineState()).loops.some(l => l.startsWith(`${dev} `)), 'nobody holds it: ours (a leak is never missed)');
    // the shell opens the device itself (execa would pipe a { file } through this process)
    const holder = execa('sh', ['-c', 'exec sleep 60 <"$1"', 'sh', dev], { env: { [MARK_VAR]: otherMark }, reject: false, stdin: 'ignore' });
    procs.push(holder);
    await until('the holder has the loop open', async () => (await readlink(`/proc/${holder.pid}/fd/0`).catch(() => '')) === dev);
    assert.ok(!(await machineState()).loops.some(l => l.startsWith(`${dev} `)), 'held by the other file: theirs');

    // held by a process without any marker (a run without the harness): not ours either, every process of ours carries it
    const dev2 = await attach(join(sharedDir, 'fixture.img'));
    const unmarked = execa('sh', ['-c', 'exec sleep 60 <"$1"', 'sh', dev2], { env: { PATH: process.env.PATH! }, extendEnv: false, reject: false, stdin: 'ignore' });
    procs.push(unmarked);
    await until('the unmarked holder has the loop open', async () => (await readlink(`/proc/${unmarked.pid}/fd/0`).catch(() => '')) === dev2);
    assert.ok(!(await machineState()).loops.some(l => l.startsWith(`${dev2} `)), 'held by an unmarked process: theirs');

    // held by nobody, but a job of the other file's `ferry serve` has it in its store (job_resources)
    const dev3 = await attach(join(sharedDir, 'fixture.img'));
    assert.ok((await machineState()).loops.some(l => l.startsWith(`${dev3} `)), 'no owner in sight: ours');
    await mkdir(join(otherRoot, 'home'), { recursive: true });
    const db = new Database(join(otherRoot, 'home', 'ferry.db'));
    db.exec('CREATE TABLE job_resources (seq INTEGER PRIMARY KEY, job_id TEXT, kind TEXT, res_id TEXT)');
    db.prepare(`INSERT INTO job_resources (job_id, kind, res_id) VALUES ('j1', 'loop', ?)`).run(dev3);
    db.close();
    assert.ok(!(await machineState()).loops.some(l => l.startsWith(`${dev3} `)), 'held by the other file\'s job: theirs');
  });

  it('a loop on a shared file that was there when this file started is never its leak, whoever it reads as at the end', async () => {
    // the CI case: another file's loop on a fixture, held by that file while this one starts, left unheld when it dies
    await mkdir(sharedDir, { recursive: true });
    const dev = await attach(await image(join(sharedDir, 'left.img')));
    const holder = execa('sh', ['-c', 'exec sleep 60 <"$1"', 'sh', dev], { env: { [MARK_VAR]: otherMark }, reject: false, stdin: 'ignore' });
    procs.push(holder);
    await until('the holder has the loop open', async () => (await readlink(`/proc/${holder.pid}/fd/0`).catch(() => '')) === dev);
    const start = await machineState();
    assert.ok(!start.loops.some(l => l.startsWith(`${dev} `)), 'held by the other file at the start: theirs');
    holder.kill('SIGKILL');
    await holder;
    const end = await machineState();
    assert.ok(end.loops.some(l => l.startsWith(`${dev} `)), 'nobody holds it at the end: it reads as ours');
    assert.deepEqual(leftBehind(start, end).filter(l => l.includes(dev)), [], 'but it was there before: not left by this file');
    // one attached after the start, on the same file, still is
    const dev2 = await attach(join(sharedDir, 'left.img'));
    assert.deepEqual(leftBehind(start, await machineState()).filter(l => l.includes(`${dev2} `)).length, 1, `${dev2} is new: reported`);
  });

  it('a daemon is ours by its marker, or unmarked by a path under our root on its command line', async () => {
    const file = await image(join(dir, 'd.img'));
    const otherFile = await image(join(sharedDir, 'd.img'));
    const mine = qsd({ [MARK_VAR]: testScope.mark }, otherFile);
    const other = qsd({ [MARK_VAR]: otherMark }, file);
    const unmarkedOurs = qsd({}, file); // as libvirt starts qemu: a clean environment, our disk on the command line
    const unmarkedOther = qsd({}, otherFile);
    await until('the daemons run', async () => (await Promise.all([mine, other, unmarkedOurs, unmarkedOther].map(p => markOf(p.pid!)))).every(m => m !== null));
    const { daemons } = await machineState();
    assert.ok(hasPid(daemons, mine.pid!), 'our marker: ours');
    assert.ok(!hasPid(daemons, other.pid!), 'another marker: theirs, even on our file');
    assert.ok(hasPid(daemons, unmarkedOurs.pid!), 'no marker, our path: ours');
    assert.ok(!hasPid(daemons, unmarkedOther.pid!), 'no marker, no path of ours: theirs');
  });

  it('a daemonized qemu-storage-daemon keeps our marker', async () => {
    const pidfile = join(dir, 'qsd.pid');
    await execa('qemu-storage-daemon', ['--pidfile', pidfile, '--daemonize']);
    const pid = Number(String((await execa('cat', [pidfile])).stdout).trim());
    try {
      assert.equal(await markOf(pid), testScope.mark);
      assert.ok(hasPid((await machineState()).daemons, pid));
    } finally {
      process.kill(pid, 'SIGTERM');
      await until('the daemon stops', async () => !hasPid((await machineState()).daemons, pid));
    }
  });

  it('a network namespace registered by another file is theirs; an unregistered one is ours', async () => {
    await mkdir(join(otherRoot, 'netns'), { recursive: true });
    await writeFile(join(otherRoot, 'netns', 'ferry-x-theirs'), '');
    assert.equal(await netnsIsOurs('ferry-x-theirs'), false);
    assert.equal(await netnsIsOurs('ferry-x-nobody'), true);
    assert.equal(await netnsIsOurs(`ferry-x-${process.pid}`), true);
    assert.equal(await netnsIsOurs(`ferry-x-${process.ppid}`), false, 'named after another live process');
  });

  it('the last namespace removed takes /run/netns down, even a mount a killed run left behind', async () => {
    // what a test run killed mid-way leaves: the bind mount `ip netns add` made, and no namespace
    if (!(await netnsMounted()) && !(await execa('ip', ['netns', 'list'])).stdout.trim()) await execa('mount', ['--bind', '/run/netns', '/run/netns']);
    const link = await makeNetnsLink({ ns: `ferry-guard-${process.pid}`, hostIf: 'unused', nsIf: 'unused', hostIp: '10.0.0.1', isolated: true });
    assert.equal(await netnsMounted(), true, 'ip netns add made /run/netns a mount point');
    await link.remove();
    const left = String((await execa('ip', ['netns', 'list'])).stdout).trim();
    assert.equal(await netnsMounted(), left !== '', `/run/netns mounted: ${await netnsMounted()}, namespaces left: ${left || 'none'}`);
  });

  it('this process runs in its own root: TMPDIR, FERRY_TMP, FERRY_RUN_DIR, FERRY_HOME', () => {
    for (const v of ['TMPDIR', 'FERRY_TMP', 'FERRY_RUN_DIR', 'FERRY_HOME', 'FERRY_TEST_TMP']) {
      assert.ok(process.env[v]!.startsWith(testScope.root), `${v}=${process.env[v]}`);
    }
    assert.equal(process.env[MARK_VAR], testScope.mark);
  });

  it('links, qdiscs and domains: ours by our registration, a -<our pid> name or our path; theirs by another\'s', async () => {
    await mkdir(join(otherRoot, 'netns'), { recursive: true });
    await writeFile(join(otherRoot, 'netns', 'ferry-x-theirs'), 'fxh-theirs\nfxn-theirs\n');
    const registered = new Map([['fxh-theirs', false], ['fxh-ours', true]]);
    assert.equal(linkIsOurs('fxh-theirs', registered), false, 'registered by another root');
    assert.equal(linkIsOurs('fxh-ours', registered), true, 'registered by ours');
    assert.equal(linkIsOurs(`fx-${process.pid}`, registered), true, 'named after this process');
    assert.equal(linkIsOurs(`fx-${process.ppid}`, registered), false, 'named after another live process');
    assert.equal(linkIsOurs('fx-nobody', registered), true, 'no owner in sight, no other file alive (guard runs alone): ours');
    const disk = (path: string) => `<domain><name>d</name><devices><disk type='file'><source file='${path}'/></disk></devices></domain>`;
    assert.equal(domainIsOurs('d', disk(join(dir, 'a.qcow2'))), true);
    assert.equal(domainIsOurs('d', disk(join(otherRoot, 'a.qcow2'))), false);
    assert.equal(domainIsOurs('d', disk('/srv/images/a.qcow2')), true, 'a path nobody\'s: ours with no other file alive');
    // a real link registered by the other root: not ours; once unregistered (nobody's): ours
    const name = 'fxh-theirs';
    await execa('ip', ['link', 'add', name, 'type', 'bridge']); // no dummy module here
    try {
      assert.ok(!(await machineState()).links.some(l => l.startsWith(`${name} `)), 'registered by the other file: theirs');
      await writeFile(join(otherRoot, 'netns', 'ferry-x-theirs'), '');
      assert.ok((await machineState()).links.includes(`${name} (bridge)`), 'unregistered: ours');
    } finally { await execa('ip', ['link', 'del', name], { reject: false }); }
  });

  it('child test files that leak a link with a qdisc, a namespace or a `ferry serve` fail their guard, naming it', async () => {
    const harness = pathToFileURL(join(ROOT, 'dist', 'test', 'support', 'harness.js')).href;
    const netns = pathToFileURL(join(ROOT, 'dist', 'test', 'support', 'netns.js')).href;
    // each child writes what it made to a file: name, pid
    const children: Record<string, string> = {
      link: `import { execFileSync } from 'node:child_process';
        const name = 'fgl-' + process.pid;
        execFileSync('ip', ['link', 'add', name, 'type', 'bridge']);
        execFileSync('tc', ['qdisc', 'add', 'dev', name, 'root', 'tbf', 'rate', '1mbit', 'burst', '32kb', 'latency', '50ms']);
        made(name);`,
      netns: `const { makeNetnsLink } = await import('${netns}');
        const ns = 'ferry-gleak-' + process.pid;
        await makeNetnsLink({ ns, hostIf: 'unused', nsIf: 'unused', hostIp: '10.0.0.1', isolated: true });
        made(ns);`,
      serve: `import { spawn } from 'node:child_process';
        const p = spawn('node', [FERRY, 'serve', '--listen', '127.0.0.1:0', '--log-level', 'silent'], { detached: true, stdio: 'ignore' });
        p.unref();
        await new Promise(r => setTimeout(r, 1500));
        made(String(p.pid));`,
    };
    const runs = Object.entries(children).map(async ([what, body]) => {
      const file = join(dir, `leak-${what}.test.mjs`);
      const out = join(dir, `leak-${what}.out`);
      const [imports, rest] = body.trim().startsWith('import') ? [body.trim().split('\n')[0], body.trim().split('\n').slice(1).join('\n')] : ['', body];
      await writeFile(file, `${imports}
import { writeFileSync } from 'node:fs';
import { it } from 'node:test';
import { FERRY, guardMachine } from '${harness}';
void FERRY;
guardMachine();
const made = thing => writeFileSync(${JSON.stringify(out)}, thing + ' ' + process.pid);
it('leaks a ${what}', async () => {
${rest}
});
`);
      // as a sibling test file: its root beside ours, under the same dir
      const r = await execa(process.execPath, ['--test', '--test-reporter=spec', file], { reject: false, all: true, stdin: 'ignore', env: { FERRY_TEST_TMP: dirname(testScope.scopes), NODE_TEST_CONTEXT: undefined } });
      const [thing, pid] = (await readFile(out, 'utf8').catch(() => '')).split(' ');
      return { what, r, thing, pid: Number(pid) };
    });
    const results = await Promise.all(runs);
    try {
      for (const { what, r, thing } of results) {
        assert.ok(thing, `the ${what} child made its leak:\n${r.all}`);
        assert.notEqual(r.exitCode, 0, `the ${what} child's guard failed it:\n${r.all}`);
        assert.match(String(r.all), /left behind on the machine by this file/, `${what}: the guard's message`);
        const expected = { link: [`links: ${thing} (bridge)`, `qdiscs: qdisc tbf`], netns: [`netns: ${thing}`], serve: [`servers: ${thing} `] }[what]!;
        for (const e of expected) assert.ok(String(r.all).includes(e), `${what}: "${e}" reported:\n${r.all}`);
      }
    } finally {
      for (const { what, thing, pid } of results) {
        if (!thing) continue;
        if (what === 'link') await execa('ip', ['link', 'del', thing], { reject: false });
        if (what === 'netns') await deleteNetns(thing);
        if (what === 'serve') {
          process.kill(Number(thing), 'SIGTERM');
          await until('the leaked serve ends', async () => !alive(Number(thing)));
        }
        await rm(join(testScope.scopes, `t${pid}`), { recursive: true, force: true });
      }
    }
  });
});
