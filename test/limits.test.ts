// Limits as pure logic on an injected clock: token buckets, keyed buckets in bounded memory,
// throttles, handshake guards. (Admission's holding and the socket effects are in limits-sockets.)
import { describe, expect, it } from "vitest";
import { fullBucket, isFull, take, takeOrOwe, waitFor } from "../src/limits/bucket.js";
import { HandshakeGuard } from "../src/limits/handshakes.js";
import { KeyedBuckets } from "../src/limits/keyed.js";
import { SharedThrottles, Throttle } from "../src/limits/throttle.js";
import { Admission } from "../src/limits/admission.js";
import { LimitCounts } from "../src/limits/events.js";
import { AdmissionPlans } from "../src/limits/plan.js";
import { SharedLimits } from "../src/limits/shared.js";
import { TaskBounds } from "../src/limits/tasks.js";
import { compilePolicies } from "../src/policy/compile.js";
import { decide } from "../src/policy/decide.js";
import { SpiffeId } from "../src/spiffe/spiffeid.js";

describe("token bucket", () => {
  const rate = { perSecond: 10, burst: 3 };
  it("allows a burst, then the steady rate", () => {
    const b = fullBucket(rate, 0);
    expect([take(b, rate, 0), take(b, rate, 0), take(b, rate, 0), take(b, rate, 0)]).toEqual([true, true, true, false]);
    expect(waitFor(b, rate, 0)).toBe(100);
    expect(take(b, rate, 99)).toBe(false);
    expect(take(b, rate, 100)).toBe(true);
    // One second of silence refills only up to the burst.
    expect([take(b, rate, 1100), take(b, rate, 1100), take(b, rate, 1100), take(b, rate, 1100)]).toEqual([true, true, true, false]);
  });
  it("goes into debt for bytes and says how long to pause", () => {
    const r = { perSecond: 1000, burst: 100 };
    const b = fullBucket(r, 0);
    expect(takeOrOwe(b, r, 0, 100)).toBe(0);
    expect(takeOrOwe(b, r, 0, 500)).toBe(500);
    expect(isFull(b, r, 500)).toBe(false);
    expect(isFull(b, r, 600)).toBe(true);
  });
});

describe("keyed buckets", () => {
  const rate = { perSecond: 1, burst: 1 };
  it("keeps one bucket per key", () => {
    const k = new KeyedBuckets();
    expect([k.take("a", rate, 0), k.take("a", rate, 0), k.take("b", rate, 0)]).toEqual([true, false, true]);
    expect(k.waitFor("a", rate, 0)).toBe(1000);
  });
  it("drops keys whose bucket is full again, so idle identities cost nothing", () => {
    const k = new KeyedBuckets();
    for (let i = 0; i < 1000; i++) k.take(`id-${i}`, rate, 0);
    expect(k.size).toBe(1000);
    for (let i = 0; i < 1000; i++) k.take(`late-${i}`, rate, 10_000);
    expect(k.size).toBeLessThanOrEqual(1001);
  });
  it("never holds more than its cap", () => {
    const k = new KeyedBuckets(100);
    for (let i = 0; i < 10_000; i++) k.take(`id-${i}`, rate, 0);
    expect(k.size).toBeLessThanOrEqual(100);
  });
});

describe("throttle", () => {
  it("pauses just long enough to hold the rate, and takes a new rate at once", () => {
    const t = new Throttle(10_000, 0);
    expect(t.consume(1000, 0)).toBe(0); // the burst (a tenth of a second)
    expect(t.consume(10_000, 0)).toBe(1000);
    t.setRate(5_000, 0); // the debt is now paid at the new rate: 10,000 bytes at 5,000/s
    expect(t.consume(0, 1999)).toBeGreaterThan(0);
    expect(t.consume(0, 2000)).toBe(0);
    expect(t.consume(5_000, 3000)).toBe(900); // a 500-byte burst, then 4,500 bytes owed

    t.setRate(undefined, 3000);
    expect(t.consume(1e9, 3000)).toBe(0);
  });
  it("is shared by all sessions of an identity and dropped with the last", () => {
    const s = new SharedThrottles();
    const a = s.acquire("spiffe://td/x", 1000, 0);
    const b = s.acquire("spiffe://td/x", 1000, 0);
    expect(a.up).toBe(b.up);
    a.release();
    a.release();
    expect(s.size).toBe(1);
    b.release();
    expect(s.size).toBe(0);
  });
});

