// Multiplexed hops on real TLS: HTTP/2 CONNECT streams over one mTLS connection, each stream its own
// parley session (decided, admitted, logged, revoked); and the outbound pool that opens them.
import { constants, type IncomingHttpHeaders } from "node:http2";
import { createHash, randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { ConfigError } from "../src/config/source.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { DEFAULT_POLICIES, plaintextEcho as app, limitedPolicy, MemoryLog, startHarness, waitFor, writeFiles, type Harness } from "../testkit/harness.js";
import { echoed, h2Peer, openConnect } from "../testkit/h2peer.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let allowed: Issued;
let banned: Issued;
let other: Issued;

beforeAll(async () => {
  pki = await makePki();
  allowed = await pki.leaf(pki.a, "spiffe://a.test/allowed");
  banned = await pki.leaf(pki.a, "spiffe://a.test/banned");
  other = await pki.leaf(pki.b, "spiffe://b.test/other");
});

const h2 = (port: number, creds: Issued) => h2Peer(port, pki.a.certPem, creds);
const open = openConnect;

describe("inbound: a listener with multiplex", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness(pki, { listenerExtra: "multiplex: { max_streams: 8 }" });
  });
  afterAll(() => h.close());

  it("takes CONNECT streams as sessions: 200, bytes both ways, one decision and one session end each", async () => {
    const c = await h2(h.port, allowed);
    try {
      const before = h.echo.accepted();
      const streams = await Promise.all([open(c), open(c), open(c)]);
      for (const [i, o] of streams.entries()) {
        expect(o.headers[":status"]).toBe(200);
        await echoed(o, `stream ${i}`);
      }
      expect(h.echo.accepted()).toBe(before + 3);
      const decisions = h.logs.of("decision").filter((r) => r.target === "echo.test:7" && r.peer_id === "spiffe://a.test/allowed");
      expect(decisions).toHaveLength(3);
      // One TCP connection: every stream's decision names the same source, and ALPN h2.
      expect(new Set(decisions.map((r) => r.source)).size).toBe(1);
      expect(decisions.every((r) => r.decision === "allow" && r.alpn === "h2")).toBe(true);
      const ids = decisions.map((r) => r.session_id as string);
      const live = h.sidecar.registry.all().filter((s) => ids.includes(s.id));
      expect(live.map((s) => s.info(Date.now()).stage)).toEqual(["pumping", "pumping", "pumping"]);
      streams[0].stream.end();
      expect(await streams[0].closed).toBe(0);
      const end = await h.logs.next("session_end", (r) => r.session_id === ids[0]);
      expect(end).toMatchObject({ end_reason: "completed", bytes_to_upstream: 8, bytes_to_client: 8 });
      // The other streams go on.
      await echoed(streams[1], " still");
    } finally {
      c.close();
    }
  });

  it("refuses a denied peer's stream with 403 and parley-reason; the workload sees no connection", async () => {
    const c = await h2(h.port, banned);
    try {
      const before = h.echo.accepted();
      const o = await open(c);
      expect(o.headers[":status"]).toBe(403);
      expect(o.headers["parley-reason"]).toBe("explicit_deny");
      o.stream.write("secret bytes that must never reach the workload");
      await o.closed;
      const d = await h.logs.next("decision", (r) => r.peer_id === "spiffe://a.test/banned");
      expect(d).toMatchObject({ decision: "deny", rule: "deny-banned", target: "echo.test:7" });
      expect(h.echo.accepted()).toBe(before);
    } finally {
      c.close();
    }
  });

  it("answers 405 to what is not CONNECT and 400 to a CONNECT without host:port; nothing is decided", async () => {
    const c = await h2(h.port, allowed);
    try {
      const decisions = h.logs.of("decision").length;
      const get = c.request({ ":method": "GET", ":path": "/" });
      const got = await new Promise<IncomingHttpHeaders>((resolve) => get.once("response", resolve));
      expect(got).toMatchObject({ ":status": 405, allow: "CONNECT", "parley-reason": "method_not_connect" });
      for (const authority of ["echo.test", "echo.test:0", "echo_test:7", "echo.test:99999"]) {
        const o = await open(c, { ":authority": authority });
        expect([authority, o.headers[":status"], o.headers["parley-reason"]]).toEqual([authority, 400, "bad_authority"]);
      }
      // What HTTP/2 itself calls malformed (userinfo in :authority) is reset before parley sees it (RFC 9113 §8.1.1).
      const userinfo = c.request({ ":method": "CONNECT", ":authority": "user@echo.test:7" }, { endStream: false });
      userinfo.on("error", () => {});
      await new Promise((resolve) => userinfo.once("close", resolve));
      expect(userinfo.rstCode).toBe(constants.NGHTTP2_PROTOCOL_ERROR);
      expect(h.logs.of("decision").length).toBe(decisions);
    } finally {
      c.close();
    }
  });

  it("sends a connection that only collects refusals away: GOAWAY ENHANCE_YOUR_CALM after 100", async () => {
    const c = await h2(h.port, banned);
    const goaway = new Promise<number>((resolve) => c.once("goaway", resolve));
    c.on("error", () => {});
    try {
      for (let i = 0; i < 99; i++) expect((await open(c)).headers[":status"]).toBe(403);
      expect(c.closed).toBe(false);
      // The 100th refusal's answer and the GOAWAY race on the wire; the GOAWAY is what counts.
      await open(c).catch(() => undefined);
      expect(await goaway).toBe(constants.NGHTTP2_ENHANCE_YOUR_CALM);
    } finally {
      c.destroy();
    }
  });

  it("counts streams that end before their 200 as refusals too: 100 workload failures, then GOAWAY", async () => {
    const { freePort } = await import("../testkit/harness.js");
    const down = await startHarness(pki, { listenerExtra: "multiplex: { max_streams: 8 }", upstreamPort: await freePort() });
    const c = await h2(down.port, allowed);
    const goaway = new Promise<number>((resolve) => c.once("goaway", resolve));
    c.on("error", () => {});
    try {
      // Each is allowed, costs a decision and a dial, and gives no session: 502.
      for (let i = 0; i < 99; i++) expect((await open(c)).headers[":status"]).toBe(502);
      expect(c.closed).toBe(false);
      await open(c).catch(() => undefined);
      expect(await goaway).toBe(constants.NGHTTP2_ENHANCE_YOUR_CALM);
    } finally {
      c.destroy();
      await down.close();
    }
  });

  it("still serves plain mTLS sessions and parley/1 selection beside h2", async () => {
    const { dialTls, readAll } = await import("../testkit/harness.js");
    const s = await dialTls(h.port, pki, allowed, { ALPNProtocols: ["http/1.1"] });
    expect(s.alpnProtocol).toBe("http/1.1");
    const got = readAll(s);
    s.end("plain");
    expect((await got).toString()).toBe("plain");
  });
});

