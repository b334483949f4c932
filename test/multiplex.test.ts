// Multiplexed hops on real TLS: HTTP/2 CONNECT streams over one mTLS connection, each stream its own
// parley session (decided, admitted, logged, revoked); and the outbound pool that opens them.
import { connect as h2connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { DEFAULT_POLICIES, limitedPolicy, startHarness, waitFor, type Harness } from "../testkit/harness.js";
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

/** An independent HTTP/2 peer: node:http2 over mTLS with ALPN h2, as an HBONE client would connect. */
function h2(port: number, creds: Issued): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = h2connect(`https://localhost:${port}`, { ca: pki.a.certPem, cert: creds.chainPem, key: creds.keyPem });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

interface Opened {
  stream: ClientHttp2Stream;
  headers: IncomingHttpHeaders;
  /** Everything received so far. */
  got(): string;
  /** Resolves with the RST_STREAM code (0 for a clean close) once the stream is closed. */
  closed: Promise<number>;
}

/** A CONNECT stream (no :scheme, no :path; RFC 9113 §8.5) and its response headers. */
function open(session: ClientHttp2Session, headers: Record<string, string> = {}): Promise<Opened> {
  const stream = session.request({ ":method": "CONNECT", ":authority": "echo.test:7", ...headers }, { endStream: false });
  let got = "";
  stream.on("data", (c: Buffer) => (got += c.toString()));
  stream.on("error", () => {});
  const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? 0)));
  return new Promise((resolve, reject) => {
    stream.once("response", (h) => resolve({ stream, headers: h, got: () => got, closed }));
    stream.once("close", () => reject(new Error(`stream closed before a response (code ${stream.rstCode})`)));
  });
}

async function echoed(o: Opened, text: string): Promise<void> {
  const want = o.got() + text;
  o.stream.write(text);
  await waitFor(() => o.got() === want, 3000, `echo of ${text}`);
}

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

  it("still serves plain mTLS sessions and parley/1 selection beside h2", async () => {
    const { dialTls, readAll } = await import("../testkit/harness.js");
    const s = await dialTls(h.port, pki, allowed, { ALPNProtocols: ["http/1.1"] });
    expect(s.alpnProtocol).toBe("http/1.1");
    const got = readAll(s);
    s.end("plain");
    expect((await got).toString()).toBe("plain");
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

  it("a policy change revokes a live stream with RST_STREAM while another peer's stream goes on", async () => {
    const h = await startHarness(pki, { listenerExtra: "multiplex: true" });
    const [ca, cb] = await Promise.all([h2(h.port, allowed), h2(h.port, other)]);
    try {
      const [a, b] = await Promise.all([open(ca), open(cb)]);
      await echoed(a, "a");
      await echoed(b, "b");
      h.rewrite({ listenerExtra: "multiplex: true", policies: DEFAULT_POLICIES.replace(", { trust_domain: b.test }", ""), extra: "revocation_grace: 0s" });
      expect(await h.sidecar.reload()).toBe("applied");
      expect(await b.closed).toBe(constants.NGHTTP2_CANCEL);
      expect(await h.logs.next("session_end", (r) => r.peer_id === "spiffe://b.test/other")).toMatchObject({ end_reason: "revoked" });
      await echoed(a, " goes on");
      // The revoked peer's next stream on the same connection is refused.
      expect((await open(cb)).headers[":status"]).toBe(403);
    } finally {
      ca.close();
      cb.close();
      await h.close();
    }
  });
});
