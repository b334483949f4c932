// The certificate zoo: every way a presented chain can break RFC 5280 or the X509-SVID standard, made by
// the suite's issuer, each judged by the verifier alone and by a running sidecar (decision, reason,
// svid_rule, and no connection to the workload), beside the chains that must still pass.
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority, KeyUsage, type CertOptions, type Issued } from "../src/certs/issue.js";
import { TrustDomain } from "../src/spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../src/spiffe/x509bundle.js";
import { derFromPem } from "../src/spiffe/x509cert.js";
import { SvidVerifier, type SvidResult, type SvidRule, type SvidVerifierOptions } from "../src/spiffe/x509svid.js";
import { dialTls, readAll, startHarness, type Harness } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

const DAY = 86_400_000;
const ID = "spiffe://a.test/allowed";
const SAN = "2.5.29.17";
const NAME_CONSTRAINTS = "2.5.29.30";
const UNKNOWN = "1.3.6.1.4.1.55555.1";
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

/** DER by hand, for the extensions the issuer's typed options cannot express. */
function tlv(tag: number, ...parts: Buffer[]): Buffer {
  const content = Buffer.concat(parts);
  const n = content.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), content]);
}
const uriName = (s: string | Buffer) => tlv(0x86, Buffer.from(s));
const dnsName = (s: string) => tlv(0x82, Buffer.from(s));
const sanOf = (...names: Buffer[]) => ({ oid: SAN, critical: false, value: tlv(0x30, ...names) });
function nameConstraints(c: { permitted?: Buffer[]; excluded?: Buffer[] }) {
  const subtrees = (tag: number, names: Buffer[] | undefined) => (names ? [tlv(tag, ...names.map((n) => tlv(0x30, n)))] : []);
  return { oid: NAME_CONSTRAINTS, critical: true, value: tlv(0x30, ...subtrees(0xa0, c.permitted), ...subtrees(0xa1, c.excluded)) };
}

let pki: TestPki;
let h: Harness;
const caPem = (...cas: CertificateAuthority[]) => cas.map((c) => c.certPem).join("");

beforeAll(async () => {
  pki = await makePki();
  h = await startHarness(pki, { extra: "limits: { max_chain_length: 16 }\n" });
});
afterAll(() => h.close());

function verifier(options: SvidVerifierOptions = {}): SvidVerifier {
  const bundle = (td: string, ca: CertificateAuthority) => X509Bundle.fromPem(TrustDomain.parse(td), ca.certPem, td);
  return new SvidVerifier(new BundleSet([bundle("a.test", pki.a), bundle("b.test", pki.b)]), { maxChainLength: 16, ...options });
}

const verify = (creds: Issued, now = Date.now(), options: SvidVerifierOptions = {}): SvidResult =>
  verifier(options).verify(derFromPem(creds.chainPem, "chain"), now);
const ruleOf = (r: SvidResult): string => (r.ok ? "ok" : r.rule);
/** A leaf of `ca` presented with `extra` (intermediates, in any order) after it. */
async function leafWith(ca: CertificateAuthority, opts: CertOptions, chainPem?: string): Promise<Issued> {
  const leaf = await ca.leaf({ uris: [ID], ...opts });
  return chainPem === undefined ? leaf : { ...leaf, chainPem: leaf.certPem + chainPem };
}

const REASON: Partial<Record<SvidRule, string>> = {
  weak_signature_algorithm: "weak_crypto",
  weak_key: "weak_crypto",
  path_budget_exhausted: "path_budget_exhausted",
};

/** Through the sidecar: denied with `rule`, nothing echoed, the workload never dialled. */
async function expectDeniedByProxy(creds: Issued, rule: SvidRule, leafRead = true) {
  const before = h.echo.accepted();
  // The client's own OpenSSL would refuse to present an RSA-1024 key at its default security level.
  const s = await dialTls(h.port, pki, creds, { ciphers: "DEFAULT@SECLEVEL=0" });
  const source = `${s.localAddress}:${s.localPort}`;
  const got = readAll(s);
  s.write("bytes that must never reach the workload");
  expect((await got).length).toBe(0);
  const fp = leafRead ? createHash("sha256").update(derFromPem(creds.certPem, "leaf")[0]!).digest("hex") : null;
  const rec = await h.logs.next("decision", (r) => r.source === source);
  expect(rec).toMatchObject({ decision: "deny", cert_fingerprint: fp, svid_rule: rule, reasons: [REASON[rule] ?? "invalid_svid"] });
  expect(h.echo.accepted()).toBe(before);
  return rec;
}

/** Through the sidecar: allowed, the echo comes back, one more workload connection. */
async function expectServedByProxy(creds: Issued) {
  const before = h.echo.accepted();
  const s = await dialTls(h.port, pki, creds);
  const source = `${s.localAddress}:${s.localPort}`;
  const got = readAll(s);
  s.end("hello");
  expect((await got).toString()).toBe("hello");
  expect(h.echo.accepted()).toBe(before + 1);
  return h.logs.next("decision", (r) => r.source === source);
}

