// The data path on real sockets: decide before dialing, pump, half-close, teardown.
import { createHash, randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority, KeyUsage, selfSignedLeaf, type Issued } from "../src/certs/issue.js";
import { dialTls, freePort, readAll, startHarness, waitFor, type Harness } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let h: Harness;
let allowed: Issued;

beforeAll(async () => {
  pki = await makePki();
  allowed = await pki.leaf(pki.a, "spiffe://a.test/allowed");
  h = await startHarness(pki);
});
afterAll(() => h.close());

/** Sends `payload`, half-closes, and returns what came back before the close. */
async function roundTrip(creds: Issued | undefined, payload: Buffer, extra = {}): Promise<Buffer> {
  const s = await dialTls(h.port, pki, creds, extra);
  const got = readAll(s);
  s.end(payload);
  return got;
}

/** Asserts a peer is denied: closed with nothing returned, no upstream accept, and the logged reason. */
async function expectDenied(creds: Issued | undefined, reason: string, svidRule?: string) {
  const before = h.echo.accepted();
  const s = await dialTls(h.port, pki, creds);
  const source = `${s.localAddress}:${s.localPort}`;
  const got = readAll(s);
  s.write("secret bytes that must never reach the workload");
  expect((await got).length).toBe(0);
  const fp = creds
    ? createHash("sha256")
        .update(Buffer.from(creds.certPem.split("-----")[2]!.replace(/\s/g, ""), "base64"))
        .digest("hex")
    : null;
  const rec = await h.logs.next("decision", (r) => r.decision === "deny" && r.cert_fingerprint === fp && r.source === source);
  expect(rec.reasons).toContain(reason);
  if (svidRule) expect(rec.svid_rule).toBe(svidRule);
  expect(h.echo.accepted()).toBe(before);
  return rec;
}

