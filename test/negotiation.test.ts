// Negotiation at connect (ALPN parley/1): tokens, grants, denials, bad frames, and the client CLI.
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { createServer } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { importSPKI, jwtVerify, SignJWT, UnsecuredJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { connect, DeniedError } from "../src/negotiation/client.js";
import { decodeFrame, duplicateName, encodeFrame, FrameType, MAX_PAYLOAD } from "../src/negotiation/frame.js";
import { plaintextExchange as plaintext, readAll, startHarness, writeFiles, type Harness, waitFor } from "../testkit/harness.js";
import {
  AGENT,
  dialParley,
  negotiationKeys,
  negotiationPolicies,
  type NegotiationKeys,
  nowSeconds,
  OWN,
  signApproval,
  signAttestation,
  startOutboundAgent,
  thumbprint,
} from "../testkit/negotiation.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let agent: Issued;
let other: Issued;
let h: Harness;
let grantPublicPem: string;
let keys: NegotiationKeys;
let impostor: NegotiationKeys["impostor"];
let policiesYaml: string;

const decodeFrameSafe = (b: Buffer) => {
  try {
    return decodeFrame(b)?.type === FrameType.Request;
  } catch {
    return false;
  }
};
const now = nowSeconds;

function attestation(over: Record<string, unknown> = {}, key = keys.attestor.privateKey, header: Record<string, unknown> = {}) {
  return signAttestation(key, agent, over, header);
}

function approval(scope: string, exp = now() + 600, key = keys.approver.privateKey) {
  return signApproval(key, scope, exp);
}

beforeAll(async () => {
  pki = await makePki();
  agent = await pki.leaf(pki.a, AGENT);
  other = await pki.leaf(pki.a, AGENT); // same ID, another certificate
  keys = await negotiationKeys();
  ({ impostor, grantPublicPem } = keys);
  const policies = await negotiationPolicies(keys, { negotiation: "grant_ttl: 1h, frame_timeout: 500ms" });
  policiesYaml = policies;
  h = await startHarness(pki, { policies });
});
afterAll(() => h.close());

const opts = (creds: Issued = agent) => ({ host: "127.0.0.1", port: h.port, cert: creds.chainPem, key: creds.keyPem, ca: pki.a.certPem });

/** Expects a denial and that the workload saw no connection. */
async function expectDenied(p: Promise<unknown>, code: string, reason?: string) {
  const before = h.echo.accepted();
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(DeniedError);
  expect((e as DeniedError).denial).toBe(code);
  if (reason) expect((e as DeniedError).reasons).toContain(reason);
  expect(h.echo.accepted()).toBe(before);
  return e as DeniedError;
}

describe("grants", () => {
  it("an attested, approved agent gets a grant narrowed to what it asked, signed by the sidecar, and a working session", async () => {
    const approvalExp = now() + 900;
    const { socket, grant } = await connect({
      ...opts(),
      roles: ["writer", "reader"],
      purpose: "nightly export",
      attestationToken: await attestation(),
      approvalToken: await approval("writer reader", approvalExp),
    });
    expect(grant.roles).toEqual(["writer", "reader"]);
    const { payload } = await jwtVerify(grant.grant, await importSPKI(grantPublicPem, "ES256"), { issuer: OWN, audience: AGENT, subject: AGENT });
    expect(payload).toMatchObject({ roles: ["writer", "reader"], cnf: { "x5t#S256": thumbprint(agent) }, jti: grant.grant_id });
    // Expiry: the earliest of grant TTL (1 h), approval (15 min), attestation (10 min), certificate (1 day).
    expect(Math.abs(Date.parse(grant.expires_at) - (now() + 600) * 1000)).toBeLessThan(3000);
    const got = readAll(socket);
    socket.end("through a negotiated session");
    expect((await got).toString()).toBe("through a negotiated session");
    const d = await h.logs.next("decision", (r) => (r.negotiation as { grant_id?: string } | undefined)?.grant_id === grant.grant_id);
    expect(d).toMatchObject({
      rule: "attested-writer",
      negotiation: { purpose: "nightly export", requested_roles: ["writer", "reader"], granted_roles: ["writer", "reader"], approver: "tickets" },
    });
  });

  it("the grant never outlives the peer certificate", async () => {
    const shortCert = await pki.leaf(pki.a, AGENT, { notAfter: new Date(Date.now() + 90_000) });
    const { socket, grant } = await connect({ ...opts(shortCert), roles: ["reader"] });
    const certEnd = Date.parse(new X509Certificate(shortCert.certPem).validTo);
    expect(Math.abs(Date.parse(grant.expires_at) - certEnd)).toBeLessThan(1000);
    const { payload } = await jwtVerify(grant.grant, await importSPKI(grantPublicPem, "ES256"));
    expect(Math.abs(payload.exp! * 1000 - certEnd)).toBeLessThan(1000);
    socket.destroy();
  });

  it("grants no more than requested: asking for nothing grants nothing", async () => {
    const { socket, grant } = await connect({ ...opts(), attestationToken: await attestation(), approvalToken: await approval("writer") });
    expect(grant.roles).toEqual([]);
    socket.destroy();
  });

  it("without approval the writer role is not held: the reader rule admits with reader only", async () => {
    const { socket, grant } = await connect({ ...opts(), roles: ["writer", "reader"] });
    expect(grant.roles).toEqual(["reader"]);
    socket.destroy();
  });

  it.each<[string, () => Promise<{ attestationToken: string; approvalToken: string }>, string, string]>([
    [
      "the approval",
      async () => ({ attestationToken: await attestation(), approvalToken: await approval("writer", now() + 2) }),
      "approval",
      "approval_expired",
    ],
    [
      "the attestation",
      async () => ({ attestationToken: await attestation({ exp: now() + 2 }), approvalToken: await approval("writer") }),
      "attestation",
      "attestation_expired",
    ],
  ])("when %s expires first, the grant, its frame, the log and the session end all say so", async (_n, tokens, because, endReason) => {
    const { socket, grant } = await connect({ ...opts(), roles: ["writer"], ...(await tokens()) });
    expect(Date.parse(grant.expires_at) - Date.now()).toBeLessThan(2500);
    expect(grant).toMatchObject({ expires_because: because, obligations: { expires_at: grant.expires_at, expires_because: because } });
    const { payload } = await jwtVerify(grant.grant, await importSPKI(grantPublicPem, "ES256"));
    expect([payload.exp! * 1000, payload.obligations]).toEqual([Date.parse(grant.expires_at), grant.obligations]);
    const d = await h.logs.next("decision", (r) => (r.negotiation as { grant_id?: string } | undefined)?.grant_id === grant.grant_id);
    expect(d.obligations).toEqual(grant.obligations);
    await readAll(socket);
    const end = await h.logs.next("session_end", (r) => r.end_reason === endReason, 6000);
    expect(end.peer_id).toBe(AGENT);
  });
});

describe("tokens that are refused", () => {
  it.each<[string, () => Promise<Record<string, string | string[]>>, string, string?]>([
    ["an attestation signed by another key", async () => ({ attestationToken: await attestation({}, impostor.privateKey) }), "token_invalid"],
    ["an attestation from an unknown attestor", async () => ({ attestationToken: await attestation({ iss: "rogue" }) }), "token_invalid"],
    ["an attestation bound to no certificate", async () => ({ attestationToken: await attestation({ cnf: undefined }) }), "token_invalid"],
    ["an attestation for another audience", async () => ({ attestationToken: await attestation({ aud: "spiffe://a.test/elsewhere" }) }), "token_invalid"],
    [
      "an unsigned attestation (alg none)",
      async () => ({
        attestationToken: new UnsecuredJWT({ env: "prod" }).setIssuer("node").setSubject(AGENT).setAudience(OWN).setExpirationTime("10m").encode(),
      }),
      "token_invalid",
    ],
    [
      "an HS256 attestation",
      async () => ({
        attestationToken: await new SignJWT({ env: "prod" })
          .setProtectedHeader({ alg: "HS256" })
          .setIssuer("node")
          .setSubject(AGENT)
          .setAudience(OWN)
          .setExpirationTime("10m")
          .sign(new Uint8Array(32)),
      }),
      "token_invalid",
    ],
    ["an expired approval", async () => ({ roles: ["writer"], approvalToken: await approval("writer", now() - 120) }), "token_invalid"],
    ["a request wider than the approved scope", async () => ({ roles: ["writer", "admin"], approvalToken: await approval("writer") }), "token_invalid"],
  ])("%s", async (_n, make, code, reason) => {
    const extra = await make();
    await expectDenied(connect({ ...opts(), ...(extra as object) }), code, reason);
  });

  it("a stale attestation (older than the rule's max age) does not satisfy the attested rule", async () => {
    const { socket, grant } = await connect({ ...opts(), roles: ["writer"], attestationToken: await attestation({ iat: now() - 3600 }) });
    expect(grant.roles).toEqual([]);
    socket.destroy();
    const d = await h.logs.next("decision", (r) => (r.negotiation as { grant_id?: string } | undefined)?.grant_id === grant.grant_id);
    expect(d.rule).toBe("readers");
  });

  it("a token replayed over another certificate of the same identity fails (cnf)", async () => {
    const token = await attestation(); // bound to `agent`'s certificate
    const e = await expectDenied(connect({ ...opts(other), attestationToken: token }), "token_invalid");
    expect(e.message).toMatch(/bound to another certificate/);
    expect(e.rule).toBe("wrongly_bound");
    expect((await h.logs.next("decision", (r) => r.negotiation_rule === "wrongly_bound")).reasons).toEqual(["negotiation_failed"]);
  });
});

/** A TLS connection as the agent, offering ALPN parley/1 (the handshake completes asynchronously). */
function dialParley1() {
  return dialParley(h.port, pki.a.certPem, agent);
}

describe("bad frames", () => {
  /** Opens a parley/1 connection, sends `bytes` (then maybe waits), returns what came back before close. */
  async function raw(bytes: Buffer, end = true): Promise<Buffer> {
    const s = dialParley1();
    await new Promise((r) => s.once("secureConnect", r));
    const got = readAll(s);
    if (bytes.length) s.write(bytes);
    if (end) s.end();
    return got;
  }
  const denialCode = (b: Buffer) => (decodeFrame(b)?.payload as { code?: string } | undefined)?.code;
  const header = (version: number, type: number, length: number) => {
    const b = Buffer.alloc(10);
    b.write("PRLY", 0, "latin1");
    b[4] = version;
    b[5] = type;
    b.writeUInt32BE(length, 6);
    return b;
  };

  it.each<[string, Buffer, string]>([
    ["garbage", Buffer.from("GET / HTTP/1.1\r\n\r\n"), "bad_frame"],
    ["a wrong version", Buffer.concat([header(9, 1, 2), Buffer.from("{}")]), "unsupported_version"],
    ["an oversized frame", header(1, 1, MAX_PAYLOAD + 1), "bad_frame"],
    ["a payload that is not an object", Buffer.concat([header(1, 1, 2), Buffer.from("[]")]), "bad_frame"],
    ["an unknown field", encodeFrame(FrameType.Request, { roles: [], tokens: "x" }), "bad_frame"],
    ["a frame cut short, then the end", header(1, 1, 100), "bad_frame"],
  ])("%s gets a denial frame, then a close, and nothing reaches the workload", async (_n, bytes, code) => {
    const before = h.echo.accepted();
    expect(denialCode(await raw(bytes))).toBe(code);
    expect(h.echo.accepted()).toBe(before);
  });

  it("random and truncated frames never crash the sidecar and never reach the workload", async () => {
    const fc = (await import("fast-check")).default;
    const before = h.echo.accepted();
    const samples = fc.sample(
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 200 }).map((b) => Buffer.from(b)),
        fc.nat(60).map((n) => encodeFrame(FrameType.Request, { roles: ["reader"] }).subarray(0, n + 1)),
      ),
      { numRuns: 25, seed: 7 },
    );
    for (const bytes of samples) {
      const got = await Promise.race([
        raw(bytes),
        new Promise<Buffer>((_, rej) => setTimeout(() => rej(new Error(`no answer to ${bytes.toString("hex")}`)), 5000)),
      ]);
      const f = got.length ? decodeFrame(got) : undefined;
      // Either a denial, or (for a whole, valid request) a grant; never workload bytes without a grant.
      if (f?.type === FrameType.Grant) expect(got.length).toBe(f.size);
    }
    expect(h.echo.accepted() - before).toBeLessThanOrEqual(samples.filter((b) => b.length >= 10 && decodeFrameSafe(b)).length);
    const { socket } = await connect({ ...opts(), roles: ["reader"] });
    const echoed = readAll(socket);
    socket.end("still serving");
    expect((await echoed).toString()).toBe("still serving");
  });

  it("a frame slower than the frame timeout gets frame_timeout", async () => {
    const before = h.echo.accepted();
    expect(denialCode(await raw(header(1, 1, 50), false))).toBe("frame_timeout");
    expect(h.echo.accepted()).toBe(before);
  });

  it("application bytes sent right behind the request frame are forwarded after the grant", async () => {
    const s = dialParley1();
    await new Promise((r) => s.once("secureConnect", r));
    const got = readAll(s);
    s.end(Buffer.concat([encodeFrame(FrameType.Request, { roles: ["reader"] }), Buffer.from("pipelined")]));
    const all = await got;
    const grant = decodeFrame(all)!;
    expect(grant.type).toBe(FrameType.Grant);
    expect(all.subarray(grant.size).toString()).toBe("pipelined");
  });
});