describe("the zoo: refused", () => {
  const zoo: [string, SvidRule, () => Promise<Issued>][] = [
    [
      "a leaf outside its intermediate's permitted URI subtree (name constraints)",
      "name_constraints",
      async () => {
        const ca = await pki.a.intermediate({ extraExtensions: [nameConstraints({ permitted: [uriName("b.test")] })] });
        return leafWith(ca, {}, ca.certPem);
      },
    ],
    [
      "a leaf with a DNS name in its intermediate's excluded subtree",
      "name_constraints",
      async () => {
        const ca = await pki.a.intermediate({ extraExtensions: [nameConstraints({ excluded: [dnsName("evil.example")] })] });
        return leafWith(ca, { dnsNames: ["www.evil.example"] }, ca.certPem);
      },
    ],
    [
      "a CA under an intermediate with pathLenConstraint 0",
      "path_length",
      async () => {
        // Distinct names: a self-issued CA would rightly not count against the path length (§6.1.4 (l)).
        const zero = await pki.a.intermediate({ name: "pathlen-0", pathLength: 0 });
        const below = await zero.intermediate({ name: "below-pathlen-0" });
        return leafWith(below, {}, below.certPem + zero.certPem);
      },
    ],
    [
      "an unknown critical extension on the leaf",
      "unknown_critical_extension",
      () => leafWith(pki.a, { extraExtensions: [{ oid: UNKNOWN, critical: true, value: tlv(0x05) }] }),
    ],
    [
      "an unknown critical extension on an intermediate",
      "unknown_critical_extension",
      async () => {
        const ca = await pki.a.intermediate({ extraExtensions: [{ oid: UNKNOWN, critical: true, value: tlv(0x05) }] });
        return leafWith(ca, {}, ca.certPem);
      },
    ],
    ["two subjectAltName extensions on the leaf", "duplicate_extension", () => leafWith(pki.a, { extraExtensions: [sanOf(uriName("spiffe://a.test/other"))] })],
    ["a leaf signed with SHA-1", "weak_signature_algorithm", () => leafWith(pki.a, { hash: "SHA-1" })],
    [
      "an intermediate signed with SHA-1",
      "weak_signature_algorithm",
      async () => {
        const ca = await pki.a.intermediate({ hash: "SHA-1" });
        return leafWith(ca, {}, ca.certPem);
      },
    ],
    ["a leaf with an RSA-1024 key", "weak_key", () => leafWith(pki.a, { keyType: "rsa-1024" })],
    [
      "an expired intermediate",
      "expired",
      async () => {
        const ca = await pki.a.intermediate({ notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) });
        return leafWith(ca, {}, ca.certPem);
      },
    ],
    [
      "a not-yet-valid intermediate",
      "not_yet_valid",
      async () => {
        const ca = await pki.a.intermediate({ notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 10 * DAY) });
        return leafWith(ca, {}, ca.certPem);
      },
    ],
    [
      "an a.test ID through an intermediate cross-signed by b.test's root only",
      "chain_unverified",
      async () => {
        const own = await pki.a.intermediate({ name: "cross" });
        const crossed = await pki.b.intermediate({ name: "cross", keyOf: own });
        return leafWith(own, {}, crossed.certPem);
      },
    ],
    [
      "a root of the bundle presented as the client certificate",
      "leaf_is_ca",
      () => {
        const pem = pki.a.certPem;
        return Promise.resolve({ certPem: pem, chainPem: pem, keyPem: pki.a.keyPem, der: derFromPem(pem, "root")[0]! });
      },
    ],
    ["a leaf key usage not marked critical", "key_usage_not_critical", () => leafWith(pki.a, { keyUsageCritical: false })],
    ["a leaf extended key usage without clientAuth", "extended_key_usage", () => leafWith(pki.a, { extKeyUsage: [SERVER_AUTH] })],
    [
      "an intermediate whose key usage lacks keyCertSign",
      "intermediate_not_ca",
      async () => {
        const ca = await pki.a.intermediate({ keyUsage: KeyUsage.cRLSign });
        return leafWith(ca, {}, ca.certPem);
      },
    ],
  ];

  it.each(zoo)("%s: %s", async (_name, rule, make) => {
    const creds = await make();
    const r = verify(creds);
    expect(ruleOf(r)).toBe(rule);
    await expectDeniedByProxy(creds, rule);
  });

  it("a b.test ID through an intermediate of a.test's root is refused, even cross-signed the other way", async () => {
    const own = await pki.a.intermediate({ name: "cross-b" });
    const leaf = await own.leaf({ uris: ["spiffe://b.test/svc"] });
    const creds = { ...leaf, chainPem: leaf.certPem + own.certPem };
    expect(ruleOf(verify(creds))).toBe("chain_unverified");
    await expectDeniedByProxy(creds, "chain_unverified");
  });

  it("says how many certificates were presented, all of them", async () => {
    let ca = pki.a;
    for (let i = 0; i < 17; i++) ca = await ca.intermediate();
    const creds = await ca.leaf({ uris: [ID] });
    expect(derFromPem(creds.chainPem, "c")).toHaveLength(18);
    const rec = await expectDeniedByProxy(creds, "chain_too_long", false);
    expect(rec.detail).toBe("peer presented 18 certificates, more than the limit of 16");
  });

  it("shows non-ASCII bytes of an ID as they are, not garbled", async () => {
    const creds = await pki.a.leaf({ extraExtensions: [sanOf(uriName(Buffer.from("spiffe://a.test/zoé", "utf8")))] });
    const r = verify(creds);
    expect(ruleOf(r)).toBe("id_invalid");
    expect(!r.ok && r.message).toContain("spiffe://a.test/zoé");
    const rec = await expectDeniedByProxy(creds, "id_invalid");
    expect(rec.detail).toContain("zoé");
    expect(rec.detail).not.toContain("Ã");
  });
});

