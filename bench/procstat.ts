// What the benchmarks read of a server process from /proc: its tree (nginx's workers, the shell a
// parley runs under), CPU time (also by thread kind) and resident memory. Linux only, as the benchmarks are.
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";

/** A process and its children. */
export function processTree(pid: number): number[] {
  try {
    return [
      pid,
      ...execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" })
        .trim()
        .split("\n")
        .filter(Boolean)
        .map(Number),
    ];
  } catch {
    return [pid];
  }
}

/**
 * CPU time (ms) of `pids`: the scheduler's own runtime of each thread (/proc/PID/task/TID/schedstat,
 * nanoseconds). utime+stime (/proc/PID/stat) is sampled at each tick on kernels built with tick
 * accounting (CONFIG_TICK_CPU_ACCOUNTING, 250 Hz here): a 1.5 s figure is ~375 samples, ±5 % from
 * round to round on its own, and a ratio of two such ±7 %, more than the differences measured. Falls
 * back to utime+stime where schedstat is absent. A thread that exits between two readings takes its
 * runtime with it (the servers measured keep theirs); a process that has gone counts 0.
 */
export function cpuMsOf(pids: readonly number[]): number {
  let ms = 0;
  for (const p of pids) ms += SCHEDSTAT ? runtimeMs(p) : tickMs(p);
  return ms;
}

const SCHEDSTAT = existsSync("/proc/self/schedstat");

/** Sum of the scheduler's runtime of `pid`'s threads (ms); a process or thread that has gone counts 0. */
function runtimeMs(pid: number): number {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return 0;
  }
  let ns = 0;
  for (const t of tids) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // gone
    }
  }
  return ns / 1e6;
}

/** utime+stime (ms) of `pid`, from /proc/PID/stat (tick-sampled). */
function tickMs(pid: number): number {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(st[11]) + Number(st[12])) * 10;
  } catch {
    return 0; // gone
  }
}

/** VmRSS (KiB) summed over `pids`. */
export function rssKiBOf(pids: readonly number[]): number {
  let kib = 0;
  for (const p of pids) {
    try {
      kib += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, "utf8"))![1]);
    } catch {
      // gone
    }
  }
  return kib;
}

/** A thread's kind by its name: Node's main thread, V8's workers (GC, compiler), libuv's pool, other. */
function threadKind(comm: string, main: string): string {
  if (comm === main) return "main";
  if (comm.startsWith("V8")) return "v8";
  if (comm.startsWith("libuv")) return "libuv";
  return "other";
}

/** CPU (ms) of `pids`' threads by kind and user/system (/proc/PID/task/TID/stat), to see where it goes. */
export function cpuMsByThread(pids: readonly number[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of pids) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    const main = readFileSync(`/proc/${p}/comm`, "utf8").trim();
    for (const t of tids) {
      try {
        const stat = readFileSync(`/proc/${p}/task/${t}/stat`, "utf8");
        const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
        const st = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
        const kind = threadKind(comm, main);
        out[`${kind}.user`] = (out[`${kind}.user`] ?? 0) + Number(st[11]) * 10;
        out[`${kind}.sys`] = (out[`${kind}.sys`] ?? 0) + Number(st[12]) * 10;
      } catch {
        // gone
      }
    }
  }
  return out;
}
