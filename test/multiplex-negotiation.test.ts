// Negotiation per stream over a multiplexed hop: the parley/1 request in a CONNECT stream's
// `parley-request` header, the grant in the 200's `parley-grant`, a denial in `parley-denial`
// (docs/negotiation.md, "Over a multiplexed connection"). Real TLS, real HTTP/2, certificates from the
// test PKI; a bare node:http2 client plays the independent peer, and two sidecars the mesh hop.
import { constants, performServerHandshake, sensitiveHeaders } from "node:http2";
import type { AddressInfo } from "node:net";
import { createServer as createTlsServer } from "node:tls";
import { importSPKI, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { dialTls, plaintextExchange as plaintext, freePort, startHarness, waitFor, writeFiles, type Harness, type LogRecord } from "../testkit/harness.js";
import { h2Peer, openConnect, type Opened } from "../testkit/h2peer.js";
import {
  negotiationKeys,
  negotiationPolicies,
  type NegotiationKeys,
  nowSeconds,
  signApproval,
  signAttestation,
  startOutboundAgent,
  thumbprint,
} from "../testkit/negotiation.js";
import { makePki, type TestPki } from "../testkit/pki.js";

const OWN = "spiffe://a.test/sidecar";
const AGENT = "spiffe://a.test/agent";
const BANNED = "spiffe://a.test/banned";

let pki: TestPki;
let agent: Issued;
let sameId: Issued;
let banned: Issued;
let h: Harness;
let grantPublicPem: string;
let attestor: NegotiationKeys["attestor"];
let approver: NegotiationKeys["approver"];
let impostor: NegotiationKeys["impostor"];
let policies: string;

const now = nowSeconds;
const b64url = (text: string | Buffer) => Buffer.from(text).toString("base64url");
const header = (payload: object) => b64url(JSON.stringify(payload));
const unb64url = (v: unknown) => JSON.parse(Buffer.from(v as string, "base64url").toString("utf8")) as Record<string, unknown>;

function attestation(over: Record<string, unknown> = {}, key = attestor.privateKey) {
  return signAttestation(key, agent, over);
}

function approval(scope: string) {
  return signApproval(approver.privateKey, scope, now() + 900);
}

beforeAll(async () => {
  pki = await makePki();
  agent = await pki.leaf(pki.a, AGENT);
  sameId = await pki.leaf(pki.a, AGENT); // same ID, another certificate
  banned = await pki.leaf(pki.a, BANNED);
  const keys = await negotiationKeys();
  ({ attestor, approver, impostor, grantPublicPem } = keys);
  const rulesFirst = `
      - name: deny-banned
        action: deny
        match: [{ id: ${BANNED} }]`;
  policies = await negotiationPolicies(keys, { rulesFirst, negotiation: "grant_ttl: 1h" });
  h = await startHarness(pki, { policies, listenerExtra: "multiplex: { max_streams: 16 }" });
});
afterAll(() => h.close());

const h2 = (port: number, creds: Issued) => h2Peer(port, pki.a.certPem, creds);
const open = openConnect;

/** One stream of a fresh connection as `creds`, with a `parley-request` value; the connection closes after. */
async function ask(value: string | string[] | undefined, creds: Issued = agent): Promise<Opened> {
  const c = await h2(h.port, creds);
  try {
    const o = await open(c, value === undefined ? {} : { "parley-request": value });
    if (Number(o.headers[":status"]) !== 200) await o.closed;
    return o;
  } finally {
    c.close();
  }
}

const grantOf = (o: Opened) => unb64url(o.headers["parley-grant"]) as { grant: string; grant_id: string; roles: string[]; expires_at: string };
const byGrant = (id: string) => (r: LogRecord) => (r.negotiation as { grant_id?: string } | undefined)?.grant_id === id;

describe("inbound: a CONNECT stream's parley-request header", () => {
  it("grants on the 200: a grant JWT that verifies with the sidecar's key, bound to the connection's certificate, and a working session", async () => {
    const c = await h2(h.port, agent);
    try {
      const request = {
        roles: ["writer", "reader"],
        purpose: "nightly export",
        attestation_token: await attestation(),
        approval_token: await approval("writer reader"),
      };
      const o = await open(c, { "parley-request": header(request) });
      expect(o.headers[":status"]).toBe(200);
      const g = grantOf(o);
      expect(g.roles).toEqual(["writer", "reader"]);
      const { payload } = await jwtVerify(g.grant, await importSPKI(grantPublicPem, "ES256"), { issuer: OWN, audience: AGENT, subject: AGENT });
      expect(payload).toMatchObject({ roles: ["writer", "reader"], cnf: { "x5t#S256": thumbprint(agent) }, jti: g.grant_id });
      expect(payload.exp! * 1000).toBe(Date.parse(g.expires_at));
      // A credential: sent as a never-indexed literal (RFC 7541 §7.1.3), kept out of HPACK tables.
      expect((o.headers as Record<symbol, unknown>)[sensitiveHeaders]).toContain("parley-grant");
      o.stream.write("through a negotiated stream");
      await waitFor(() => o.got() === "through a negotiated stream", 3000, "echo");
      const d = await h.logs.next("decision", byGrant(g.grant_id));
      expect(d).toMatchObject({
        rule: "attested-writer",
        target: "echo.test:7",
        alpn: "h2",
        negotiation: { purpose: "nightly export", requested_roles: ["writer", "reader"], granted_roles: ["writer", "reader"], approver: "tickets" },
      });
      // The session is listed with its grant, as a negotiated TLS session is.
      const live = h.sidecar.registry.all().find((s) => s.id === d.session_id);
      expect(live?.info(Date.now())).toMatchObject({ grant_id: g.grant_id, stage: "pumping" });
    } finally {
      c.close();
    }
  });

  it("grants no more than asked and held: without approval the writer role is dropped; asking nothing grants nothing", async () => {
    const narrowed = await ask(header({ roles: ["writer", "reader"] }));
    expect(narrowed.headers[":status"]).toBe(200);
    expect(grantOf(narrowed).roles).toEqual(["reader"]);
    const none = await ask(header({}));
    expect(grantOf(none).roles).toEqual([]);
    expect(await h.logs.next("decision", byGrant(grantOf(none).grant_id))).toMatchObject({ rule: "readers", roles: [] });
  });

  it("each stream negotiates alone: streams of one connection get their own grants, and one without the header takes the plain path", async () => {
    const c = await h2(h.port, agent);
    try {
      const [a, b, plain] = await Promise.all([
        open(c, { "parley-request": header({ roles: ["reader"] }) }),
        open(c, { "parley-request": header({}) }),
        open(c),
      ]);
      expect([a.headers[":status"], b.headers[":status"], plain.headers[":status"]]).toEqual([200, 200, 200]);
      expect(grantOf(a).grant_id).not.toBe(grantOf(b).grant_id);
      expect([grantOf(a).roles, grantOf(b).roles]).toEqual([["reader"], []]);
      expect(plain.headers["parley-grant"]).toBeUndefined();
      // Without the header a stream is decided as a connection that did not negotiate: on its certificate alone.
      const plainTls = await dialTls(h.port, pki, agent);
      const [fromStream, fromTls] = await waitFor(() => {
        const plainOnes = h.logs.of("decision").filter((r) => r.peer_id === AGENT && r.negotiation === undefined);
        const s = plainOnes.find((r) => r.alpn === "h2");
        const t = plainOnes.find((r) => r.alpn !== "h2");
        return s && t ? ([s, t] as const) : undefined;
      }).finally(() => plainTls.destroy());
      expect(fromStream).toMatchObject({ decision: "allow", rule: fromTls.rule, roles: fromTls.roles, reasons: fromTls.reasons });
    } finally {
      c.close();
    }
  });

  it("a grant too long for the response header is refused before the workload is dialled: 503 grant_too_large", async () => {
    // The grant JWT names the peer twice (sub, aud): a 2,000-character SPIFFE ID makes it too long to carry.
    const longId = await pki.leaf(pki.a, `spiffe://a.test/${"x".repeat(1984)}`);
    const before = h.echo.accepted();
    const o = await ask(header({ roles: ["reader"] }), longId);
    expect(o.headers[":status"]).toBe(503);
    expect(o.headers["parley-reason"]).toBe("grant_too_large");
    expect(o.headers["parley-grant"]).toBeUndefined();
    expect(unb64url(o.headers["parley-denial"])).toMatchObject({ code: "denied", rule: "grant_too_large", reasons: [] });
    const d = await h.logs.next("decision", (r) => (r.peer_id as string).length === 2000);
    expect(await h.logs.next("session_end", (r) => r.session_id === d.session_id)).toMatchObject({ end_reason: "grant_too_large" });
    expect(h.echo.accepted()).toBe(before);
  });

  const longPurpose = "p".repeat(5500);
  it.each<[string, string | string[], RegExp]>([
    ["not base64url", "not base64url!", /not base64url/],
    ["padded base64", b64url("{}") + "==", /not base64url/],
    ["standard base64 (+ and /)", Buffer.from([0xfb, 0xff, 0xbf]).toString("base64"), /not base64url/],
    ["not canonical (pad bits set)", "e31", /not base64url/],
    ["not UTF-8", b64url(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])), /not valid UTF-8/],
    ["not JSON", b64url('{"roles": ['), /not JSON/],
    ["not an object", b64url("[1]"), /not a JSON object/],
    ["a repeated member name", b64url('{"roles":[],"\\u0072oles":["admin"]}'), /"roles" appears twice/],
    ["an unknown field", header({ role: ["reader"] }), /unknown request field role/],
    ["a purpose over 512 characters", header({ purpose: "x".repeat(513) }), /purpose is 513 characters/],
    ["65 roles", header({ roles: Array.from({ length: 65 }, (_, i) => `r${i}`) }), /roles has 65 entries/],
    ["a value over 7,168 characters", header({ purpose: longPurpose }), /parley-request is 7\d{3} characters; at most 7168/],
    ["the field twice", [header({}), header({ roles: ["reader"] })], /appears 2 times/],
  ])("%s: 400 with a bad_frame denial, logged, and nothing reaches the workload", async (_name, value, message) => {
    const before = h.echo.accepted();
    const o = await ask(value);
    expect(o.headers[":status"]).toBe(400);
    expect(o.headers["parley-reason"]).toBe("negotiation_failed");
    const denial = unb64url(o.headers["parley-denial"]);
    expect(denial).toMatchObject({ code: "bad_frame", rule: "bad_frame", reasons: ["negotiation_failed"] });
    expect(denial.message).toMatch(message);
    const d = await h.logs.next("decision", (r) => r.negotiation_rule === "bad_frame" && r.detail === denial.message);
    expect(d).toMatchObject({ decision: "deny", peer_id: AGENT, target: "echo.test:7" });
    expect(h.echo.accepted()).toBe(before);
  });

  // Certificates are made in beforeAll: each case names its client by a function.
  it.each<[string, () => Promise<object>, () => Issued, string]>([
    ["an attestation signed by another key", async () => ({ attestation_token: await attestation({}, impostor.privateKey) }), () => agent, "bad_signature"],
    [
      "an attestation replayed over another certificate of the same ID",
      async () => ({ attestation_token: await attestation() }),
      () => sameId,
      "wrongly_bound",
    ],
    [
      "an approval narrower than the roles asked",
      async () => ({ roles: ["writer", "admin"], approval_token: await approval("writer") }),
      () => agent,
      "scope_not_approved",
    ],
    ["a token that is no JWS", async () => ({ approval_token: "not.a.token" }), () => agent, "malformed"],
  ])("%s: 403 token_invalid naming the token rule; nothing reaches the workload", async (_name, make, creds, rule) => {
    const before = h.echo.accepted();
    const o = await ask(header(await make()), creds());
    expect(o.headers[":status"]).toBe(403);
    expect(o.headers["parley-reason"]).toBe("negotiation_failed");
    expect(unb64url(o.headers["parley-denial"])).toMatchObject({ code: "token_invalid", rule, reasons: ["negotiation_failed"] });
    expect(await h.logs.next("decision", (r) => r.negotiation_rule === rule)).toMatchObject({ decision: "deny", reasons: ["negotiation_failed"] });
    expect(h.echo.accepted()).toBe(before);
  });

  it("a policy denial: the status table's 403, the decision's reasons, and the denial payload without a rule", async () => {
    const before = h.echo.accepted();
    const o = await ask(header({ roles: ["reader"] }), banned);
    expect(o.headers[":status"]).toBe(403);
    expect(o.headers["parley-reason"]).toBe("explicit_deny");
    const denial = unb64url(o.headers["parley-denial"]);
    expect(denial).toMatchObject({ code: "denied", reasons: ["explicit_deny"] });
    expect(denial).not.toHaveProperty("rule");
    expect(await h.logs.next("decision", (r) => r.peer_id === BANNED)).toMatchObject({
      decision: "deny",
      rule: "deny-banned",
      negotiation: { requested_roles: ["reader"] },
    });
    expect(h.echo.accepted()).toBe(before);
  });
});

