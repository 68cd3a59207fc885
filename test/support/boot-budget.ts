// How long a test boot may take. Under TCG a guest advances only while its
// QEMU runs, so the bound is QEMU's CPU time (the same budget as the wall-clock
// timeouts these tests had when their files ran one at a time): two test files
// at once, or other VMs, slow a boot down without eating its budget. The wall
// clock stays as a backstop at 3x, for a guest that idles without the marker
// (failOn and the guest's own power-off end the usual failures sooner).
export const WALL_FACTOR = 3;

export function bootBudget(cpuMs: number): { cpuTimeoutMs: number; timeoutMs: number } {
  return { cpuTimeoutMs: cpuMs, timeoutMs: cpuMs * WALL_FACTOR };
}
