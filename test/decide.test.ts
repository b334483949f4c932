import { beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../src/certs/issue.js";
import { SpiffeId, TrustDomain } from "../src/identity/spiffeid.js";
import { BundleSet, X509Bundle } from "../src/identity/x509bundle.js";
import { derFromPem } from "../src/identity/x509cert.js";
import { SvidVerifier, type SvidResult } from "../src/identity/x509svid.js";
import { decide } from "../src/policy/decide.js";
import type { Policy } from "../src/policy/model.js";

let verifier: SvidVerifier;
let ca: CertificateAuthority;
const peers = new Map<string, SvidResult>();

beforeAll(async () => {
  ca = await CertificateAuthority.root({ trustDomain: "a.test" });
  const other = await CertificateAuthority.root({ trustDomain: "o.test" });
  verifier = new SvidVerifier(new BundleSet([
    X509Bundle.fromPem(TrustDomain.parse("a.test"), ca.certPem, "a"),
    X509Bundle.fromPem(TrustDomain.parse("o.test"), other.certPem, "o"),
  ]));
  const ids = ["spiffe://a.test/web", "spiffe://a.test/ns/prod/api", "spiffe://a.test/ns/production/api", "spiffe://a.test/banned", "spiffe://a.test/nobody"];
  for (const id of ids) peers.set(id, verifier.verify(derFromPem((await ca.leaf({ uris: [id] })).chainPem, id), Date.now()));
  peers.set("spiffe://o.test/any", verifier.verify(derFromPem((await other.leaf({ uris: ["spiffe://o.test/any"] })).chainPem, "o"), Date.now()));
});

const policy = (over: Partial<Policy> = {}): Policy => ({
  name: "p",
  version: "v1",
  default: "deny",
  rules: [
    { name: "allow-web", action: "allow", match: [{ kind: "id", id: SpiffeId.parse("spiffe://a.test/web") }] },
    { name: "allow-prod", action: "allow", match: [{ kind: "path_prefix", prefix: SpiffeId.parse("spiffe://a.test/ns/prod") }] },
    { name: "allow-other", action: "allow", match: [{ kind: "trust_domain", trustDomain: TrustDomain.parse("o.test") }] },
    { name: "deny-banned", action: "deny", match: [{ kind: "path_prefix", prefix: SpiffeId.parse("spiffe://a.test/banned") }] },
  ],
  ...over,
});

const input = (id: string) => ({ listener: "l", sourceAddress: "127.0.0.1", sni: null, alpn: null, now: Date.now(), peer: peers.get(id)! });

describe("decide", () => {
  it.each([
    ["spiffe://a.test/web", "allow", "allow-web", "explicit_allow"],
    ["spiffe://a.test/ns/prod/api", "allow", "allow-prod", "explicit_allow"],
    ["spiffe://a.test/ns/production/api", "deny", null, "default_deny"],
    ["spiffe://o.test/any", "allow", "allow-other", "explicit_allow"],
    ["spiffe://a.test/banned", "deny", "deny-banned", "explicit_deny"],
    ["spiffe://a.test/nobody", "deny", null, "default_deny"],
  ])("%s → %s by %s", (id, decision, rule, reason) => {
    const d = decide(policy(), input(id));
    expect([d.decision, d.rule, d.reasons]).toEqual([decision, rule, [reason]]);
    expect(d.policyVersion).toBe("v1");
  });

  it("deny rules win even when an allow rule comes first", () => {
    const p = policy({ rules: [
      { name: "allow-all", action: "allow", match: [{ kind: "trust_domain", trustDomain: TrustDomain.parse("a.test") }] },
      { name: "deny-web", action: "deny", match: [{ kind: "id", id: SpiffeId.parse("spiffe://a.test/web") }] },
    ] });
    expect(decide(p, input("spiffe://a.test/web")).rule).toBe("deny-web");
  });

  it("the first matching allow rule decides", () => {
    const p = policy({ rules: [
      { name: "first", action: "allow", match: [{ kind: "trust_domain", trustDomain: TrustDomain.parse("a.test") }] },
      { name: "second", action: "allow", match: [{ kind: "id", id: SpiffeId.parse("spiffe://a.test/web") }] },
    ] });
    expect(decide(p, input("spiffe://a.test/web")).rule).toBe("first");
  });

  it("a default-allow policy admits unmatched peers with default_allow", () => {
    const d = decide(policy({ default: "allow" }), input("spiffe://a.test/nobody"));
    expect([d.decision, d.reasons]).toEqual(["allow", ["default_allow"]]);
  });

  it("a failed SVID is denied whatever the policy says, with the rule it broke", () => {
    const failed: SvidResult = { ok: false, rule: "leaf_is_ca", message: "leaf certificate is a CA" };
    const d = decide(policy({ default: "allow" }), { ...input("spiffe://a.test/web"), peer: failed });
    expect([d.decision, d.reasons, d.svidRule]).toEqual(["deny", ["invalid_svid"], "leaf_is_ca"]);
    const none = decide(policy({ default: "allow" }), { ...input("spiffe://a.test/web"), peer: { ok: false, rule: "no_certificate", message: "none" } });
    expect(none.reasons).toEqual(["no_client_cert"]);
    const untrusted = decide(policy(), { ...input("spiffe://a.test/web"), peer: { ok: false, rule: "untrusted_domain", message: "x" } });
    expect(untrusted.reasons).toEqual(["untrusted_domain"]);
  });
});