describe("inbound: the sidecar's other answers over a stream", () => {
  it("negotiation not configured: a stream asking for it is refused 403 negotiation_disabled", async () => {
    const plain = await startHarness(pki, {
      listenerExtra: "multiplex: true",
      policies: "\n  main: { rules: [ { name: all, action: allow, match: [{ trust_domain: a.test }] } ] }\n",
    });
    try {
      const c = await h2(plain.port, agent);
      const o = await open(c, { "parley-request": header({ roles: ["reader"] }) });
      await o.closed;
      c.close();
      expect(o.headers[":status"]).toBe(403);
      expect(unb64url(o.headers["parley-denial"])).toMatchObject({ code: "denied", rule: "negotiation_disabled", reasons: ["negotiation_failed"] });
      expect(plain.echo.accepted()).toBe(0);
    } finally {
      await plain.close();
    }
  });

  it("the workload unreachable: no grant, 502 with an upstream_unavailable denial", async () => {
    const down = await startHarness(pki, { policies, listenerExtra: "multiplex: true", upstreamPort: await freePort() });
    try {
      const c = await h2(down.port, agent);
      const o = await open(c, { "parley-request": header({ roles: ["reader"] }) });
      await o.closed;
      c.close();
      expect(o.headers[":status"]).toBe(502);
      expect(o.headers["parley-grant"]).toBeUndefined();
      expect(unb64url(o.headers["parley-denial"])).toMatchObject({ code: "upstream_unavailable", rule: "upstream_connect_failed", reasons: [] });
    } finally {
      await down.close();
    }
  });
});

