// Mutual (bidirectional) iSCSI CHAP for qemu-storage-daemon.
//
// Why this exists: qemu 7.2's iscsi block driver only sets the initiator's
// CHAP account (iscsi_set_initiator_username_pwd); it has no option for the
// target's own (outgoing) account, so it cannot ask the target to prove
// itself. libiscsi can (iscsi_set_target_username_pwd), and qemu never reads
// LIBISCSI_CHAP_TARGET_* (it parses URLs without a context). So Ferry
// preloads a tiny shared object into the daemon: whenever an initiator
// account is set on a context, it also sets the target account, read from
// the 0600 file named by FERRY_ISCSI_MUTUAL_CHAP_FILE (`USER:PASSWORD`). The
// environment holds only the path; the password stays in the file. It fails
// closed (the open fails) when the file cannot be used, and touches
// FERRY_ISCSI_MUTUAL_CHAP_ACK so Ferry can prove it ran: a preload that the
// loader ignored must not silently drop the target's authentication.
//
// It is compiled with gcc on first use into a root-owned cache directory,
// keyed by the hash of its source, and linked against libiscsi.so.7 so that
// dlsym(RTLD_NEXT) finds the real function even though qemu opens its iscsi
// module with local binding.
import { createHash } from 'node:crypto';
import { chmod, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mutualChapUnavailable, ToolError } from '../errors.js';
import { run } from '../util/exec.js';

const SOURCE = String.raw`/* Ferry: set libiscsi's target (outgoing) CHAP account wherever qemu sets the initiator's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct iscsi_context;
int iscsi_set_target_username_pwd(struct iscsi_context *iscsi, const char *user, const char *passwd);
typedef int (*set_fn)(struct iscsi_context *, const char *, const char *);

static char user[256], passwd[256];

static int load(void) { /* the file once: "USER:PASSWORD", a trailing newline ignored */
  static int state; /* 0 unread, 1 ok, -1 unusable */
  char buf[520], *colon;
  size_t n;
  FILE *f;
  const char *path = getenv("FERRY_ISCSI_MUTUAL_CHAP_FILE");
  if (state) return state > 0;
  state = -1;
  if (!path || !(f = fopen(path, "re"))) return 0;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  buf[strcspn(buf, "\r\n")] = 0;
  colon = strchr(buf, ':');
  if (colon && colon > buf && colon[1] && (size_t)(colon - buf) < sizeof user && strlen(colon + 1) < sizeof passwd) {
    *colon = 0;
    strcpy(user, buf);
    strcpy(passwd, colon + 1);
    state = 1;
  }
  memset(buf, 0, sizeof buf);
  return state > 0;
}

int iscsi_set_initiator_username_pwd(struct iscsi_context *iscsi, const char *u, const char *p) {
  set_fn real = (set_fn)dlsym(RTLD_NEXT, "iscsi_set_initiator_username_pwd");
  const char *ack = getenv("FERRY_ISCSI_MUTUAL_CHAP_ACK");
  int fd;
  if (!real || real(iscsi, u, p) != 0) return -1;
  if (!u || !u[0]) return 0;
  if (!load() || iscsi_set_target_username_pwd(iscsi, user, passwd) != 0) return -1; /* fail closed */
  if (ack && (fd = open(ack, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) >= 0) close(fd);
  return 0;
}
`;

const LIBISCSI = '/usr/lib/x86_64-linux-gnu/libiscsi.so.7';

let built: Promise<string> | undefined;

/** The path of the compiled shim (built once per source version, then reused). */
export function mutualChapShim(): Promise<string> {
  built ??= build().catch(e => { built = undefined; throw e; });
  return built;
}

async function build(): Promise<string> {
  const hash = createHash('sha256').update(SOURCE).digest('hex').slice(0, 12);
  const dir = join(process.env.FERRY_CACHE ?? '/var/cache/ferry', 'native');
  await mkdir(dir, { recursive: true, mode: 0o755 });
  // it is loaded into a daemon running as root: only root may have written it
  const uid = process.getuid?.() ?? 0;
  for (const p of [dir, join(dir, '..')]) {
    const st = await stat(p);
    if (st.uid !== uid || st.mode & 0o022) throw mutualChapUnavailable(`${p} must belong to this user and not be writable by group or others: it holds the helper Ferry loads into qemu-storage-daemon`);
  }
  const so = join(dir, `iscsi-mutual-chap-${hash}.so`);
  const have = await stat(so).catch(() => undefined);
  if (have && have.uid === uid && !(have.mode & 0o022)) return so;
  const lib = await stat(LIBISCSI).catch(() => undefined);
  const tmp = `${so}.${process.pid}.tmp`;
  const src = `${tmp}.c`;
  try {
    await writeFile(src, SOURCE, { mode: 0o644 });
    await run('gcc', ['-shared', '-fPIC', '-O2', '-Wall', '-o', tmp, src, lib ? LIBISCSI : '-l:libiscsi.so.7', '-ldl']).catch((e: unknown) => {
      throw mutualChapUnavailable(`building its libiscsi helper with gcc failed (${e instanceof ToolError ? e.message : String(e)}); run scripts/setup.sh`);
    });
    await chmod(tmp, 0o755);
    await rename(tmp, so);
  } finally {
    await rm(src, { force: true });
    await rm(tmp, { force: true });
  }
  return so;
}