describe("handshake guard", () => {
  it("caps handshakes in flight in all and per source, and frees slots on release", () => {
    const c = new LimitCounts();
    const g = new HandshakeGuard({ maxInFlight: 3, maxInFlightPerSource: 2 }, () => 0, c);
    const a1 = g.enter("10.0.0.1");
    const a2 = g.enter("10.0.0.1");
    expect(g.enter("10.0.0.1")).toBe("source_capacity");
    const b1 = g.enter("10.0.0.2");
    expect(g.enter("10.0.0.3")).toBe("handshake_capacity");
    (a1 as () => void)();
    (a1 as () => void)();
    expect(typeof g.enter("10.0.0.3")).toBe("function");
    expect(g.handshakesInFlight).toBe(3);
    expect(typeof a2 === "function" && typeof b1 === "function").toBe(true);
    expect([c.get("source_capacity"), c.get("handshake_capacity")]).toEqual([1, 1]);
  });
  it("rate-limits new connections per source", () => {
    let now = 0;
    const g = new HandshakeGuard({ maxInFlight: 100, maxInFlightPerSource: 100, sourceRate: { perSecond: 2, burst: 2 } }, () => now, new LimitCounts());
    const r = [g.enter("s"), g.enter("s"), g.enter("s"), g.enter("other")].map((x) => (typeof x === "string" ? x : "ok"));
    expect(r).toEqual(["ok", "ok", "source_rate_limited", "ok"]);
    now = 500;
    expect(typeof g.enter("s")).toBe("function");
  });
});

describe("task bounds", () => {
  const verdicts = async (n: number, l: Parameters<TaskBounds["admit"]>[1], counts = new LimitCounts()) => {
    const tasks = new TaskBounds(() => 0);
    const shared = new SharedLimits({ now: () => 0, counts, onEvent: () => undefined });
    const out = [];
    for (let i = 0; i < n; i++) out.push(await tasks.admit("t-1", l, shared));
    return { tasks, out: out.map((v) => (v.ok ? "ok" : `${v.reason}: ${v.detail}`)) };
  };

  it("refuses a task over its own rate, counting only the sessions it admitted", async () => {
    const { tasks, out } = await verdicts(3, { maxSessions: 5, rate: { perSecond: 1 / 30, burst: 2 } });
    expect(out).toEqual(["ok", "ok", "task_limit_exceeded: task t-1: over 2/min (burst 2)"]);
    expect(tasks.sessionsOf("t-1")).toBe(2);
  });

  it("refuses a shared task rate with no backend to draw from as unavailable", async () => {
    const { tasks, out } = await verdicts(1, { rate: { perSecond: 1, burst: 1 }, shared: true });
    expect(out).toEqual(["shared_limits_unavailable: task t-1: the rule's limit is shared but no shared_limits backend is configured"]);
    expect(tasks.sessionsOf("t-1")).toBe(0);
  });
});

describe("admission plans", () => {
  // Audit mode: the deny rule admits, naming itself, under the policy's limits alone.
  const policy = compilePolicies(
    {
      roles: {},
      attestors: [],
      listeners: [],
      policies: {
        p: {
          default: "allow",
          mode: "audit",
          limits: { rate: { per_second: 5, burst: 2 }, max_wait: 1000 },
          rules: [
            { name: "banned", action: "deny", match: [{ id: "spiffe://td/banned" }], limits: { max_sessions: 1 } },
            { name: "capped", action: "allow", match: [{ id: "spiffe://td/capped" }], limits: { max_sessions: 3 } },
            {
              name: "mesh",
              action: "allow",
              match: [{ id: "spiffe://td/mesh" }],
              limits: { rate: { per_second: 1, scope: "shared" }, max_sessions: { max: 4, scope: "shared" } },
            },
          ],
        },
      },
    },
    "v1",
    (path, msg) => expect.fail(`${path.join(".")}: ${msg}`),
  ).get("p")!;
  const plans = new AdmissionPlans(policy, 7, 100);
  const decided = (id: string) => {
    const d = decide(policy, { listener: "l", sourceAddress: "10.0.0.1", sni: null, alpn: null, now: 0, peer: { ok: true, svid: { id: SpiffeId.parse(id) } } });
    if (d.decision !== "allow") throw new Error(`${id} denied`);
    return d;
  };

  it("gives each allowed decision the bounds of its obligations, the listener's and the sidecar's", () => {
    const common = { maxPerListener: 7, maxGlobal: 100, maxWaitMs: 1000 };
    const capped = decided("spiffe://td/capped");
    const rate = capped.obligations.rate!;
    expect(plans.of(capped.rule).withRate).toEqual({ rate, maxPerIdentity: 3, ...common });
    expect(plans.of(capped.rule).withoutRate).toEqual({ maxPerIdentity: 3, ...common });
    for (const [id, rule] of [
      ["spiffe://td/banned", "banned"],
      ["spiffe://td/other", null],
    ] as const) {
      const d = decided(id);
      expect([d.rule, d.obligations.maxSessions]).toEqual([rule, undefined]);
      expect(plans.of(d.rule).withRate).toEqual({ rate, ...common });
    }
    // A shared max_sessions is a lease, not this sidecar's count.
    const mesh = decided("spiffe://td/mesh");
    expect(plans.of(mesh.rule).withRate).toEqual({ rate: mesh.obligations.rate, ...common });
    expect(plans.of(mesh.rule).withoutRate).toEqual(common);
  });

  it("builds each rule's bounds once: every session of a rule gets the same object", () => {
    expect(plans.of("capped")).toBe(plans.of(decided("spiffe://td/capped").rule));
    expect(plans.of(null)).toBe(plans.of("banned"));
  });
});