describe("outbound: transport multiplexed with negotiate", () => {
  const outboundSidecar = (negotiate: string, remotePort = h.port) =>
    startOutboundAgent(agent, pki.a.certPem, remotePort, `expect_id: ${OWN}, transport: multiplexed, target: "orders.test:8080", negotiate: ${negotiate}`);

  it("each local connection is one negotiated stream of a pooled connection: its own grant, logged on both sides", async () => {
    const out = await outboundSidecar("{ roles: [reader, writer], purpose: legacy app }");
    try {
      const [x, y] = await Promise.all([plaintext(out.port, "first over the mesh"), plaintext(out.port, "second over the mesh")]);
      expect([x, y]).toEqual(["first over the mesh", "second over the mesh"]);
      const allows = await waitFor(() => (out.logs.of("outbound").length === 2 ? out.logs.of("outbound") : undefined));
      const ids = allows.map((o) => o.grant_id as string);
      for (const o of allows)
        expect(o).toMatchObject({ decision: "allow", remote_id: OWN, transport: "multiplexed", grant_id: expect.stringMatching(/^[0-9a-f]{24}$/) });
      expect(new Set(ids).size).toBe(2);
      for (const id of ids) {
        const d = await h.logs.next("decision", byGrant(id));
        expect(d).toMatchObject({
          peer_id: AGENT,
          rule: "readers",
          alpn: "parley-mux/1",
          target: "orders.test:8080",
          negotiation: { purpose: "legacy app", granted_roles: ["reader"] },
        });
      }
      // Both streams went over one mTLS connection.
      expect(
        new Set(
          h.logs
            .of("decision")
            .filter((r) => ids.some((id) => byGrant(id)(r)))
            .map((r) => r.source),
        ).size,
      ).toBe(1);
    } finally {
      await out.sidecar.stop(50);
    }
  });

  it("a refused negotiation closes the app's connection, logged as the tls transport logs it; nothing reaches the workload", async () => {
    const bad = writeFiles({ "token.jwt": "not.a.token" })["token.jwt"]!;
    const out = await outboundSidecar(`{ roles: [reader], attestation_token: ${bad} }`);
    try {
      const before = h.echo.accepted();
      expect(await plaintext(out.port, "let me in")).toBe("");
      const o = await out.logs.next("outbound");
      expect(o).toMatchObject({ decision: "deny", reason: "remote_denied", transport: "multiplexed" });
      expect(o.detail).toMatch(/^parley denied the session \(token_invalid: negotiation_failed, malformed\)/);
      expect(h.echo.accepted()).toBe(before);
    } finally {
      await out.sidecar.stop(50);
    }
  });
  it("a request too long for its header is refused by the outbound sidecar itself: nothing is sent", async () => {
    const long = writeFiles({ "token.jwt": "e30.e30." + "A".repeat(6000) })["token.jwt"]!;
    const out = await outboundSidecar(`{ roles: [reader], approval_token: ${long} }`);
    try {
      const decisions = h.logs.of("decision").length;
      expect(await plaintext(out.port, "let me in")).toBe("");
      const o = await out.logs.next("outbound");
      expect(o).toMatchObject({ decision: "deny", reason: "negotiation_failed", transport: "multiplexed" });
      expect(o.detail).toMatch(/in parley-request; at most 7168/);
      expect(h.logs.of("decision")).toHaveLength(decisions);
    } finally {
      await out.sidecar.stop(50);
    }
  });

  it("a remote that answers 200 without a grant is no session: the stream is cancelled and the app closed", async () => {
    // A bare HTTP/2 server holding the sidecar's SVID, claiming parley-mux/1, that ignores parley-request and says 200.
    const resets: number[] = [];
    const tls = { cert: pki.server.chainPem, key: pki.server.keyPem, ca: pki.a.certPem, requestCert: true, ALPNProtocols: ["parley-mux/1"] };
    const server = createTlsServer(tls, (socket) =>
      performServerHandshake(socket).on("stream", (stream) => {
        stream.on("error", () => {});
        stream.once("close", () => resets.push(stream.rstCode));
        stream.respond({ ":status": 200 });
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const out = await outboundSidecar("{ roles: [reader] }", (server.address() as AddressInfo).port);
    try {
      expect(await plaintext(out.port, "secret")).toBe("");
      const o = await out.logs.next("outbound");
      expect(o).toMatchObject({ decision: "deny", reason: "negotiation_failed", transport: "multiplexed" });
      expect(o.detail).toMatch(/without parley-grant/);
      await waitFor(() => resets.length === 1);
      expect(resets).toEqual([constants.NGHTTP2_CANCEL]);
    } finally {
      await out.sidecar.stop(50);
      server.close();
    }
  });
});