describe("the zoo: still admitted", () => {
  it("a leaf within its intermediate's permitted URI subtree", async () => {
    const ca = await pki.a.intermediate({ extraExtensions: [nameConstraints({ permitted: [uriName("a.test")], excluded: [dnsName("evil.example")] })] });
    const creds = await leafWith(ca, { dnsNames: ["web.good.example"] }, ca.certPem);
    expect(ruleOf(verify(creds))).toBe("ok");
    await expectServedByProxy(creds);
  });

  it("a leaf right under an intermediate with pathLenConstraint 0", async () => {
    const zero = await pki.a.intermediate({ pathLength: 0 });
    const creds = await leafWith(zero, {}, zero.certPem);
    expect(ruleOf(verify(creds))).toBe("ok");
    await expectServedByProxy(creds);
  });

  it("an unknown extension that is not critical, and an EKU with both serverAuth and clientAuth", async () => {
    const creds = await leafWith(pki.a, { extraExtensions: [{ oid: UNKNOWN, critical: false, value: tlv(0x05) }], extKeyUsage: [SERVER_AUTH, CLIENT_AUTH] });
    expect(ruleOf(verify(creds))).toBe("ok");
    await expectServedByProxy(creds);
  });

  it("intermediates out of order", async () => {
    const upper = await pki.a.intermediate();
    const lower = await upper.intermediate();
    const creds = await leafWith(lower, {}, caPem(upper, lower));
    const r = verify(creds);
    expect(r.ok && r.svid.path.length).toBe(4);
    await expectServedByProxy(creds);
  });

  it("a cross-signed intermediate among others: the path ends at the ID's own domain's root", async () => {
    const own = await pki.a.intermediate({ name: "cross-ok" });
    const crossed = await pki.b.intermediate({ name: "cross-ok", keyOf: own });
    const creds = await leafWith(own, {}, caPem(crossed, own));
    const r = verify(creds);
    expect(r.ok && r.svid.path.at(-1)!.der).toEqual(derFromPem(pki.a.certPem, "a")[0]);
    await expectServedByProxy(creds);
  });

  it("a leaf outliving its CA: valid until the CA expires, then expired naming the intermediate", async () => {
    const caEnd = new Date(Date.now() + 2 * DAY);
    const ca = await pki.a.intermediate({ notAfter: caEnd });
    const creds = await leafWith(ca, { notAfter: new Date(Date.now() + 30 * DAY) }, ca.certPem);
    const v = verifier();
    const chain = derFromPem(creds.chainPem, "c");
    const now = v.verify(chain, Date.now());
    expect(now.ok && now.svid.notAfter).toBe(Math.floor(caEnd.getTime() / 1000) * 1000);
    const later = v.verify(chain, caEnd.getTime() + DAY);
    expect(ruleOf(later)).toBe("expired");
    expect(!later.ok && later.message).toMatch(/^intermediate certificate #1 expired/);
    const rec = await expectServedByProxy(creds);
    expect(rec.obligations).toMatchObject({ expires_at: new Date(Math.floor(caEnd.getTime() / 1000) * 1000).toISOString(), expires_because: "certificate" });
  });

  it("the floor is configurable: SHA-1 and RSA-1024 pass when allowed", async () => {
    const sha1 = await leafWith(pki.a, { hash: "SHA-1" });
    const rsa1024 = await leafWith(pki.a, { keyType: "rsa-1024" });
    expect(ruleOf(verify(sha1, Date.now(), { floor: { allowSha1: true } }))).toBe("ok");
    expect(ruleOf(verify(rsa1024, Date.now(), { floor: { minRsaBits: 1024 } }))).toBe("ok");
  });
});