describe("admission", () => {
  it("rejects over the identity's rate and concurrency at once when no wait is allowed", async () => {
    let now = 0;
    const c = new LimitCounts();
    const adm = new Admission({ now: () => now, counts: c });
    const limits = { rate: { perSecond: 1, burst: 2 }, maxPerIdentity: 5 };
    const r = [];
    for (let i = 0; i < 3; i++) r.push(await adm.admit("id", "l", limits));
    expect(r.map((x) => (x.ok ? "ok" : x.reason))).toEqual(["ok", "ok", "rate_limited"]);
    now = 1000;
    expect((await adm.admit("id", "l", limits)).ok).toBe(true);
    const conc = { maxPerIdentity: 1 };
    const first = await adm.admit("other", "l", conc);
    const second = await adm.admit("other", "l", conc);
    expect(second.ok ? "ok" : second.reason).toBe("concurrency_limited");
    if (first.ok) first.ticket.release();
    expect((await adm.admit("other", "l", conc)).ok).toBe(true);
    expect([c.get("rate_limited"), c.get("concurrency_limited")]).toEqual([1, 1]);
  });

  it("caps per listener and in all; a released slot frees identity state", async () => {
    const adm = new Admission({ now: Date.now, counts: new LimitCounts() });
    const a = await adm.admit("x", "l1", { maxPerListener: 1, maxGlobal: 2 });
    expect((await adm.admit("y", "l1", { maxPerListener: 1, maxGlobal: 2 })).ok).toBe(false);
    const b = await adm.admit("y", "l2", { maxPerListener: 1, maxGlobal: 2 });
    expect((await adm.admit("z", "l3", { maxGlobal: 2 })).ok).toBe(false);
    if (a.ok) a.ticket.release();
    if (b.ok) b.ticket.release();
    expect(adm.active).toBe(0);
    expect(adm.trackedIdentities).toBe(0);
  });

  it("holds a session for a slot up to max_wait and admits it when one frees", async () => {
    const adm = new Admission({ now: Date.now, counts: new LimitCounts() });
    const first = await adm.admit("id", "l", { maxPerIdentity: 1 });
    const held = adm.admit("id", "l", { maxPerIdentity: 1, maxWaitMs: 2000 });
    setTimeout(() => first.ok && first.ticket.release(), 100);
    const r = await held;
    expect(r.ok).toBe(true);
    expect(r.waitedMs).toBeGreaterThanOrEqual(90);
    expect(r.waitedMs).toBeLessThan(1000);
    const timedOut = await adm.admit("id", "l", { maxPerIdentity: 1, maxWaitMs: 150 });
    expect(timedOut.ok ? "ok" : timedOut.reason).toBe("concurrency_limited");
    expect(timedOut.waitedMs).toBeGreaterThanOrEqual(140);
  });

  it("bounds how many sessions are held at once", async () => {
    const c = new LimitCounts();
    const adm = new Admission({ now: Date.now, counts: c, maxHeld: 1 });
    await adm.admit("id", "l", { maxPerIdentity: 1 });
    const held = adm.admit("id", "l", { maxPerIdentity: 1, maxWaitMs: 200 });
    const overflow = await adm.admit("id", "l", { maxPerIdentity: 1, maxWaitMs: 200 });
    expect([overflow.ok, overflow.waitedMs]).toEqual([false, 0]);
    expect(c.get("held_queue_full")).toBe(1);
    await held;
  });
});
