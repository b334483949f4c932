// The concurrency sweep of npm run bench (BENCH_FIGURES=sweep): CPU per new session of parley against
// the bare pipe at several client concurrencies, both served at once with connections dealt to them in
// turn (as the "at once" figure), so each window's ratio compares the same moments of the machine; the
// same for resumed sessions, and the p99 of 64-byte round trips on long-lived sessions (that many
// sessions to each server, both loops running at once).
// Windows rotate through the concurrencies (window 1 at each, then window 2 at each, …) so that a
// change in the machine's load spreads over all of them. Each window records the 1-minute load
// average beside it: on shared cores the ratio moves with it, and a report should say so.
// Settings: BENCH_SWEEP (1,4,16,64) the concurrencies, BENCH_SWEEP_WINDOWS (3) windows each,
// BENCH_SWEEP_KINDS (new,resumed,rt) which figures.
import { loadavg } from "node:os";
import { median } from "./load.js";

export type Kind = "new" | "resumed" | "rt";

/** One window of parley and the pipe at once: the compared figure of each, and others to report. */
export interface PairFigures {
  /** CPU µs per session (new, resumed) or round-trip p99 in ms (rt). */
  readonly parley: number;
  readonly pipe: number;
  readonly extra: Record<string, number>;
}

/** Measures parley and the pipe at once at `concurrency`. */
export type MeasurePair = (kind: Kind, concurrency: number) => Promise<PairFigures>;

interface SweepWindow extends PairFigures {
  readonly ratio: number;
  /** The 1-minute load average when the window ended. */
  readonly load1: number;
}

export interface SweepPoint {
  readonly kind: Kind;
  readonly concurrency: number;
  /** What `parley` and `pipe` are: CPU µs per session, or the round trips' p99 in ms. */
  readonly figure: "cpu_us_per_session" | "rt_p99_ms";
  readonly windows: SweepWindow[];
  readonly parley: number;
  readonly pipe: number;
  readonly median_ratio: number;
  readonly min_ratio: number;
  readonly max_ratio: number;
}

export interface Sweep {
  readonly date: string;
  readonly seconds_per_window: number;
  /** The target the issue sets at every concurrency: parley ≤ 1.1× the pipe (CPU per new session, p99). */
  readonly target_ratio: number;
  readonly points: SweepPoint[];
}

export const SWEEP_CONCURRENCY = (process.env.BENCH_SWEEP ?? "1,4,16,64").split(",").map(Number);
const WINDOWS = Number(process.env.BENCH_SWEEP_WINDOWS ?? 3);
const KINDS = (process.env.BENCH_SWEEP_KINDS ?? "new,resumed,rt").split(",") as Kind[];
const TARGET = 1.1;

/** Runs the sweep: WINDOWS rotations over every (kind, concurrency). */
export async function sweep(measure: MeasurePair, seconds: number): Promise<Sweep> {
  const cells = KINDS.flatMap((kind) => SWEEP_CONCURRENCY.map((concurrency) => ({ kind, concurrency, windows: [] as SweepWindow[] })));
  for (let w = 0; w < WINDOWS; w++) {
    for (const cell of cells) {
      const m = await measure(cell.kind, cell.concurrency);
      cell.windows.push({ ...m, ratio: +(m.parley / m.pipe).toFixed(3), load1: +loadavg()[0]!.toFixed(1) });
    }
  }
  const points = cells.map(({ kind, concurrency, windows }) => {
    const ratios = windows.map((x) => x.ratio);
    return {
      kind,
      concurrency,
      figure: kind === "rt" ? ("rt_p99_ms" as const) : ("cpu_us_per_session" as const),
      windows,
      parley: median(windows.map((x) => x.parley)),
      pipe: median(windows.map((x) => x.pipe)),
      median_ratio: +median(ratios).toFixed(3),
      min_ratio: Math.min(...ratios),
      max_ratio: Math.max(...ratios),
    };
  });
  return { date: new Date().toISOString(), seconds_per_window: seconds, target_ratio: TARGET, points };
}

export function printSweep(s: Sweep): void {
  console.log(`\nconcurrency sweep, parley and the pipe at once (target parley/pipe <= ${s.target_ratio}: new sessions' CPU, round trips' p99):`);
  for (const p of s.points) {
    const verdict = p.kind === "resumed" ? "" : p.max_ratio <= s.target_ratio ? " met" : p.median_ratio <= s.target_ratio ? " met at the median" : " NOT met";
    const loads = p.windows.map((w) => w.load1).join(" ");
    const unit = p.kind === "rt" ? "ms p99" : "µs CPU";
    const fmt = (v: number) => (p.kind === "rt" ? v.toFixed(2) : v.toFixed(0));
    console.log(
      `  ${p.kind.padEnd(8)} c=${String(p.concurrency).padEnd(3)} parley ${fmt(p.parley)} ${unit}, pipe ${fmt(p.pipe)}, ` +
        `parley/pipe ${p.median_ratio} (${p.min_ratio}-${p.max_ratio})${verdict}; load ${loads}`,
    );
  }
}