describe("inbound: stop", () => {
  it("sends GOAWAY at stop; a live stream is closed by the drain and logged as such", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const c = await h2(h.port, allowed);
    c.on("error", () => {});
    const goaway = new Promise<number>((resolve) => c.once("goaway", resolve));
    const o = await open(c);
    await echoed(o, "live");
    await h.close();
    expect(await goaway).toBe(constants.NGHTTP2_NO_ERROR);
    await o.closed;
    expect(await h.logs.next("session_end")).toMatchObject({ end_reason: "drain_timeout", bytes_to_upstream: 4 });
    expect(h.sidecar.registry.size).toBe(0);
    c.destroy();
  });
});

describe("inbound: limits and re-checks per stream", () => {
  it("counts each stream as a session: over max_sessions a stream gets 429", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true", policies: limitedPolicy("{ max_sessions: 2 }") });
    const c = await h2(h.port, allowed);
    try {
      const [a, b] = await Promise.all([open(c), open(c)]);
      expect([a.headers[":status"], b.headers[":status"]]).toEqual([200, 200]);
      const third = await open(c);
      expect(third.headers).toMatchObject({ ":status": 429, "parley-reason": "concurrency_limited" });
      a.stream.end();
      await a.closed;
      await waitFor(() => h.sidecar.registry.size === 1, 3000, "first stream's end");
      expect((await open(c)).headers[":status"]).toBe(200);
    } finally {
      c.close();
      await h.close();
    }
  });

  it("binds each stream by its own obligations: a byte budget ends one stream, an idle timeout another", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true", policies: limitedPolicy("{ byte_budget: 1KiB, idle_timeout: 300ms }") });
    const c = await h2(h.port, allowed);
    try {
      const [spender, quiet] = await Promise.all([open(c), open(c)]);
      spender.stream.write(Buffer.alloc(2048, 0x61));
      await spender.closed;
      const spent = await h.logs.next("session_end", (r) => r.end_reason === "byte_budget");
      expect(spent.bytes_to_upstream).toBe(1024);
      expect(spender.got().length).toBeLessThanOrEqual(1024);
      // The other stream kept its own budget until its own idle time ran out.
      expect(await quiet.closed).toBe(constants.NGHTTP2_CANCEL);
      expect(await h.logs.next("session_end", (r) => r.end_reason === "idle_timeout")).toMatchObject({ bytes_to_upstream: 0 });
      // The connection outlives its streams.
      expect((await open(c)).headers[":status"]).toBe(200);
    } finally {
      c.close();
      await h.close();
    }
  });

  it("a policy change revokes a live stream with RST_STREAM and sends its connection away; another peer's goes on", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const [ca, cb] = await Promise.all([h2(h.port, allowed), h2(h.port, other)]);
    try {
      const goaway = new Promise<number>((resolve) => cb.once("goaway", resolve));
      cb.on("error", () => {});
      const [a, b] = await Promise.all([open(ca), open(cb)]);
      await echoed(a, "a");
      await echoed(b, "b");
      h.rewrite({ listenerExtra: "multiplex: true", policies: DEFAULT_POLICIES.replace(", { trust_domain: b.test }", ""), extra: "revocation_grace: 0s" });
      expect(await h.sidecar.reload()).toBe("applied");
      expect(await b.closed).toBe(constants.NGHTTP2_CANCEL);
      expect(await h.logs.next("session_end", (r) => r.peer_id === "spiffe://b.test/other")).toMatchObject({ end_reason: "revoked" });
      await echoed(a, " goes on");
      // The revoked peer's connection takes no new stream.
      expect(await goaway).toBe(constants.NGHTTP2_NO_ERROR);
    } finally {
      ca.close();
      cb.close();
      await h.close();
    }
  });
});

