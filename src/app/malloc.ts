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
// so the process replaces itself (execve, same pid, same arguments and flags) with the variable set.
// An operator who sets either tunable in GLIBC_TUNABLES is left as configured (glibc's own default
// back: `GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072`); other tunables they set are kept. Only
// on Linux, where the C library may be glibc: elsewhere the variable means nothing.
export const MALLOC_TUNABLES = "glibc.malloc.trim_threshold=134217728:glibc.malloc.top_pad=67108864";

const OPERATOR_SET = /(?:^|:)glibc\.malloc\.(?:trim_threshold|top_pad)=/;

/** GLIBC_TUNABLES with parley's malloc settings added, or undefined when the operator set either one. */
export function tunables(current: string | undefined): string | undefined {
  if (current === undefined || current === "") return MALLOC_TUNABLES;
  return OPERATOR_SET.test(current) ? undefined : `${current}:${MALLOC_TUNABLES}`;
}

/**
 * Restarts this process in place with the malloc tunables when they are missing: does not return in
 * that case. Returns when nothing needs changing (set already, the operator's own, not Linux, or a
 * Node without process.execve).
 */
export function tuneMalloc(env: NodeJS.ProcessEnv = process.env): void {
  if (process.platform !== "linux" || typeof process.execve !== "function") return;
  const value = tunables(env.GLIBC_TUNABLES);
  if (value === undefined) return;
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], { ...env, GLIBC_TUNABLES: value });
}