describe("the protocol as documented (docs/negotiation.md)", () => {
  const request = (payload: string) => {
    const body = Buffer.from(payload, "utf8");
    const head = Buffer.alloc(10);
    head.write("PRLY", 0, "latin1");
    head[4] = 1;
    head[5] = 1;
    head.writeUInt32BE(body.length, 6);
    return Buffer.concat([head, body]);
  };
  async function answer(bytes: Buffer, creds: Issued = agent): Promise<Record<string, unknown>> {
    const s = dialParley(h.port, pki.a.certPem, creds);
    await new Promise((r) => s.once("secureConnect", r));
    const got = readAll(s);
    s.end(bytes);
    return decodeFrame(await got)!.payload;
  }

  it.each<[string, () => Promise<Record<string, unknown>>, string]>([
    ["a scope too narrow", async () => ({ roles: ["writer", "admin"], approvalToken: await approval("writer") }), "scope_not_approved"],
    [
      "a token bound to another certificate",
      async () => ({ attestationToken: await attestation({ cnf: { "x5t#S256": thumbprint(other) } }) }),
      "wrongly_bound",
    ],
    ["an expired approval", async () => ({ roles: ["writer"], approvalToken: await approval("writer", now() - 120) }), "expired"],
    // Inside the 30 s skew, yet past exp: refused as expired, never admitted and then found stale.
    ["an attestation 10 s past its exp", async () => ({ attestationToken: await attestation({ iat: now() - 60, exp: now() - 10 }) }), "expired"],
  ])("a refused token names its rule in the denial frame: %s", async (_n, make, rule) => {
    const e = await expectDenied(connect({ ...opts(), ...(await make()) }), "token_invalid", "negotiation_failed");
    expect(e.rule).toBe(rule);
  });

  it("a peer whose SVID fails gets the reason codes of the plain path, and the SVID rule", async () => {
    const stranger = await pki.leaf(pki.a, "spiffe://c.test/agent");
    const f = await answer(encodeFrame(FrameType.Request, { roles: ["reader"] }), stranger);
    expect(f).toMatchObject({ code: "denied", reasons: ["untrusted_domain"], rule: "untrusted_domain" });
    expect(await h.logs.next("decision", (r) => r.svid_rule === "untrusted_domain")).toMatchObject({
      reasons: ["untrusted_domain"],
      negotiation_rule: "untrusted_domain",
    });
  });

  it.each<[string, Buffer, RegExp]>([
    ["ill-formed UTF-8", Buffer.concat([request('{"roles":["'), Buffer.from([0xc3, 0x28]), Buffer.from('"]}')]), /UTF-8/],
    ["a duplicate member name", request('{"roles":[],"approval_token":"a","approval_token":"b"}'), /"approval_token" appears twice/],
    ["a role name over 63 characters", request(JSON.stringify({ roles: ["r".repeat(64)] })), /roles\[0\] is 64 characters/],
    ["65 roles", request(JSON.stringify({ roles: Array.from({ length: 65 }, (_, i) => `r${i}`) })), /65 entries; at most 64/],
    ["a purpose of 513 code points", request(JSON.stringify({ purpose: "é".repeat(513) })), /513 characters; at most 512/],
  ])("%s is a bad frame that says what is wrong", async (_n, bytes, message) => {
    // Fix the length field for payloads built by hand around raw bytes.
    bytes.writeUInt32BE(bytes.length - 10, 6);
    const f = await answer(bytes);
    expect(f).toMatchObject({ code: "bad_frame", rule: "bad_frame" });
    expect(f.message).toMatch(message);
  });

  it("duplicate names are found per object, after unescaping, and never inside strings", () => {
    expect(duplicateName('{"a":1,"\\u0061":2}')).toBe("a");
    expect(duplicateName('{"a":{"a":1},"b":[{"a":1},{"a":2}]}')).toBeUndefined();
    expect(duplicateName('{"s":"\\"s\\":1","t" : {"x":1, "x" :2}}')).toBe("x");
  });

  it("a re-check under a new policy never lets a negotiated session outlive its grant", async () => {
    const { socket, grant } = await connect({
      ...opts(),
      roles: ["writer"],
      attestationToken: await attestation(),
      approvalToken: await approval("writer", now() + 2),
    });
    h.rewrite({ policies: policiesYaml.replace("name: readers", "name: readers-v2") });
    try {
      expect(await h.sidecar.reload()).toBe("applied");
      const ended = h.logs.next("session_end", (r) => r.end_reason === "approval_expired", 6000);
      await readAll(socket);
      expect((await ended).peer_id).toBe(AGENT);
    } finally {
      h.rewrite({ policies: policiesYaml });
      expect(await h.sidecar.reload()).toBe("applied");
    }
    expect(grant.expires_because).toBe("approval");
  });

  it("lengths count code points: a purpose of 512 emoji (1,024 UTF-16 units) is accepted", async () => {
    const { socket, grant } = await connect({ ...opts(), roles: ["reader"], purpose: "🛰".repeat(512) });
    expect(grant.roles).toEqual(["reader"]);
    socket.destroy();
  });

  it("the decision log's roles are the granted roles, not every role held", async () => {
    const { socket, grant } = await connect({ ...opts(), roles: [], attestationToken: await attestation(), approvalToken: await approval("writer") });
    socket.destroy();
    const d = await h.logs.next("decision", (r) => (r.negotiation as { grant_id?: string } | undefined)?.grant_id === grant.grant_id);
    expect([d.roles, grant.roles]).toEqual([[], []]);
  });

  it("a client that names the sidecar's SPIFFE ID gets through; one that expects another is refused by its own check", async () => {
    const { socket } = await connect({ ...opts(), roles: ["reader"], expectId: OWN });
    socket.destroy();
    await expect(connect({ ...opts(), roles: ["reader"], expectId: "spiffe://a.test/elsewhere" })).rejects.toThrow(/not spiffe:\/\/a.test\/elsewhere/);
  });

  it("with the workload down no grant is sent: the client is told upstream_unavailable", async () => {
    const closed = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, "127.0.0.1", () => {
        const { port } = srv.address() as { port: number };
        srv.close(() => resolve(port));
      });
    });
    const down = await startHarness(pki, { policies: policiesYaml, upstreamPort: closed });
    try {
      const e = await connect({ ...opts(), port: down.port, roles: ["reader"] }).then(
        () => undefined,
        (x: unknown) => x as DeniedError,
      );
      expect(e).toMatchObject({ denial: "upstream_unavailable", reasons: [], rule: "upstream_connect_failed" });
      expect((await down.logs.next("session_end")).end_reason).toBe("upstream_connect_failed");
    } finally {
      await down.close();
    }
  });
});