describe("outbound: transport multiplexed", () => {
  const SIDECAR = "spiffe://a.test/sidecar";

  /** An outbound sidecar whose one route multiplexes to `port`; its identity files can be rewritten. */
  async function outboundSidecar(port: number, creds: Issued, route = "", expectId = SIDECAR) {
    const f = writeFiles({ "cert.pem": creds.chainPem, "key.pem": creds.keyPem, "a.pem": pki.a.certPem });
    const yaml = `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
outbound:
  - { name: to-main, listen: "127.0.0.1:0", remote: "127.0.0.1:${port}", expect_id: ${expectId}, transport: multiplexed${route} }
policies: {}
admin: { listen: false }
`;
    const cfg = writeFiles({ "out.yaml": yaml })["out.yaml"]!;
    const logs = new MemoryLog();
    const sidecar = new Sidecar(loadConfig(cfg), { log: logs.log });
    await sidecar.start();
    return {
      sidecar,
      logs,
      port: sidecar.outboundAddresses()["to-main"]!.port,
      /** A new SVID for the outbound sidecar, applied as a reload applies it. */
      async rotate(next: Issued) {
        writeFileSync(f["cert.pem"]!, next.chainPem);
        writeFileSync(f["key.pem"]!, next.keyPem);
        expect(await sidecar.reload()).toBe("applied");
      },
    };
  }

  /** The sources (client address:port) of the inbound decisions for the outbound sidecar's streams. */
  const sourcesOf = (h: Harness) =>
    new Set(
      h.logs
        .of("decision")
        .filter((r) => r.peer_id === "spiffe://a.test/allowed")
        .map((r) => r.source),
    );

  it("carries N client connections as N streams of one mTLS connection, each decided by the remote", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const out = await outboundSidecar(h.port, allowed);
    try {
      const apps = await Promise.all([0, 1, 2, 3, 4].map((i) => app(out.port, `client ${i}`)));
      expect(apps.map((a) => a.got())).toEqual([0, 1, 2, 3, 4].map((i) => `client ${i}`));
      expect(h.logs.of("decision").filter((r) => r.decision === "allow")).toHaveLength(5);
      expect(sourcesOf(h).size).toBe(1);
      expect(out.logs.of("outbound").filter((r) => r.decision === "allow" && r.transport === "multiplexed")).toHaveLength(5);
      expect(h.echo.accepted()).toBe(5);
      // Each end lists each session; closing one client ends one stream, and the others go on.
      expect(out.sidecar.registry.all().filter((s) => s.listener === "to-main")).toHaveLength(5);
      apps[0]!.s.end();
      await h.logs.next("session_end", (r) => r.end_reason === "completed");
      apps[1]!.s.write(" more");
      await waitFor(() => apps[1]!.got() === "client 1 more", 3000, "second client's echo");
      for (const a of apps) a.s.destroy();
    } finally {
      await out.sidecar.stop(50);
      await h.close();
    }
  });

  it("carries bulk both ways intact under HTTP/2 flow control (16 MiB, three streams at once)", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const out = await outboundSidecar(h.port, allowed);
    try {
      const bulk = randomBytes(16 << 20);
      const sent = createHash("sha256").update(bulk).digest("hex");
      const once = () =>
        new Promise<string>((resolve) => {
          const s = tcpConnect({ host: "127.0.0.1", port: out.port });
          const hash = createHash("sha256");
          s.on("data", (c: Buffer) => hash.update(c));
          s.on("end", () => resolve(hash.digest("hex")));
          s.end(bulk);
        });
      expect(await Promise.all([once(), once(), once()])).toEqual([sent, sent, sent]);
      expect(sourcesOf(h).size).toBe(1);
    } finally {
      await out.sidecar.stop(50);
      await h.close();
    }
  });

  it("opens another connection beyond max_streams", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const out = await outboundSidecar(h.port, allowed, ", multiplex: { max_streams: 2 }");
    try {
      const apps = await Promise.all([0, 1, 2, 3, 4].map((i) => app(out.port, `client ${i}`)));
      expect(apps.map((a) => a.got())).toEqual([0, 1, 2, 3, 4].map((i) => `client ${i}`));
      expect(sourcesOf(h).size).toBe(3);
      for (const a of apps) a.s.destroy();
    } finally {
      await out.sidecar.stop(50);
      await h.close();
    }
  });

  it("a stream the remote denies closes the client's connection; the workload sees nothing", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const out = await outboundSidecar(h.port, banned);
    try {
      const a = await app(out.port, "secret");
      await a.closed;
      expect(a.got()).toBe("");
      expect(await out.logs.next("outbound")).toMatchObject({ decision: "deny", reason: "remote_denied", detail: "status 403: explicit_deny" });
      expect(h.echo.accepted()).toBe(0);
    } finally {
      await out.sidecar.stop(50);
      await h.close();
    }
  });

  it("a remote that does not multiplex is refused, and so is one that is not the expected ID", async () => {
    const plain = await startHarness(pki);
    const out = await outboundSidecar(plain.port, allowed);
    try {
      // Its ALPN rule takes h2 as the workload's protocol: the workload gets the preface, the client nothing.
      const a = await app(out.port, "x");
      await a.closed;
      expect(a.got()).toBe("");
      expect(await out.logs.next("outbound")).toMatchObject({ decision: "deny", reason: "remote_not_multiplexed" });
    } finally {
      await out.sidecar.stop(50);
      await plain.close();
    }
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const wrong = await outboundSidecar(h.port, allowed, "", "spiffe://a.test/other");
    try {
      await (
        await app(wrong.port, "x")
      ).closed;
      expect(await wrong.logs.next("outbound")).toMatchObject({ decision: "deny", reason: "remote_id_mismatch" });
      expect(h.logs.of("decision")).toEqual([]);
    } finally {
      await wrong.sidecar.stop(50);
      await h.close();
    }
  });

  it("after a GOAWAY (the remote let an idle connection go) the next client gets a new connection", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: { idle_timeout: 200ms }" });
    const out = await outboundSidecar(h.port, allowed);
    try {
      const first = await app(out.port, "one");
      first.s.end();
      await first.closed;
      // The remote's idle close is a GOAWAY: the pool forgets the connection.
      await waitFor(() => out.sidecar.registry.size === 0 && h.sidecar.registry.size === 0);
      await waitFor(() => out.sidecar.outboundConnections().length === 0, 5000, "the pool to forget the connection");
      const second = await app(out.port, "two");
      expect(second.got()).toBe("two");
      expect(sourcesOf(h).size).toBe(2);
      second.s.destroy();
    } finally {
      await out.sidecar.stop(50);
      await h.close();
    }
  });

  it("a rotated own SVID opens a new connection; the old one drains, its stream still live", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const out = await outboundSidecar(h.port, allowed);
    try {
      const before = await app(out.port, "old");
      await out.rotate(await pki.leaf(pki.a, "spiffe://a.test/allowed"));
      const after = await app(out.port, "new");
      expect(after.got()).toBe("new");
      const fingerprints = new Set(h.logs.of("decision").map((r) => r.cert_fingerprint));
      expect([sourcesOf(h).size, fingerprints.size]).toEqual([2, 2]);
      before.s.write(" still");
      await waitFor(() => before.got() === "old still", 3000, "the draining connection's stream");
      before.s.destroy();
      after.s.destroy();
    } finally {
      await out.sidecar.stop(50);
      await h.close();
    }
  });
});

