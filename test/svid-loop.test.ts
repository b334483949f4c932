// Path building under attack: chains made to send the search around in loops. Work is asserted as
// counts of signature verifications (the verifier's counters, and the running sidecar's), never as
// wall-clock time, and a good client is served while the attack runs.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { TrustDomain } from "../src/spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../src/spiffe/x509bundle.js";
import { derFromPem } from "../src/spiffe/x509cert.js";
import { SvidVerifier } from "../src/spiffe/x509svid.js";
import { dialTls, readAll, startHarness, type Harness } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

const ID = "spiffe://a.test/allowed";
let pki: TestPki;
let h: Harness;
/** Seven self-issued CAs sharing one name and one key, and a leaf under that name for a trusted domain. */
let seven: { leaf: Issued; cas: string[] };
/** Fifteen CAs sharing one name, each with its own key and certified by the next one's: a ring. */
let ring: { leaf: Issued; cas: string[] };

async function makeSeven() {
  const first = await CertificateAuthority.root({ name: "loop" });
  const cas = [first.certPem];
  for (let i = 1; i < 7; i++) cas.push((await CertificateAuthority.root({ name: "loop", keyOf: first })).certPem);
  return { leaf: await first.leaf({ uris: [ID] }), cas };
}

async function makeRing(n: number) {
  const keys: CertificateAuthority[] = [];
  for (let i = 0; i < n; i++) keys.push(await CertificateAuthority.root({ name: "ring", keyIdentifiers: false }));
  const cas: string[] = [];
  for (let i = 0; i < n; i++) cas.push((await keys[(i + 1) % n]!.intermediate({ name: "ring", keyOf: keys[i]!, keyIdentifiers: false })).certPem);
  return { leaf: await keys[0]!.leaf({ uris: [ID], keyIdentifiers: false }), cas };
}

/** The k-th permutation of `items` (factorial number system): every k gives another order. */
function permutation<T>(items: readonly T[], k: number): T[] {
  const pool = [...items];
  const out: T[] = [];
  for (let n = pool.length; n > 0; n--) {
    out.push(pool.splice(k % n, 1)[0]!);
    k = Math.floor(k / n);
  }
  return out;
}

const presented = (x: { leaf: Issued; cas: string[] }, order: number): Issued => ({ ...x.leaf, chainPem: x.leaf.certPem + permutation(x.cas, order).join("") });

beforeAll(async () => {
  pki = await makePki();
  [seven, ring] = await Promise.all([makeSeven(), makeRing(15)]);
  h = await startHarness(pki, { extra: "limits: { max_chain_length: 16 }\n" });
});
afterAll(() => h.close());

function verifier(): SvidVerifier {
  return new SvidVerifier(new BundleSet([X509Bundle.fromPem(TrustDomain.parse("a.test"), pki.a.certPem, "a")]), { maxChainLength: 16 });
}

describe("path building is bounded", () => {
  it("seven self-issued CAs with one name and key: one signature check per order, whatever the order", () => {
    for (const order of [0, 1, 719, 2520, 5039]) {
      const v = verifier();
      const r = v.verify(derFromPem(presented(seven, order).chainPem, "c"), Date.now());
      expect(r.ok ? "ok" : r.rule).toBe("chain_unverified");
      expect(v.counters.get("svid.signature_checks")).toBe(1);
    }
  });

  it("a ring of fifteen keys under one name spends the budget and stops there", () => {
    for (const order of [0, 12345, 987654321]) {
      const v = verifier();
      const r = v.verify(derFromPem(presented(ring, order).chainPem, "c"), Date.now());
      expect(r.ok ? "ok" : r.rule).toBe("path_budget_exhausted");
      expect(v.counters.get("svid.signature_checks")).toBe(12);
      expect(v.counters.get("svid.path_budget_exhausted")).toBe(1);
    }
  });

  it("a smaller budget stops sooner", () => {
    const v = new SvidVerifier(new BundleSet([X509Bundle.fromPem(TrustDomain.parse("a.test"), pki.a.certPem, "a")]), {
      maxChainLength: 16,
      budget: { maxSignatureChecks: 3 },
    });
    const r = v.verify(derFromPem(presented(ring, 7).chainPem, "c"), Date.now());
    expect(r.ok ? "ok" : r.rule).toBe("path_budget_exhausted");
    expect(v.counters.get("svid.signature_checks")).toBe(3);
  });

  it("through the sidecar: every reordered attack denied within its budget while a good client is served", async () => {
    const good = await pki.leaf(pki.a, ID);
    const checks = () => h.sidecar.svidWork.get("svid.signature_checks");
    const checksBefore = checks();
    const acceptedBefore = h.echo.accepted();
    const attacks = [...[3, 4, 5, 6].map((k) => presented(seven, k)), ...[11, 22, 33, 44].map((k) => presented(ring, k))];
    const attack = async (creds: Issued) => {
      const s = await dialTls(h.port, pki, creds);
      const source = `${s.localAddress}:${s.localPort}`;
      const got = readAll(s);
      s.write("never forwarded");
      expect((await got).length).toBe(0);
      return h.logs.next("decision", (r) => r.source === source);
    };
    const served = (async () => {
      const s = await dialTls(h.port, pki, good);
      const got = readAll(s);
      s.end("good client");
      return (await got).toString();
    })();
    const [records, echo] = await Promise.all([Promise.all(attacks.map(attack)), served]);
    expect(echo).toBe("good client");
    expect(records.map((r) => [r.decision, r.svid_rule])).toEqual([
      ...Array.from({ length: 4 }, () => ["deny", "chain_unverified"]),
      ...Array.from({ length: 4 }, () => ["deny", "path_budget_exhausted"]),
    ]);
    expect(records.slice(4).every((r) => (r.reasons as string[]).includes("path_budget_exhausted"))).toBe(true);
    expect(h.echo.accepted()).toBe(acceptedBefore + 1);
    // Seven-CA loops: at most one check each; rings: at most the budget each; the good client: one.
    const spent = checks() - checksBefore;
    expect(spent).toBeGreaterThanOrEqual(4 + 4 * 12 + 1);
    expect(spent).toBeLessThanOrEqual(4 * 1 + 4 * 12 + 1);
  });
});
