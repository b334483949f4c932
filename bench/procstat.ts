// What the benchmarks read of a server process from /proc: its tree (nginx's workers, the shell a
// parley runs under), CPU time and resident memory. Linux only, as the benchmarks are.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

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

/** utime+stime (ms) summed over `pids`, from /proc/PID/stat; a process that has gone counts 0. */
export function cpuMsOf(pids: readonly number[]): number {
  let ms = 0;
  for (const p of pids) {
    try {
      const st = readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ");
      ms += (Number(st[11]) + Number(st[12])) * 10;
    } catch {
      // gone
    }
  }
  return ms;
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