describe("allowed peers", () => {
  it("reach the workload and get the echo", async () => {
    const before = h.echo.accepted();
    expect((await roundTrip(allowed, Buffer.from("hello parley"))).toString()).toBe("hello parley");
    expect(h.echo.accepted()).toBe(before + 1);
  });

  it("are logged: decision record with identity, cert and timing, then a session end with byte counts", async () => {
    const s = await dialTls(h.port, pki, allowed);
    const port = `127.0.0.1:${s.localPort}`;
    const got = readAll(s);
    s.end("0123456789");
    await got;
    const d = await h.logs.next("decision", (r) => r.source === port);
    expect(d).toMatchObject({
      decision: "allow",
      rule: "allow-allowed",
      reasons: ["explicit_allow"],
      policy: "main",
      policy_version: h.sidecar.config.version,
      peer_id: "spiffe://a.test/allowed",
      trust_domain: "a.test",
      listener: "main",
      tls_version: "TLSv1.3",
      sni: "localhost",
    });
    expect(d.cert_serial).toMatch(/^[0-9a-f]+$/);
    expect(d.cert_fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(typeof d.decision_us).toBe("number");
    const e = await h.logs.next("session_end", (r) => r.session_id === d.session_id);
    expect(e).toMatchObject({ bytes_to_upstream: 10, bytes_to_client: 10, end_reason: "completed", peer_id: "spiffe://a.test/allowed" });
    expect(typeof e.duration_ms).toBe("number");
  });

  it("get bytes they sent before the decision forwarded after it", async () => {
    // Written in the same flight as the handshake's end: the server holds them until allowed and dialed.
    const s = await dialTls(h.port, pki, allowed);
    const got = readAll(s);
    s.write("early-");
    s.write("bytes");
    s.end();
    expect((await got).toString()).toBe("early-bytes");
  });

  it("from another configured trust domain via a presented intermediate", async () => {
    const issuing = await pki.b.intermediate({ trustDomain: "b.test" });
    const leaf = await issuing.leaf({ uris: ["spiffe://b.test/svc"] });
    expect((await roundTrip(leaf, Buffer.from("via intermediate"))).toString()).toBe("via intermediate");
  });

  it("work over TLS 1.2 too", async () => {
    expect((await roundTrip(allowed, Buffer.from("tls12"), { maxVersion: "TLSv1.2" })).toString()).toBe("tls12");
  });

  it("move 64 MiB each way intact (SHA-256 both directions)", async () => {
    const size = 64 * 1024 * 1024;
    const chunk = randomBytes(1024 * 1024);
    const sent = createHash("sha256");
    const recv = createHash("sha256");
    const s = await dialTls(h.port, pki, allowed);
    let received = 0;
    s.on("data", (c: Buffer) => {
      recv.update(c);
      received += c.length;
    });
    const closed = new Promise((r) => s.once("close", r));
    for (let i = 0; i < size / chunk.length; i++) {
      sent.update(chunk);
      if (!s.write(chunk)) await new Promise((r) => s.once("drain", r));
    }
    s.end();
    await closed;
    expect(received).toBe(size);
    expect(recv.digest("hex")).toBe(sent.digest("hex"));
  }, 60_000);

  it("half-close: the workload answers after the client has ended its side", async () => {
    // A workload that replies only once it has seen the client's end of stream.
    const counting = createServer({ allowHalfOpen: true }, (sock) => {
      let n = 0;
      sock.on("data", (c: Buffer) => (n += c.length));
      sock.on("end", () => sock.end(`got ${n} bytes after your end`));
    });
    await new Promise<void>((r) => counting.listen(0, "127.0.0.1", r));
    const hh = await startHarness(pki, { upstreamPort: (counting.address() as { port: number }).port });
    try {
      const s = await dialTls(hh.port, pki, allowed);
      const got = readAll(s);
      s.end("twelve bytes");
      expect((await got).toString()).toBe("got 12 bytes after your end");
      expect((await hh.logs.next("session_end")).end_reason).toBe("completed");
    } finally {
      await hh.close();
      counting.close();
    }
  });
});

describe("denied peers never reach the workload", () => {
  it("a valid SVID no rule allows (default_deny)", async () => {
    await expectDenied(await pki.leaf(pki.a, "spiffe://a.test/stranger"), "default_deny");
  });

  it("an explicitly denied SVID (explicit_deny, named rule)", async () => {
    const rec = await expectDenied(await pki.leaf(pki.a, "spiffe://a.test/banned"), "explicit_deny");
    expect(rec.rule).toBe("deny-banned");
  });

  it("no client certificate", async () => {
    await expectDenied(undefined, "no_client_cert", "no_certificate");
  });

  it("a certificate from a CA that is not in any bundle", async () => {
    const rogue = await CertificateAuthority.root({ trustDomain: "a.test" });
    await expectDenied(await rogue.leaf({ uris: ["spiffe://a.test/allowed"] }), "invalid_svid", "chain_unverified");
  });

  it("cross-trust-domain confusion: a b.test ID issued by a.test's CA", async () => {
    await expectDenied(await pki.leaf(pki.a, "spiffe://b.test/svc"), "invalid_svid", "chain_unverified");
  });

  it("an untrusted trust domain", async () => {
    await expectDenied(await pki.leaf(pki.a, "spiffe://c.test/svc"), "untrusted_domain", "untrusted_domain");
  });

  it("an expired SVID", async () => {
    const old = await pki.leaf(pki.a, "spiffe://a.test/allowed", { notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
    await expectDenied(old, "invalid_svid", "expired");
  });

  it("a not-yet-valid SVID", async () => {
    const early = await pki.leaf(pki.a, "spiffe://a.test/allowed", { notBefore: new Date(Date.now() + 3600_000), notAfter: new Date(Date.now() + 7200_000) });
    await expectDenied(early, "invalid_svid", "not_yet_valid");
  });

  it("a CA certificate used as a leaf", async () => {
    await expectDenied(
      await pki.leaf(pki.a, "spiffe://a.test/allowed", { isCA: true, keyUsage: KeyUsage.digitalSignature | KeyUsage.keyCertSign }),
      "invalid_svid",
      "leaf_is_ca",
    );
  });

  it("a leaf with two URI SANs", async () => {
    await expectDenied(await pki.a.leaf({ uris: ["spiffe://a.test/allowed", "spiffe://a.test/other"] }), "invalid_svid", "uri_san_count");
  });

  it("a self-signed leaf with a valid-looking ID", async () => {
    await expectDenied(await selfSignedLeaf({ uris: ["spiffe://a.test/allowed"] }), "invalid_svid", "chain_unverified");
  });
});

describe("upstream failures", () => {
  it("upstream down: the session ends with a logged reason and the sidecar keeps serving", async () => {
    const deadPort = await freePort();
    const down = await startHarness(pki, { upstreamPort: deadPort });
    try {
      const s = await dialTls(down.port, pki, allowed);
      const got = readAll(s);
      s.write("anyone there?");
      expect((await got).length).toBe(0);
      const end = await down.logs.next("session_end");
      expect(end.end_reason).toBe("upstream_connect_failed");
      expect(String(end.detail)).toMatch(/ECONNREFUSED/);
      // Still serving: a second attempt is handled the same way, no crash.
      const s2 = await dialTls(down.port, pki, allowed);
      await readAll(s2);
      await waitFor(() => down.logs.of("session_end").length === 2);
    } finally {
      await down.close();
    }
  });

  it("upstream resets mid-session: the client is closed and the end is logged as an upstream error", async () => {
    const resetting = createServer((sock) => sock.once("data", () => sock.resetAndDestroy()));
    await new Promise<void>((r) => resetting.listen(0, "127.0.0.1", r));
    const hh = await startHarness(pki, { upstreamPort: (resetting.address() as { port: number }).port });
    try {
      const s = await dialTls(hh.port, pki, allowed);
      const got = readAll(s);
      s.write("trigger");
      await got;
      const end = await hh.logs.next("session_end");
      expect(end.end_reason).toBe("upstream_error");
      expect(end.detail).toBe("ECONNRESET");
    } finally {
      await hh.close();
      resetting.close();
    }
  });
});

describe("drain", () => {
  it("stops accepting, lets a live session finish, then closes what is left at the timeout", async () => {
    const hh = await startHarness(pki);
    const live = await dialTls(hh.port, pki, allowed);
    let echoed = "";
    live.on("data", (c: Buffer) => (echoed += c.toString()));
    const liveClosed = readAll(live);
    live.write("still here");
    await waitFor(() => hh.sidecar.registry.size === 1);
    const stopped = hh.sidecar.stop(400);
    // New connections are refused once draining starts.
    await expect(dialTls(hh.port, pki, allowed)).rejects.toThrow(/ECONNREFUSED/);
    // The live session still works during the drain.
    live.write(" and talking");
    await waitFor(() => echoed === "still here and talking", 300, "echo during drain");
    expect(hh.logs.of("session_end")).toHaveLength(0);
    await stopped;
    await liveClosed;
    const end = await hh.logs.next("session_end");
    expect(end.end_reason).toBe("drain_timeout");
    await hh.echo.close();
  });
});
