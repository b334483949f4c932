// Limits on real sockets: rates, concurrency, holding, bandwidth, byte budget, handshake floods.
import { connect as tcpConnect, createServer, type Socket } from "node:net";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { dialTls, limitedPolicy, readAll, startHarness, waitFor, type Harness } from "../testkit/harness.js";
import { ManualClock } from "../testkit/clock.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let alice: Issued;
let bob: Issued;
let h: Harness | undefined;

beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/alice");
  bob = await pki.leaf(pki.a, "spiffe://a.test/bob");
});
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const policy = limitedPolicy;

/** Opens a session and sends "x" without waiting for the answer: `echoed` once it came back. */
async function open(creds: Issued, port = h!.port): Promise<{ s: import("node:tls").TLSSocket; closed: Promise<Buffer>; echoed: () => boolean }> {
  const s = await dialTls(port, pki, creds);
  let got = "";
  s.on("data", (c: Buffer) => (got += c.toString()));
  const closed = readAll(s);
  s.write("x");
  return { s, closed, echoed: () => got === "x" };
}

/** Opens a session and reports whether it was admitted (echo came back) or closed. */
async function attempt(creds: Issued, port = h!.port): Promise<{ admitted: boolean; s: import("node:tls").TLSSocket; closed: Promise<Buffer> }> {
  const { s, closed, echoed } = await open(creds, port);
  const admitted = await Promise.race([waitFor(echoed, 3000, "echo").then(() => true), closed.then(() => false)]);
  return { admitted, s, closed };
}

describe("new-session rate per identity", () => {
  it("admits the burst, rejects the excess with rate_limited, then admits at the steady rate", async () => {
    // The sidecar's clock stands still until the test moves it: no token refills unseen.
    const clock = new ManualClock();
    h = await startHarness(pki, { policies: policy("{ rate: { per_second: 1, burst: 2 } }"), now: clock.now });
    const first = await Promise.all([attempt(alice), attempt(alice), attempt(alice), attempt(alice)]);
    expect(first.filter((r) => r.admitted)).toHaveLength(2);
    const denied = h.logs.of("decision").filter((d) => d.decision === "deny");
    expect(denied.map((d) => d.reasons)).toEqual([["rate_limited"], ["rate_limited"]]);
    expect(denied[0]!.rule).toBe("allowed");
    // Another identity has its own bucket.
    expect((await attempt(bob)).admitted).toBe(true);
    clock.advance(1000); // one new token
    expect((await attempt(alice)).admitted).toBe(true);
    expect((await attempt(alice)).admitted).toBe(false);
    for (const r of first) r.s.destroy();
  });

  it("holds sessions over the rate up to max_wait instead of rejecting them", async () => {
    // The sidecar's clock stands still until the test moves it: a held session gets its token when the
    // test makes one, however far apart the handshakes come (on the wall clock, a slow handshake found
    // a token refilled and was never held).
    const clock = new ManualClock();
    h = await startHarness(pki, { policies: policy("{ rate: { per_second: 10, burst: 1 }, max_wait: 2s }"), now: clock.now });
    const first = await attempt(alice); // the burst's one token
    expect(first.admitted).toBe(true);
    const counts = h.sidecar.limitCounts;
    const waiting = await Promise.all([open(alice), open(alice), open(alice)]);
    const echoed = () => waiting.filter((w) => w.echoed()).length;
    await waitFor(() => counts.get("held") === 3, 5000, "three sessions held");
    for (let n = 1; n <= 3; n++) {
      // Held: neither admitted (no session, no echo) nor refused.
      expect([h.sidecar.registry.size, echoed(), counts.get("rate_limited")]).toEqual([n, n - 1, 0]);
      clock.advance(100); // one new token: one held session is admitted
      await waitFor(() => counts.get("held_then_admitted") === n && echoed() === n, 5000, `${n} held admitted`);
    }
    const held = h.logs.of("decision").map((d) => d.held_ms);
    expect(held.filter((ms) => ms !== undefined).sort()).toEqual([100, 200, 300]);
    expect(held).toHaveLength(4);
    for (const r of [first, ...waiting]) r.s.destroy();
  });
});

