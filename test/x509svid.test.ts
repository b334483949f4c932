import { beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority, KeyUsage, selfSignedLeaf, type Issued } from "../src/certs/issue.js";
import { TrustDomain } from "../src/spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../src/spiffe/x509bundle.js";
import { derFromPem } from "../src/spiffe/x509cert.js";
import { SvidVerifier, type SvidResult, type SvidRule } from "../src/spiffe/x509svid.js";

let a: CertificateAuthority;
let b: CertificateAuthority;
let verifier: SvidVerifier;
const DAY = 86_400_000;

beforeAll(async () => {
  a = await CertificateAuthority.root({ trustDomain: "a.test" });
  b = await CertificateAuthority.root({ trustDomain: "b.test" });
  verifier = new SvidVerifier(
    new BundleSet([X509Bundle.fromPem(TrustDomain.parse("a.test"), a.certPem, "a"), X509Bundle.fromPem(TrustDomain.parse("b.test"), b.certPem, "b")]),
    { maxChainLength: 4 },
  );
});

const verify = (issued: Issued, now = Date.now()): SvidResult => verifier.verify(derFromPem(issued.chainPem, "chain"), now);

function expectRule(r: SvidResult, rule: SvidRule): void {
  expect(r.ok ? "ok" : r.rule).toBe(rule);
}

describe("X509-SVID leaf rules", () => {
  it("accepts a well-formed EC P-256 SVID and reads its ID", async () => {
    const r = verify(await a.leaf({ uris: ["spiffe://a.test/web"] }));
    expect(r.ok && r.svid.id.toString()).toBe("spiffe://a.test/web");
  });

  it("accepts an RSA SVID issued by an RSA CA", async () => {
    const rsaCA = await CertificateAuthority.root({ trustDomain: "a.test", keyType: "rsa-2048" });
    const v = new SvidVerifier(new BundleSet([X509Bundle.fromPem(TrustDomain.parse("a.test"), rsaCA.certPem, "rsa")]));
    const leaf = await rsaCA.leaf({ uris: ["spiffe://a.test/rsa"], keyType: "rsa-2048" });
    const r = v.verify(derFromPem(leaf.chainPem, "c"), Date.now());
    expect(r.ok).toBe(true);
  });

  it.each<[string, () => Promise<Issued>, SvidRule]>([
    ["no URI SAN", () => a.leaf({ dnsNames: ["web.a.test"] }), "uri_san_count"],
    ["two URI SANs", () => a.leaf({ uris: ["spiffe://a.test/x", "spiffe://a.test/y"] }), "uri_san_count"],
    ["one SAN holding a comma list is one invalid ID", () => a.leaf({ uris: ["spiffe://a.test/b, URI:spiffe://a.test/c"] }), "id_invalid"],
    ["a non-SPIFFE URI", () => a.leaf({ uris: ["https://a.test/web"] }), "id_invalid"],
    ["an uppercase trust domain", () => a.leaf({ uris: ["spiffe://A.test/web"] }), "id_invalid"],
    ["an ID without a path", () => a.leaf({ uris: ["spiffe://a.test"] }), "id_no_path"],
    ["a CA leaf", () => a.leaf({ uris: ["spiffe://a.test/web"], isCA: true, keyUsage: KeyUsage.digitalSignature }), "leaf_is_ca"],
    ["no key usage", () => a.leaf({ uris: ["spiffe://a.test/web"], keyUsage: null }), "key_usage_missing"],
    [
      "key usage without digitalSignature",
      () => a.leaf({ uris: ["spiffe://a.test/web"], keyUsage: KeyUsage.keyEncipherment }),
      "key_usage_no_digital_signature",
    ],
    ["keyCertSign on a leaf", () => a.leaf({ uris: ["spiffe://a.test/web"], keyUsage: KeyUsage.digitalSignature | KeyUsage.keyCertSign }), "key_usage_ca_bits"],
    ["cRLSign on a leaf", () => a.leaf({ uris: ["spiffe://a.test/web"], keyUsage: KeyUsage.digitalSignature | KeyUsage.cRLSign }), "key_usage_ca_bits"],
    ["an unknown trust domain", () => a.leaf({ uris: ["spiffe://c.test/web"] }), "untrusted_domain"],
  ])("rejects %s", async (_name, make, rule) => {
    expectRule(verify(await make()), rule);
  });
});