describe("configuration", () => {
  /** The issues a configuration with these outbound routes and listener keys is refused with. */
  function issues(route: string, listener = ""): string[] {
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem });
    const yaml = `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:9", policy: main${listener} }
outbound:
  - { name: out, listen: "127.0.0.1:0", remote: "127.0.0.1:9", expect_id: spiffe://a.test/x${route} }
policies: { main: { default: deny } }
admin: { listen: false }
`;
    try {
      loadConfig(writeFiles({ "c.yaml": yaml })["c.yaml"]!);
      return [];
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
    }
  }

  it("takes multiplex on a listener and transport multiplexed on a route, with their defaults", () => {
    expect(issues(", transport: multiplexed, target: orders:8080", ", multiplex: true")).toEqual([]);
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem });
    const c = loadConfig(
      writeFiles({
        "c.yaml": `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:9", policy: main, multiplex: { max_streams: 7 } }
outbound:
  - { name: out, listen: "127.0.0.1:0", remote: "remote:8443", expect_id: spiffe://a.test/x, transport: multiplexed }
policies: { main: { default: deny } }
`,
      })["c.yaml"]!,
    );
    expect(c.listeners[0]!.multiplex).toEqual({ maxStreams: 7, idleTimeoutMs: 60_000 });
    expect(c.outbound[0]!.multiplexed).toEqual({ maxStreams: 100, idleTimeoutMs: 60_000, target: "remote:8443" });
  });

  it("takes negotiation over multiplexed routes; refuses pool keys on plain ones, and bounds out of range", () => {
    expect(issues(", transport: multiplexed, negotiate: { roles: [reader] }")).toEqual([]);
    expect(issues(", target: orders:8080")).toEqual(["outbound[0].transport: target and multiplex apply to transport: multiplexed only"]);
    expect(issues("", ", multiplex: { max_streams: 0 }")[0]).toBe("listeners[0].multiplex.max_streams: Too small: expected number to be >=1");
    // 0 would never close an idle connection; over 24 h overflows Node's timers (which then fire at once).
    expect(issues("", ", multiplex: { idle_timeout: 0s }")).toEqual(["listeners[0].multiplex.idle_timeout: expected a duration from 1ms to 24h"]);
    expect(issues(", transport: multiplexed, multiplex: { idle_timeout: 25d }")).toEqual([
      "outbound[0].multiplex.idle_timeout: expected a duration from 1ms to 24h",
    ]);
    expect(issues(", transport: multiplexed, target: no-port")[0]).toMatch(/^outbound\[0\]\.target: expected host:port/);
  });
});