describe("concurrent sessions", () => {
  it("caps sessions per identity; a closed session frees its slot", async () => {
    h = await startHarness(pki, { policies: policy("{ max_sessions: 2 }") });
    const a = await attempt(alice);
    const b = await attempt(alice);
    const c = await attempt(alice);
    expect([a.admitted, b.admitted, c.admitted]).toEqual([true, true, false]);
    expect(h.logs.of("decision").at(-1)!.reasons).toEqual(["concurrency_limited"]);
    expect((await attempt(bob)).admitted).toBe(true);
    a.s.end();
    await a.closed;
    await waitFor(() => h!.sidecar.registry.size === 2, 2000, "slot freed");
    expect((await attempt(alice)).admitted).toBe(true);
  });

  it("caps sessions per listener and for the whole sidecar", async () => {
    h = await startHarness(pki, { policies: policy("{}"), extra: "limits: { max_sessions: 2 }" });
    const r = [await attempt(alice), await attempt(bob), await attempt(alice)];
    expect(r.map((x) => x.admitted)).toEqual([true, true, false]);
    expect(String(h.logs.of("decision").at(-1)!.detail)).toMatch(/all 2 sessions of the sidecar/);
  });
});

describe("bandwidth", () => {
  /** Uploads as fast as the client can for `ms`, returns bytes the workload received per second. */
  async function uploadRate(ms: number, counting: { n: number }): Promise<number> {
    const s = await dialTls(h!.port, pki, alice);
    const chunk = Buffer.alloc(16 * 1024, 7);
    let stop = false;
    const pumpOut = async () => {
      while (!stop) if (!s.write(chunk)) await new Promise((r) => s.once("drain", r));
    };
    void pumpOut();
    await new Promise((r) => setTimeout(r, 300)); // let the burst pass
    const n0 = counting.n;
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, ms));
    const rate = ((counting.n - n0) * 1000) / (Date.now() - t0);
    stop = true;
    s.destroy();
    return rate;
  }

  it("holds a session's upload within 10% of its bandwidth over 5 s, and a tightened bandwidth applies to the live session", async () => {
    const counting = { n: 0 };
    const perConnection: Array<{ n: number }> = [];
    const sink = createServer((sock) => {
      const mine = { n: 0 };
      perConnection.push(mine);
      sock.on("data", (c: Buffer) => {
        counting.n += c.length;
        mine.n += c.length;
      });
      sock.on("error", () => {});
    });
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    h = await startHarness(pki, { policies: policy("{ bandwidth: 256KiB/s }"), upstreamPort: (sink.address() as { port: number }).port });
    try {
      const rate = await uploadRate(5000, counting);
      expect(rate).toBeGreaterThan(256 * 1024 * 0.9);
      expect(rate).toBeLessThan(256 * 1024 * 1.1);
      // Tighten while a session is live: it slows down without being restarted.
      const s = await dialTls(h.port, pki, alice);
      const chunk = Buffer.alloc(16 * 1024, 7);
      let stop = false;
      void (async () => {
        while (!stop) if (!s.write(chunk)) await new Promise((r) => s.once("drain", r));
      })();
      await new Promise((r) => setTimeout(r, 500));
      h.rewrite({ policies: policy("{ bandwidth: 64KiB/s }"), upstreamPort: (sink.address() as { port: number }).port });
      expect(await h.sidecar.reload()).toBe("applied");
      await new Promise((r) => setTimeout(r, 500)); // the old burst and debt drain
      // Count this session alone: the first one may still drain its client's kernel buffer.
      const live = perConnection.at(-1)!;
      const n0 = live.n;
      const t0 = Date.now();
      await new Promise((r) => setTimeout(r, 2000));
      const tightened = ((live.n - n0) * 1000) / (Date.now() - t0);
      stop = true;
      s.destroy();
      expect(tightened).toBeGreaterThan(64 * 1024 * 0.85);
      expect(tightened).toBeLessThan(64 * 1024 * 1.15);
      expect(h.logs.of("revoked")).toHaveLength(0);
    } finally {
      sink.close();
    }
  }, 30_000);

  it("shares an identity's bandwidth among its sessions", async () => {
    const counting = { n: 0 };
    const sink = createServer((sock) => sock.on("data", (c: Buffer) => (counting.n += c.length)));
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    h = await startHarness(pki, { policies: policy("{ identity_bandwidth: 128KiB/s }"), upstreamPort: (sink.address() as { port: number }).port });
    try {
      const sessions = await Promise.all([dialTls(h.port, pki, alice), dialTls(h.port, pki, alice)]);
      const chunk = Buffer.alloc(16 * 1024, 7);
      let stop = false;
      for (const s of sessions)
        void (async () => {
          while (!stop) if (!s.write(chunk)) await new Promise((r) => s.once("drain", r));
        })();
      await new Promise((r) => setTimeout(r, 300));
      const n0 = counting.n;
      const t0 = Date.now();
      await new Promise((r) => setTimeout(r, 2000));
      const rate = ((counting.n - n0) * 1000) / (Date.now() - t0);
      stop = true;
      for (const s of sessions) s.destroy();
      expect(rate).toBeGreaterThan(128 * 1024 * 0.85);
      expect(rate).toBeLessThan(128 * 1024 * 1.15);
    } finally {
      sink.close();
    }
  }, 20_000);
});