describe("chains", () => {
  it("rejects cross-trust-domain confusion: a b.test ID signed by a.test's CA", async () => {
    expectRule(verify(await a.leaf({ uris: ["spiffe://b.test/web"] })), "chain_unverified");
  });

  it("accepts each domain's IDs from its own CA with both bundles configured", async () => {
    expect(verify(await a.leaf({ uris: ["spiffe://a.test/x"] })).ok).toBe(true);
    expect(verify(await b.leaf({ uris: ["spiffe://b.test/x"] })).ok).toBe(true);
  });

  it("rejects a leaf from an unconfigured CA (wrong CA)", async () => {
    const other = await CertificateAuthority.root({ trustDomain: "a.test" });
    expectRule(verify(await other.leaf({ uris: ["spiffe://a.test/web"] })), "chain_unverified");
  });

  it("rejects a self-signed leaf with a valid-looking ID", async () => {
    expectRule(verify(await selfSignedLeaf({ uris: ["spiffe://a.test/web"] })), "chain_unverified");
  });

  it("accepts intermediates presented by the peer, two deep", async () => {
    const i1 = await a.intermediate({ trustDomain: "a.test" });
    const i2 = await i1.intermediate({ trustDomain: "a.test" });
    const leaf = await i2.leaf({ uris: ["spiffe://a.test/deep"] });
    const r = verify(leaf);
    expect(r.ok && r.svid.path.length).toBe(4);
  });

  it("rejects a chain whose intermediate was not presented", async () => {
    const i1 = await a.intermediate({ trustDomain: "a.test" });
    const leaf = await i1.leaf({ uris: ["spiffe://a.test/x"] });
    expectRule(verifier.verify(derFromPem(leaf.certPem, "leaf only"), Date.now()), "chain_unverified");
  });

  it("rejects an intermediate that is not a CA", async () => {
    const notCA = await a.intermediate({ trustDomain: "a.test", isCA: false, keyUsage: KeyUsage.keyCertSign });
    expectRule(verify(await notCA.leaf({ uris: ["spiffe://a.test/x"] })), "intermediate_not_ca");
  });

  it("rejects an expired intermediate", async () => {
    const old = await a.intermediate({ trustDomain: "a.test", notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) });
    const leaf = await old.leaf({ uris: ["spiffe://a.test/x"] });
    const r = verify(leaf);
    expectRule(r, "expired");
    expect(!r.ok && r.message).toMatch(/intermediate/);
  });

  it("rejects a chain longer than the limit", async () => {
    let ca = a;
    for (let i = 0; i < 4; i++) ca = await ca.intermediate({ trustDomain: "a.test" });
    expectRule(verify(await ca.leaf({ uris: ["spiffe://a.test/x"] })), "chain_too_long");
  });

  it("rejects garbage DER as malformed", () => {
    expectRule(verifier.verify([Buffer.from("not a certificate")], Date.now()), "malformed");
  });

  it("rejects an empty chain", () => {
    expectRule(verifier.verify([], Date.now()), "no_certificate");
  });
});

describe("validity", () => {
  it("rejects an expired leaf", async () => {
    expectRule(
      verify(await a.leaf({ uris: ["spiffe://a.test/x"], notBefore: new Date(Date.now() - 2 * DAY), notAfter: new Date(Date.now() - DAY) })),
      "expired",
    );
  });

  it("rejects a not-yet-valid leaf", async () => {
    expectRule(
      verify(await a.leaf({ uris: ["spiffe://a.test/x"], notBefore: new Date(Date.now() + DAY), notAfter: new Date(Date.now() + 2 * DAY) })),
      "not_yet_valid",
    );
  });

  it("checks dates on every call even when the chain is cached", async () => {
    const leaf = await a.leaf({ uris: ["spiffe://a.test/x"], notAfter: new Date(Date.now() + DAY) });
    expect(verify(leaf).ok).toBe(true);
    expectRule(verify(leaf, Date.now() + 2 * DAY), "expired");
    expect(verify(leaf).ok).toBe(true);
  });
});

describe("bundles", () => {
  it("refuses a non-CA certificate as a trust anchor", async () => {
    const leaf = await a.leaf({ uris: ["spiffe://a.test/x"] });
    expect(() => X509Bundle.fromPem(TrustDomain.parse("a.test"), leaf.certPem, "bundle.pem")).toThrow(/not a CA/);
  });
  it("refuses a file without certificates", () => {
    expect(() => X509Bundle.fromPem(TrustDomain.parse("a.test"), "hello", "bundle.pem")).toThrow(/no PEM CERTIFICATE/);
  });
});
