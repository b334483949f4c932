// glibc's malloc settings for a process that moves bulk data: keep freed memory instead of handing the
// heap's top back to the kernel after every burst. Call first thing in a command that runs a sidecar.
//
// Measured (README "Bulk under limits"): with glibc's default trim threshold (128 KiB, raised
// dynamically up to 32 MiB), a bulk transfer made parley's main thread trim the top of its heap with
// brk and fault it back in (449 brk calls per GiB where a bare Node pipe, with a smaller heap, made
// none): up to 1.8x the pipe's CPU per GiB. With the two tunables below both spend the same system time
// per GiB. The cost is memory: up to 128 MiB freed but kept, and 64 MiB of padding per heap extension.
//
// glibc reads GLIBC_TUNABLES once, when the process starts, and there is no mallopt() from JavaScript;
// so the process replaces itself (execve, same pid, same arguments and flags) with the variable set,
// once: the new process carries a marker and never restarts again. Left as they are: an operator who
// set either tunable (in GLIBC_TUNABLES, or glibc's older MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_;
// `GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072` gives back glibc's default), other tunables
// they set (kept beside ours), a C library that is not glibc, a process in secure mode (setuid or
// file capabilities: glibc ignores the variable there), one under Node's permission model without
// --allow-child-process, and one with the inspector on (a debugger would have to attach twice).
import { readFileSync } from "node:fs";

export const MALLOC_TUNABLES = "glibc.malloc.trim_threshold=134217728:glibc.malloc.top_pad=67108864";
/** Set in the restarted process: it does not restart again, whatever its environment says. */
const MARKER = "PARLEY_MALLOC_RESTARTED";

const OPERATOR_SET = /(?:^|:)glibc\.malloc\.(?:trim_threshold|top_pad)=/;

/** GLIBC_TUNABLES with parley's malloc settings added, or undefined when the operator set either one. */
export function tunables(current: string | undefined): string | undefined {
  if (current === undefined || current === "") return MALLOC_TUNABLES;
  return OPERATOR_SET.test(current) ? undefined : `${current}:${MALLOC_TUNABLES}`;
}

/** The environment to restart with, or undefined when the process should run as it is. */
export function restartEnv(env: NodeJS.ProcessEnv, execArgv: readonly string[]): NodeJS.ProcessEnv | undefined {
  if (env[MARKER] !== undefined || env.MALLOC_TRIM_THRESHOLD_ !== undefined || env.MALLOC_TOP_PAD_ !== undefined) return undefined;
  if (/--inspect/.test([...execArgv, env.NODE_OPTIONS ?? ""].join(" "))) return undefined;
  const value = tunables(env.GLIBC_TUNABLES);
  return value === undefined ? undefined : { ...env, GLIBC_TUNABLES: value, [MARKER]: "1" };
}

/**
 * Restarts this process in place with the malloc tunables when they are missing and would take
 * effect: does not return in that case. Returns when nothing needs changing or it cannot be done.
 */
export function tuneMalloc(env: NodeJS.ProcessEnv = process.env): void {
  if (process.platform !== "linux" || typeof process.execve !== "function") return;
  const next = restartEnv(env, process.execArgv);
  if (next === undefined || childProcessesDenied() || !glibc() || secureMode()) return;
  try {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], next);
  } catch {
    // Refused (a sandbox, a seccomp filter): run with glibc's defaults rather than not at all.
  }
}

/** Node's permission model without --allow-child-process (process.permission exists only under the model). */
function childProcessesDenied(): boolean {
  const permission = (process as { permission?: { has(scope: string): boolean } }).permission;
  return permission !== undefined && !permission.has("child");
}

function glibc(): boolean {
  const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
  return typeof header?.glibcVersionRuntime === "string";
}

/** AT_SECURE (23) in the auxiliary vector: the loader ignores GLIBC_TUNABLES' malloc settings then. */
function secureMode(): boolean {
  try {
    const auxv = readFileSync("/proc/self/auxv");
    for (let i = 0; i + 16 <= auxv.length; i += 16) if (auxv.readBigUInt64LE(i) === 23n) return auxv.readBigUInt64LE(i + 8) !== 0n;
  } catch {
    // No /proc: nothing tells, so no restart.
    return true;
  }
  return false;
}
