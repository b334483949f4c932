// The concurrency sweep of npm run bench (BENCH_FIGURES=sweep): CPU per new session of parley against
// the bare pipe at several client concurrencies, both served at once with connections dealt to them in
// turn (as the "at once" figure), so each window's ratio compares the same moments of the machine.
// Windows rotate through the concurrencies (window 1 at each, then window 2 at each, …) so that a
// change in the machine's load spreads over all of them. Each window records the 1-minute load
// average beside it: on shared cores the ratio moves with it, and a report should say so.
// Settings: BENCH_SWEEP (1,4,16,64) the concurrencies, BENCH_SWEEP_WINDOWS (3) windows each,
// BENCH_SWEEP_KINDS (new,resumed) full handshakes and/or resumed TLS sessions.
import { loadavg } from "node:os";
import { median } from "./load.js";

/** One target's figures over one window (what bench/proxy.ts measures). */
export interface SessionFigures {
  readonly perSec: number;
  readonly cpuUsPerSession: number;
}

/** Measures parley and the pipe at once: [parley, pipe], at `concurrency`, resumed or not. */
export type MeasurePair = (concurrency: number, resume: boolean) => Promise<readonly SessionFigures[]>;

type Kind = "new" | "resumed";

interface SweepWindow {
  readonly parley_cpu_us: number;
  readonly pipe_cpu_us: number;
  readonly parley_per_s: number;
  readonly pipe_per_s: number;
  readonly ratio: number;
  /** The 1-minute load average when the window ended. */
  readonly load1: number;
}

export interface SweepPoint {
  readonly kind: Kind;
  readonly concurrency: number;
  readonly windows: SweepWindow[];
  readonly parley_cpu_us: number;
  readonly pipe_cpu_us: number;
  readonly median_ratio: number;
  readonly min_ratio: number;
  readonly max_ratio: number;
}

export interface Sweep {
  readonly date: string;
  readonly seconds_per_window: number;
  /** The target the issue sets for every concurrency: parley ≤ 1.1× the pipe's CPU per new session. */
  readonly target_ratio: number;
  readonly points: SweepPoint[];
}

export const SWEEP_CONCURRENCY = (process.env.BENCH_SWEEP ?? "1,4,16,64").split(",").map(Number);
const WINDOWS = Number(process.env.BENCH_SWEEP_WINDOWS ?? 3);
const KINDS = (process.env.BENCH_SWEEP_KINDS ?? "new,resumed").split(",") as Kind[];
const TARGET = 1.1;

/** Runs the sweep: WINDOWS rotations over every (kind, concurrency). */
export async function sweep(measure: MeasurePair, seconds: number): Promise<Sweep> {
  const cells = KINDS.flatMap((kind) => SWEEP_CONCURRENCY.map((concurrency) => ({ kind, concurrency, windows: [] as SweepWindow[] })));
  for (let w = 0; w < WINDOWS; w++) {
    for (const cell of cells) {
      const [p, q] = await measure(cell.concurrency, cell.kind === "resumed");
      cell.windows.push({
        parley_cpu_us: Math.round(p!.cpuUsPerSession),
        pipe_cpu_us: Math.round(q!.cpuUsPerSession),
        parley_per_s: Math.round(p!.perSec),
        pipe_per_s: Math.round(q!.perSec),
        ratio: +(p!.cpuUsPerSession / q!.cpuUsPerSession).toFixed(3),
        load1: +loadavg()[0]!.toFixed(1),
      });
    }
  }
  const points = cells.map(({ kind, concurrency, windows }) => {
    const ratios = windows.map((x) => x.ratio);
    return {
      kind,
      concurrency,
      windows,
      parley_cpu_us: median(windows.map((x) => x.parley_cpu_us)),
      pipe_cpu_us: median(windows.map((x) => x.pipe_cpu_us)),
      median_ratio: median(ratios),
      min_ratio: Math.min(...ratios),
      max_ratio: Math.max(...ratios),
    };
  });
  return { date: new Date().toISOString(), seconds_per_window: seconds, target_ratio: TARGET, points };
}

export function printSweep(s: Sweep): void {
  console.log(`\nconcurrency sweep, parley and the pipe at once, CPU per session (target parley/pipe <= ${s.target_ratio} for new sessions):`);
  for (const p of s.points) {
    const verdict = p.kind === "new" ? (p.max_ratio <= s.target_ratio ? " met" : p.median_ratio <= s.target_ratio ? " met at the median" : " NOT met") : "";
    const loads = p.windows.map((w) => w.load1).join(" ");
    console.log(
      `  ${p.kind.padEnd(8)} c=${String(p.concurrency).padEnd(3)} parley ${p.parley_cpu_us} µs, pipe ${p.pipe_cpu_us} µs, ` +
        `parley/pipe ${p.median_ratio} (${p.min_ratio}-${p.max_ratio})${verdict}; load ${loads}`,
    );
  }
}
