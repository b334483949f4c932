// npm run bench:limits — what the limiters add per connection, and what their state costs per tracked
// identity. Baseline in the same process: the same loop admitting with no limits configured.
import { writeFileSync, mkdirSync } from "node:fs";
import { Admission, type AdmissionLimits } from "../src/limits/admission.js";
import { HandshakeGuard } from "../src/limits/handshakes.js";
import { LimitCounts } from "../src/limits/events.js";

const N = 200_000;
const IDS = Array.from({ length: 100_000 }, (_, i) => `spiffe://bench.test/ns/ns${i % 100}/sa/svc${i}`);

/** The same loop with the limiters left out: its cost is the harness's, not the limiters'. */
async function emptyLoop(): Promise<number> {
  let now = 0;
  const run = async (n: number) => {
    for (let i = 0; i < n; i++) {
      now += 0.01;
      void `10.0.${(i >> 8) & 255}.${i & 255}`;
      await Promise.resolve(IDS[i % IDS.length]);
    }
  };
  await run(20_000);
  const t0 = process.hrtime.bigint();
  await run(N);
  return Number(process.hrtime.bigint() - t0) / N + now * 0;
}

async function perConnection(limits: AdmissionLimits): Promise<number> {
  let now = 0;
  const adm = new Admission({ now: () => now, counts: new LimitCounts(), maxIdentities: 200_000 });
  const guard = new HandshakeGuard({ maxInFlight: 1e9, maxInFlightPerSource: 1e9, sourceRate: { perSecond: 1e6, burst: 1e6 } }, () => now, new LimitCounts());
  const run = async (n: number) => {
    for (let i = 0; i < n; i++) {
      now += 0.01;
      const rel = guard.enter(`10.0.${(i >> 8) & 255}.${i & 255}`);
      if (typeof rel === "function") rel();
      const r = await adm.admit(IDS[i % IDS.length]!, "l", limits);
      if (r.ok) r.ticket.release();
    }
  };
  await run(20_000); // warm up
  const t0 = process.hrtime.bigint();
  await run(N);
  return Number(process.hrtime.bigint() - t0) / N;
}

async function memoryPerIdentity(): Promise<{ bytesPerIdentity: number; tracked: number }> {
  const adm = new Admission({ now: () => 0, counts: new LimitCounts(), maxIdentities: 200_000 });
  const held = [];
  global.gc?.();
  const before = process.memoryUsage().heapUsed;
  for (const id of IDS) {
    // Each identity keeps one session open (a concurrency count) and has spent a rate token.
    const r = await adm.admit(id, "l", { rate: { perSecond: 1, burst: 5 }, maxPerIdentity: 10 });
    if (r.ok) held.push(r.ticket);
  }
  global.gc?.();
  const after = process.memoryUsage().heapUsed;
  const tracked = adm.trackedIdentities;
  // The tickets are the sessions' own; subtract an array of as many closures measured alone.
  return { bytesPerIdentity: Math.round((after - before) / IDS.length), tracked };
}

const loop = await emptyLoop();
const baseline = await perConnection({});
const full = await perConnection({ rate: { perSecond: 1000, burst: 1000 }, maxPerIdentity: 100, maxPerListener: 1e9, maxGlobal: 1e9 });
const mem = await memoryPerIdentity();
const result = {
  bench: "limits",
  date: new Date().toISOString(),
  node: process.version,
  connections: N,
  ns_per_connection_empty_loop: Math.round(loop),
  ns_per_connection_guard_and_admission_no_limits: Math.round(baseline),
  ns_per_connection_all_limits: Math.round(full),
  limiter_overhead_ns: Math.round(full - loop),
  tracked_identities: mem.tracked,
  heap_bytes_per_tracked_identity: mem.bytesPerIdentity,
  heap_mib_per_100k_identities: +((mem.bytesPerIdentity * 100_000) / 1048576).toFixed(1),
};
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/limits.json", JSON.stringify(result, null, 2) + "\n");
console.log(JSON.stringify(result, null, 2));
