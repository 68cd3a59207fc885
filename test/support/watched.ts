// What the leak checks watch for, shared by the per-file guard (guard.ts) and
// the runner's end-of-suite check (run.ts). No test scope here: the runner
// imports this, and importing test-scope.ts would make the runner a test
// process whose root every file's root would then nest in (the files would no
// longer see the other test processes on the machine, nor share its netns lock).

// process names as the kernel keeps them (15 characters: qemu-storage-daemon is 'qemu-storage-da')
export const DAEMONS = ['qemu-storage-da', 'qemu-nbd', 'nbdkit', 'tgtd', 'qemu-system-x86', 'dnsmasq'];

/** the long-running Ferry commands a test starts: a node process running the CLI's serve, worker or pxe serve */
export const SERVER_LINE = /\/cli\/main\.js (pxe )?(serve|worker)( |$)/;

/** qdiscs a test may add (the kernel's defaults come and go with their links), "qdisc KIND HANDLE dev NAME ..." */
export const DEFAULT_QDISC = /^qdisc (noqueue|pfifo_fast|fq_codel|mq|noop) /;

/** libvirt keeps defined domains in the first, running ones in the second, each as NAME.xml (read whether libvirtd runs or not) */
export const LIBVIRT_DOMAIN_DIRS = ['/etc/libvirt/qemu', '/run/libvirt/qemu'];

export const under = (path: string, dir: string) => path === dir || path.startsWith(`${dir}/`);
/** /proc/self/mounts escapes spaces and the like as \\ooo */
export const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** A /proc/self/mounts line of the kinds tests make: Ferry's work mounts, FUSE exports, /run/netns and the namespaces in it */
export function watchedMount(line: string): boolean {
  const at = unescape(line.split(' ')[1] ?? '');
  return /ferry-/.test(line) || / fuse(\.\S+)? /.test(line) && !line.includes('/proc/sys/fs/binfmt_misc') || under(at, '/run/netns');
}
