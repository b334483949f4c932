// npm run bench:policy — decisions per second and latency percentiles of decide() for 10, 1,000 and
// 10,000 rules over 10,000 distinct identities. The 10-rule run is the baseline: the report gives each
// size's figures as ratios to it, measured in the same process.
import { writeFileSync, mkdirSync } from "node:fs";
import { SpiffeId } from "../src/spiffe/spiffeid.js";
import { compilePolicies, type RawRule } from "../src/policy/compile.js";
import { decide } from "../src/policy/decide.js";
import { type DecisionInput } from "../src/policy/decision.js";
import type { Policy } from "../src/policy/model.js";

const IDENTITIES = 10_000;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const NS = 100;

/** A realistic mix: exact IDs, namespace prefixes, globs, some with conditions or roles; a few denies. */
function rules(n: number): RawRule[] {
  const out: RawRule[] = [];
  for (let i = 0; i < n; i++) {
    const kind = i % 10;
    const ns = `ns${i % NS}`;
    if (kind === 0) out.push({ name: `deny-${i}`, action: "deny", match: [{ id: `spiffe://bench.test/${ns}/sa/banned${i}` }] });
    else if (kind < 6) out.push({ name: `exact-${i}`, action: "allow", match: [{ id: `spiffe://bench.test/${ns}/sa/svc${i}` }] });
    else if (kind === 6) out.push({ name: `glob-${i}`, action: "allow", match: [{ glob: `spiffe://bench.test/${ns}/sa/*/v${i}` }] });
    else if (kind === 7)
      out.push({ name: `cidr-${i}`, action: "allow", match: [{ id: `spiffe://bench.test/${ns}/sa/svc${i}` }], conditions: { source_cidrs: ["10.0.0.0/8"] } });
    else if (kind === 8) out.push({ name: `role-${i}`, action: "allow", match: [{ id: `spiffe://bench.test/${ns}/sa/svc${i}` }], roles: ["reader"] });
    else out.push({ name: `prefix-${i}`, action: "allow", match: [{ path_prefix: `spiffe://bench.test/${ns}/team${i}` }], conditions: { alpn: ["h2"] } });
  }
  return out;
}

function compile(n: number): { policy: Policy; ms: number } {
  const t0 = performance.now();
  const errors: string[] = [];
  const map = compilePolicies(
    {
      policies: { bench: { default: "deny", mode: "enforce", rules: rules(n) } },
      roles: { reader: [{ path_prefix: "spiffe://bench.test/ns1" }] },
      attestors: [],
      listeners: ["l"],
    },
    "bench",
    (p, m) => errors.push(`${p.join(".")}: ${m}`),
  );
  if (errors.length) throw new Error(errors.slice(0, 3).join("\n"));
  return { policy: map.get("bench")!, ms: performance.now() - t0 };
}

function inputs(): DecisionInput[] {
  const now = Date.now();
  return Array.from({ length: IDENTITIES }, (_, j) => ({
    listener: "l",
    sourceAddress: `10.0.${(j >> 8) & 255}.${j & 255}`,
    sni: null,
    alpn: j % 2 ? "h2" : null,
    now,
    peer: {
      ok: true,
      svid: { id: SpiffeId.parse(`spiffe://bench.test/ns${j % NS}/sa/svc${j}`), leaf: { notBefore: now - 1e6, notAfter: now + 3.6e6, fingerprint: "00" } },
    },
  }));
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function measure(policy: Policy, ins: DecisionInput[]) {
  for (let w = 0; w < 3; w++) for (const i of ins) decide(policy, i); // warm up the JIT
  const lat = new Float64Array(ins.length * ROUNDS);
  let k = 0;
  let allowed = 0;
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < ROUNDS; r++) {
    for (const i of ins) {
      const s = process.hrtime.bigint();
      if (decide(policy, i).decision === "allow") allowed++;
      lat[k++] = Number(process.hrtime.bigint() - s) / 1000;
    }
  }
  const totalS = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort();
  return {
    decisionsPerSec: Math.round(lat.length / totalS),
    p50Us: percentile(lat, 50),
    p99Us: percentile(lat, 99),
    p999Us: percentile(lat, 99.9),
    allowedShare: allowed / lat.length,
  };
}

const ins = inputs();
const results: Record<string, unknown>[] = [];
let base: { decisionsPerSec: number; p99Us: number } | undefined;
for (const n of [10, 1_000, 10_000]) {
  const { policy, ms } = compile(n);
  const m = measure(policy, ins);
  base ??= m;
  results.push({
    rules: n,
    compileMs: Math.round(ms),
    ...m,
    p99VsBaseline: +(m.p99Us / base.p99Us).toFixed(2),
    throughputVsBaseline: +(m.decisionsPerSec / base.decisionsPerSec).toFixed(2),
  });
}
const report = { bench: "policy", date: new Date().toISOString(), node: process.version, identities: IDENTITIES, rounds: ROUNDS, results };
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/policy.json", JSON.stringify(report, null, 2) + "\n");
console.log("rules    compile   decisions/s   p50 µs   p99 µs   p99.9 µs   p99 ×base   rate ×base");
for (const r of results as Array<Record<string, number>>) {
  console.log(
    `${String(r.rules).padStart(6)}  ${String(r.compileMs).padStart(6)} ms  ${String(r.decisionsPerSec).padStart(11)}  ${r.p50Us!.toFixed(2).padStart(7)}  ${r.p99Us!.toFixed(2).padStart(7)}  ${r.p999Us!.toFixed(2).padStart(9)}  ${String(r.p99VsBaseline).padStart(10)}  ${String(r.throughputVsBaseline).padStart(10)}`,
  );
}
console.log("written to bench/results/policy.json");
