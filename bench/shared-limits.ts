// npm run bench:shared-limits — the latency a shared rate adds to an admission: SharedRate.take against
// a local redis-server (started here, loopback) next to the local bucket's take, interleaved in rounds
// in the same process; p50/p99 per round and their medians. Sequential calls: one admission at a time.
import { performance } from "node:perf_hooks";
import { KeyedBuckets } from "../src/limits/keyed.js";
import { LimitCounts } from "../src/limits/events.js";
import { SharedLimits } from "../src/limits/shared.js";
import { startRedis } from "../testkit/redis.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CALLS = Number(process.env.BENCH_CALLS ?? 5000);
const IDENTITIES = 1000;
const rate = { perSecond: 1e6, burst: 1e6 };

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const median = (xs: number[]) => pct(xs, 50);

async function main(): Promise<void> {
  const redis = await startRedis();
  const shared = new SharedLimits({ now: Date.now, counts: new LimitCounts(), onEvent: () => undefined });
  await shared.configure({
    url: redis.url,
    keyPrefix: "bench:",
    onUnavailable: "deny",
    timeoutMs: 1000,
    leaseTtlMs: 15_000,
    breakerFailures: 3,
    breakerProbeMs: 1000,
  });
  while (shared.status()?.state !== "up") await new Promise((r) => setTimeout(r, 10));
  const local = new KeyedBuckets(100_000);
  const rows: { sharedP50: number; sharedP99: number; localP50: number; localP99: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const s: number[] = [];
    const l: number[] = [];
    for (let i = 0; i < CALLS; i++) {
      const id = `spiffe://bench.test/agent${i % IDENTITIES}`;
      let t = performance.now();
      local.take(id, rate, Date.now());
      l.push((performance.now() - t) * 1000);
      t = performance.now();
      const v = await shared.take(`rate:${id}`, rate);
      s.push((performance.now() - t) * 1000);
      if (v === "local" || !v.ok) throw new Error(`unexpected verdict ${JSON.stringify(v)}`);
    }
    rows.push({ sharedP50: pct(s, 50), sharedP99: pct(s, 99), localP50: pct(l, 50), localP99: pct(l, 99) });
  }
  await shared.close();
  await redis.stop();
  const m = (k: keyof (typeof rows)[0]) => median(rows.map((x) => x[k])).toFixed(1);
  console.log(`shared rate (Redis, loopback): p50 ${m("sharedP50")} µs, p99 ${m("sharedP99")} µs per admission`);
  console.log(`local bucket:                  p50 ${m("localP50")} µs, p99 ${m("localP99")} µs per admission`);
  console.log(`(${ROUNDS} rounds of ${CALLS} calls over ${IDENTITIES} identities; medians of the rounds)`);
}

await main();