describe("parley connect", () => {
  it("negotiates and pipes stdin to stdout; a denial exits 1 with the reasons", async () => {
    const f = writeFiles({
      "agent.pem": agent.chainPem,
      "agent.key": agent.keyPem,
      "ca.pem": pki.a.certPem,
      "att.jwt": await attestation(),
      "appr.jwt": await approval("writer"),
    });
    const base = ["dist/cli.js", "connect", `127.0.0.1:${h.port}`, "--cert", f["agent.pem"]!, "--key", f["agent.key"]!, "--ca", f["ca.pem"]!];
    // Asynchronously: the sidecar runs in this process and must keep answering.
    const run = (args: string[], input: string) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const c = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "pipe"] });
        let stdout = "";
        let stderr = "";
        c.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
        c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
        c.on("close", (status) => resolve({ status, stdout, stderr }));
        c.stdin.end(input);
      });
    const ok = await run([...base, "--role", "writer", "--attestation-token", f["att.jwt"]!, "--approval-token", f["appr.jwt"]!], "hello from a script\n");
    expect([ok.status, ok.stdout, ok.stderr]).toEqual([0, "hello from a script\n", expect.stringMatching(/^granted/)]);
    expect(ok.stderr).toMatch(/^granted [0-9a-f]+: roles \[writer\] until /);
    const denied = await run([...base, "--role", "admin", "--approval-token", f["appr.jwt"]!], "");
    expect(denied.status).toBe(1);
    expect(denied.stderr).toMatch(/denied the session \(token_invalid.*admin/);
  });
});