describe("byte budget", () => {
  it("forwards exactly the budget, then ends the session with byte_budget", async () => {
    const counting = { n: 0 };
    const sink = createServer((sock) => sock.on("data", (c: Buffer) => (counting.n += c.length)).on("error", () => {}));
    await new Promise<void>((r) => sink.listen(0, "127.0.0.1", r));
    h = await startHarness(pki, { policies: policy("{ byte_budget: 10000 }"), upstreamPort: (sink.address() as { port: number }).port });
    try {
      const s = await dialTls(h.port, pki, alice);
      const closed = readAll(s);
      s.write(Buffer.alloc(4000, 1));
      s.write(Buffer.alloc(50_000, 2));
      await closed;
      const end = await h.logs.next("session_end");
      expect([end.end_reason, end.bytes_to_upstream]).toEqual(["byte_budget", 10000]);
      await waitFor(() => counting.n === 10000, 2000, "workload got exactly the budget");
    } finally {
      sink.close();
    }
  });
});

describe("before the handshake", () => {
  it("one address flooding handshakes cannot starve another", async () => {
    h = await startHarness(pki, { policies: policy("{}"), extra: "limits: { max_handshakes: 40, max_handshakes_per_source: 10 }" });
    // 127.0.0.2 opens 60 connections that never send a ClientHello (they hold handshake slots).
    const flood: Socket[] = [];
    for (let i = 0; i < 60; i++) {
      const s = tcpConnect({ host: "127.0.0.1", port: h.port, localAddress: "127.0.0.2" });
      s.on("error", () => {});
      flood.push(s);
    }
    await waitFor(() => h!.logs.of("handshake_refused").length > 0, 3000, "refusals");
    // A client from 127.0.0.3 still gets through, handshake and all.
    const s = await dialTls(h.port, pki, alice, { localAddress: "127.0.0.3" });
    const got = readAll(s);
    s.end("still served");
    expect((await got).toString()).toBe("still served");
    expect(h.sidecar.limitCounts.get("source_capacity")).toBeGreaterThanOrEqual(50);
    expect(h.logs.of("handshake_refused")[0]).toMatchObject({ cause: "source_capacity", source: expect.stringMatching(/^127\.0\.0\.2:/) });
    for (const f of flood) f.destroy();
  });

  it("handshakes that never finish time out and give their slot back", async () => {
    h = await startHarness(pki, { policies: policy("{}"), extra: "limits: { max_handshakes: 2, max_handshakes_per_source: 2 }" });
    const idle = [tcpConnect({ host: "127.0.0.1", port: h.port }), tcpConnect({ host: "127.0.0.1", port: h.port })];
    for (const s of idle) s.on("error", () => {});
    await waitFor(() => h!.sidecar.handshakesInFlight === 2, 3000, "both idle connections hold a handshake slot");
    await expect(dialTls(h.port, pki, alice)).rejects.toThrow();
    expect(h.sidecar.limitCounts.get("handshake_capacity")).toBe(1);
    // The listener's handshake timeout is 5 s by default; the harness's listener uses it.
    await waitFor(() => h!.logs.of("handshake_failed").length >= 2, 8000, "handshake timeouts");
    expect(h.logs.of("handshake_failed")[0]!.cause).toBe("handshake_timeout");
    const s = await dialTls(h.port, pki, alice);
    const got = readAll(s);
    s.end("slot back");
    expect((await got).toString()).toBe("slot back");
  }, 15_000);
});
