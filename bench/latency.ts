// New-session latency for npm run bench (bench/proxy.ts): from connect to the first echoed byte, so
// TCP, the full mTLS handshake, the decision, the upstream dial and one echo, at 1, 8 and 32 sessions
// in flight. Every session is new (no TLS resumption). Percentiles over BENCH_LATENCY_SECONDS (default
// 3) per concurrency level.
import { connect, type ConnectionOptions } from "node:tls";

export const LATENCY_CONCURRENCY = [1, 8, 32] as const;
const SECONDS = Number(process.env.BENCH_LATENCY_SECONDS ?? 3);
const payload = Buffer.alloc(64, 42);

/** One new session: ms from connect to the first echoed byte; the session is then closed. */
function firstByte(options: ConnectionOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = connect(options);
    s.setNoDelay(true);
    s.once("error", reject);
    s.once("data", () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      s.once("close", () => resolve(ms));
      s.end();
    });
    // Written at once: Node holds it until the handshake is done, as a client in a hurry would.
    s.write(payload);
  });
}

async function atConcurrency(options: ConnectionOptions, concurrency: number): Promise<number[]> {
  const lat: number[] = [];
  const until = Date.now() + SECONDS * 1000;
  const worker = async () => {
    while (Date.now() < until) lat.push(await firstByte(options).catch(() => NaN));
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return lat;
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;

/** `new_session_c{N}_p50_ms` and `_p99_ms` for each concurrency (failed sessions count as lost, not fast). */
export async function newSessionLatency(options: ConnectionOptions): Promise<Record<string, number>> {
  const figures: Record<string, number> = {};
  for (const c of LATENCY_CONCURRENCY) {
    const lat = await atConcurrency(options, c);
    const ok = lat.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
    if (ok.length < lat.length) console.log(`  ${lat.length - ok.length} of ${lat.length} new sessions failed at ${c} concurrent`);
    figures[`new_session_c${c}_p50_ms`] = quantile(ok, 0.5);
    figures[`new_session_c${c}_p99_ms`] = quantile(ok, 0.99);
  }
  return figures;
}

export const LATENCY_SKIPPED: Record<string, number> = Object.fromEntries(
  LATENCY_CONCURRENCY.flatMap((c) => [`new_session_c${c}_p50_ms`, `new_session_c${c}_p99_ms`].map((k) => [k, NaN])),
);

/** The target: new-session p50 at 8 concurrent within 1.5x nginx's. */
export function latencyVerdict(parley: Record<string, number> | undefined, nginx: Record<string, number> | undefined): string | undefined {
  const p = parley?.new_session_c8_p50_ms;
  const n = nginx?.new_session_c8_p50_ms;
  if (p === undefined || n === undefined || Number.isNaN(p) || Number.isNaN(n)) return undefined;
  const ratio = p / n;
  return `new-session p50 at 8 concurrent: parley ${p.toFixed(2)} ms, nginx ${n.toFixed(2)} ms, ratio ${ratio.toFixed(2)} (target <= 1.5: ${ratio <= 1.5 ? "met" : "NOT met"})`;
}