describe("outbound mode", () => {
  const outboundSidecar = (expectId: string, negotiate = "{ roles: [reader], purpose: legacy app }", remotePort = h.port) =>
    startOutboundAgent(agent, pki.a.certPem, remotePort, `expect_id: ${expectId}, negotiate: ${negotiate}`);

  it("outbound → inbound: a legacy app's plaintext crosses a negotiated mTLS hop both ways", async () => {
    const out = await outboundSidecar(OWN);
    try {
      expect(await plaintext(out.port, "hello over the mesh")).toBe("hello over the mesh");
      const o = await out.logs.next("outbound");
      expect(o).toMatchObject({ decision: "allow", remote_id: OWN, grant_id: expect.stringMatching(/^[0-9a-f]+$/) });
      const d = await h.logs.next("decision", (r) => (r.negotiation as { grant_id?: string } | undefined)?.grant_id === o.grant_id);
      expect(d).toMatchObject({ peer_id: AGENT, rule: "readers", negotiation: { purpose: "legacy app", granted_roles: ["reader"] } });
    } finally {
      await out.sidecar.stop(50);
    }
  });

  it("a live outbound session is one of the sidecar's sessions: listed, and closed by the drain at stop", async () => {
    const { connect: tcp } = await import("node:net");
    const out = await outboundSidecar(OWN);
    const app = tcp({ host: "127.0.0.1", port: out.port });
    app.on("error", () => {});
    const closed = new Promise<void>((resolve) => app.once("close", () => resolve()));
    try {
      app.write("ping");
      await new Promise<void>((resolve) => app.once("data", () => resolve()));
      const listed = await waitFor(() => out.sidecar.registry.all().find((s) => s.listener === "to-main"));
      expect(listed.info(Date.now())).toMatchObject({ peer_id: OWN, listener: "to-main", stage: "pumping", bytes_to_upstream: 4 });
    } finally {
      await out.sidecar.stop(50);
    }
    await closed;
    expect(await out.logs.next("session_end", (r) => r.listener === "to-main")).toMatchObject({ end_reason: "drain_timeout", peer_id: OWN });
    expect(out.sidecar.registry.size).toBe(0);
  });

  it("a remote that is not the expected SPIFFE ID gets nothing", async () => {
    const out = await outboundSidecar("spiffe://a.test/someone-else");
    try {
      const before = h.echo.accepted();
      expect(await plaintext(out.port, "secret")).toBe("");
      expect(await out.logs.next("outbound")).toMatchObject({ decision: "deny", reason: "remote_id_mismatch" });
      expect(h.echo.accepted()).toBe(before);
    } finally {
      await out.sidecar.stop(50);
    }
  });

  /** A TLS server with the sidecar's SVID (not parley): `answer` sees each connection; every byte it receives is kept. */
  async function impostor(alpn: string[] | undefined, answer: (s: TLSSocket) => void) {
    const received: Buffer[] = [];
    const server = createTlsServer({ cert: pki.server.chainPem, key: pki.server.keyPem, ...(alpn ? { ALPNProtocols: alpn } : {}) }, (s) => {
      s.on("data", (c: Buffer) => received.push(c));
      s.on("error", () => {});
      answer(s);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { port: (server.address() as { port: number }).port, received, close: () => server.close() };
  }

  it("a remote that does not select parley/1 is never sent the request and its tokens", async () => {
    const remote = await impostor(undefined, () => {});
    const out = await outboundSidecar(OWN, undefined, remote.port);
    try {
      expect(await plaintext(out.port, "secret")).toBe("");
      expect(await out.logs.next("outbound")).toMatchObject({ decision: "deny", reason: "remote_not_negotiating" });
      expect(Buffer.concat(remote.received).length).toBe(0);
    } finally {
      await out.sidecar.stop(50);
      remote.close();
    }
  });

  it("a grant frame without the grant's fields is no session: nothing of the app is sent", async () => {
    const remote = await impostor(["parley/1"], (s) => s.once("data", () => s.write(encodeFrame(FrameType.Grant, { grant: "g", grant_id: "1" }))));
    const out = await outboundSidecar(OWN, undefined, remote.port);
    try {
      expect(await plaintext(out.port, "the app's bytes")).toBe("");
      expect(await out.logs.next("outbound")).toMatchObject({
        decision: "deny",
        reason: "negotiation_failed",
        detail: "the grant frame: roles is not a list of names",
      });
      expect(Buffer.concat(remote.received).toString()).not.toContain("the app's bytes");
    } finally {
      await out.sidecar.stop(50);
      remote.close();
    }
  });

  it("a refused negotiation closes the app's connection", async () => {
    const bad = writeFiles({ "token.jwt": "not.a.token" })["token.jwt"]!;
    const out = await outboundSidecar(OWN, `{ roles: [reader], attestation_token: ${bad} }`);
    try {
      const before = h.echo.accepted();
      expect(await plaintext(out.port, "let me in")).toBe("");
      expect(await out.logs.next("outbound")).toMatchObject({ decision: "deny", reason: "remote_denied" });
      expect(h.echo.accepted()).toBe(before);
    } finally {
      await out.sidecar.stop(50);
    }
  });
});
