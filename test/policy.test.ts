// The policy engine alone: compiled from raw data, evaluated on plain inputs. No sockets.
import { describe, expect, it } from "vitest";
import { SpiffeId } from "../src/spiffe/spiffeid.js";
import { AttestationStore, flattenClaims, type AttestationRecord } from "../src/policy/attestation.js";
import { compilePolicies, type PolicySources, type RawPolicy, type RawRule } from "../src/policy/compile.js";
import { decide } from "../src/policy/decide.js";
import { type Allow, type Decision, type DecisionInput, type PeerResult } from "../src/policy/decision.js";
import type { Policy } from "../src/policy/model.js";

/** The allow a test expects (a deny fails the test, naming its reasons). */
function allowed(d: Decision): Allow {
  if (d.decision !== "allow") throw new Error(`expected allow, got deny: ${d.reasons.join(", ")}`);
  return d;
}

const H = 3_600_000;
const NOW = Date.parse("2026-11-23T10:30:00Z"); // a Monday

function compileAll(src: Partial<PolicySources> & { policies: Record<string, RawPolicy> }): { policies: Map<string, Policy>; errors: string[] } {
  const errors: string[] = [];
  const policies = compilePolicies({ roles: {}, attestors: ["node"], listeners: ["web", "admin"], ...src }, "v1", (path, msg) =>
    errors.push(`${path.join(".")}: ${msg}`),
  );
  return { policies, errors };
}

function policyOf(rules: RawRule[], over: Partial<RawPolicy> = {}, src: Partial<PolicySources> = {}): Policy {
  const { policies, errors } = compileAll({ ...src, policies: { p: { default: "deny", mode: "enforce", rules, ...over } } });
  expect(errors).toEqual([]);
  return policies.get("p")!;
}

const leafFor = (lifetimeH = 1, leftH = 1) => ({ notBefore: NOW - (lifetimeH - leftH) * H, notAfter: NOW + leftH * H, fingerprint: "ab".repeat(32) });

/** `leaf` null: a bare ID with no certificate known (as `parley check --id` without `--cert`). */
function peer(id: string, leaf: ReturnType<typeof leafFor> | null = leafFor()): PeerResult {
  return { ok: true, svid: { id: SpiffeId.parse(id), ...(leaf ? { leaf, notAfter: leaf.notAfter } : {}) } };
}

function input(id: string, over: Partial<DecisionInput> = {}): DecisionInput {
  return { listener: "web", sourceAddress: "10.1.2.3", sni: "api.example.org", alpn: "h2", now: NOW, peer: peer(id), ...over };
}

const allow = (name: string, extra: Partial<RawRule> = {}): RawRule => ({ name, action: "allow", match: [{ trust_domain: "td" }], ...extra });

describe("identity matchers", () => {
  const rules: RawRule[] = [
    { name: "exact", action: "allow", match: [{ id: "spiffe://td/exact/one" }] },
    { name: "prefix", action: "allow", match: [{ path_prefix: "spiffe://td/ns/prod" }] },
    { name: "star", action: "allow", match: [{ glob: "spiffe://td/ns/*/sa/web" }] },
    { name: "suffix", action: "allow", match: [{ glob: "spiffe://td/jobs/**" }] },
    { name: "domain", action: "allow", match: [{ trust_domain: "other.td" }] },
  ];
  const p = policyOf(rules);
  it.each([
    ["spiffe://td/exact/one", "exact"],
    ["spiffe://td/exact/one/more", null],
    ["spiffe://td/exact", null],
    ["spiffe://td/ns/prod", "prefix"],
    ["spiffe://td/ns/prod/sa/api", "prefix"],
    ["spiffe://td/ns/production/sa/api", null],
    ["spiffe://td/ns/dev/sa/web", "star"],
    ["spiffe://td/ns/dev/sa/web/x", null],
    ["spiffe://td/ns/dev/x/sa/web", null],
    ["spiffe://td/jobs/nightly", "suffix"],
    ["spiffe://td/jobs/nightly/7", "suffix"],
    ["spiffe://td/jobs", null],
    ["spiffe://other.td/anything/at/all", "domain"],
    ["spiffe://third.td/exact/one", null],
  ])("%s → %s", (id, rule) => {
    const d = decide(p, input(id));
    expect(d.rule).toBe(rule);
    expect(d.decision).toBe(rule ? "allow" : "deny");
    if (!rule) expect(d.reasons).toEqual(["identity_not_allowed", "default_deny"]);
  });

  it("a rule without match applies to every verified peer", () => {
    expect(decide(policyOf([{ name: "all", action: "allow" }]), input("spiffe://any.td/x")).rule).toBe("all");
  });
});

describe("evaluation order", () => {
  it("deny rules win over an earlier allow rule", () => {
    const p = policyOf([allow("all-td"), { name: "no-web", action: "deny", match: [{ id: "spiffe://td/web" }] }]);
    expect([decide(p, input("spiffe://td/web")).rule, decide(p, input("spiffe://td/web")).reasons]).toEqual(["no-web", ["explicit_deny"]]);
    expect(decide(p, input("spiffe://td/api")).rule).toBe("all-td");
  });

  it("allow rules are tried in file order: the first that applies decides", () => {
    const p = policyOf(
      [allow("needs-role", { roles: ["admin"] }), allow("plain", { match: [{ path_prefix: "spiffe://td/a" }] })],
      {},
      { roles: { admin: [{ id: "spiffe://td/root" }] } },
    );
    expect(decide(p, input("spiffe://td/a/b")).rule).toBe("plain");
    expect(decide(p, input("spiffe://td/root")).rule).toBe("needs-role");
  });

  it("the policy default can be allow", () => {
    const d = decide(policyOf([], { default: "allow" }), input("spiffe://td/x"));
    expect([d.decision, d.rule, d.reasons]).toEqual(["allow", null, ["default_allow"]]);
  });

  it("an SVID that failed verification is denied whatever the policy, with its rule", () => {
    const p = policyOf([], { default: "allow", mode: "audit" });
    const d = decide(p, { ...input("spiffe://td/x"), peer: { ok: false, rule: "leaf_is_ca", message: "leaf certificate is a CA" } });
    expect([d.decision, d.reasons, d.svidRule]).toEqual(["deny", ["invalid_svid"], "leaf_is_ca"]);
    expect(decide(p, { ...input("spiffe://td/x"), peer: { ok: false, rule: "no_certificate", message: "" } }).reasons).toEqual(["no_client_cert"]);
    expect(decide(p, { ...input("spiffe://td/x"), peer: { ok: false, rule: "untrusted_domain", message: "" } }).reasons).toEqual(["untrusted_domain"]);
  });
});

describe("roles", () => {
  const roles = { reader: [{ path_prefix: "spiffe://td/ns/web" }], writer: [{ id: "spiffe://td/ns/web/editor" }] };
  const p = policyOf([allow("write", { roles: ["reader", "writer"] })], {}, { roles });
  it("are granted by bindings and all required ones must be held", () => {
    const ok = decide(p, input("spiffe://td/ns/web/editor"));
    expect([ok.decision, [...ok.roles].sort()]).toEqual(["allow", ["reader", "writer"]]);
    const d = decide(p, input("spiffe://td/ns/web/viewer"));
    expect([d.decision, d.reasons]).toEqual(["deny", ["role_missing", "default_deny"]]);
  });
  it("may also be granted by an approval (grantedRoles)", () => {
    expect(decide(p, input("spiffe://td/ns/web/viewer", { grantedRoles: ["writer"] })).decision).toBe("allow");
  });
});

describe("attestation", () => {
  const rec = (over: Partial<AttestationRecord> = {}): AttestationRecord => ({
    subject: "spiffe://td/w",
    attestor: "node",
    claims: flattenClaims({ env: "prod", image: { signed: true }, tier: "gold" }),
    issuedAt: NOW - H,
    expiresAt: NOW + H,
    source: "config",
    ...over,
  });
  const p = policyOf([
    allow("attested", { attestation: { attestor: "node", claims: { env: "prod", "image.signed": true, tier: ["gold", "silver"] }, max_age: 2 * H } }),
  ]);
  const run = (records: AttestationRecord[]) => decide(p, input("spiffe://td/w", { attestations: new AttestationStore(records).for("spiffe://td/w") }));

  it.each<[string, AttestationRecord[], string]>([
    ["fresh evidence with the claims", [rec()], "allow"],
    ["no evidence", [], "attestation_missing"],
    ["evidence from another attestor", [rec({ attestor: "other" })], "attestation_missing"],
    ["evidence pinned to another certificate", [rec({ certFingerprint: "cd".repeat(32) })], "attestation_missing"],
    ["evidence pinned to this certificate", [rec({ certFingerprint: "ab".repeat(32) })], "allow"],
    ["expired evidence", [rec({ expiresAt: NOW - 1 })], "attestation_stale"],
    ["evidence older than max_age", [rec({ issuedAt: NOW - 3 * H })], "attestation_stale"],
    ["a claim with the wrong value", [rec({ claims: flattenClaims({ env: "dev", image: { signed: true }, tier: "gold" }) })], "attestation_claim_mismatch"],
    [
      "a claim outside the accepted set",
      [rec({ claims: flattenClaims({ env: "prod", image: { signed: true }, tier: "bronze" }) })],
      "attestation_claim_mismatch",
    ],
    ["a missing claim", [rec({ claims: flattenClaims({ env: "prod", tier: "gold" }) })], "attestation_claim_mismatch"],
    ["a stale record beside a good one", [rec({ expiresAt: NOW - 1 }), rec()], "allow"],
  ])("%s → %s", (_n, records, want) => {
    const d = run(records);
    if (want === "allow") expect(d.decision).toBe("allow");
    else expect([d.decision, d.reasons]).toEqual(["deny", [want, "default_deny"]]);
  });

  it("bounds the session by the evidence's expiry", () => {
    const d = run([rec({ expiresAt: NOW + 60_000 })]);
    expect([allowed(d).obligations.expiresAt, allowed(d).obligations.expiresBecause]).toEqual([NOW + 60_000, "attestation"]);
  });
});

describe("conditions", () => {
  const cases: Array<[string, RawRule["conditions"], Partial<DecisionInput>, boolean]> = [
    ["source in CIDR", { source_cidrs: ["10.0.0.0/8"] }, {}, true],
    ["source outside CIDR", { source_cidrs: ["192.168.0.0/16", "172.16.0.0/12"] }, {}, false],
    ["IPv4-mapped IPv6 source", { source_cidrs: ["10.0.0.0/8"] }, { sourceAddress: "::ffff:10.9.9.9" }, true],
    ["IPv6 source in IPv6 CIDR", { source_cidrs: ["fd00::/8"] }, { sourceAddress: "fd00::1" }, true],
    ["single address", { source_cidrs: ["10.1.2.3"] }, {}, true],
    ["SNI exact", { sni: ["api.example.org"] }, {}, true],
    ["SNI wildcard", { sni: ["*.example.org"] }, {}, true],
    ["SNI wildcard is one label", { sni: ["*.example.org"] }, { sni: "a.b.example.org" }, false],
    ["SNI absent", { sni: ["api.example.org"] }, { sni: null }, false],
    ["ALPN listed", { alpn: ["h2", "http/1.1"] }, {}, true],
    ["ALPN not listed", { alpn: ["http/1.1"] }, {}, false],
    ["listener listed", { listeners: ["web"] }, {}, true],
    ["listener not listed", { listeners: ["admin"] }, {}, false],
    ["inside a time window (10:30 UTC Monday)", { time: [{ zone: "UTC", days: ["mon"], from: "09:00", to: "17:00" }] }, {}, true],
    ["outside the days", { time: [{ zone: "UTC", days: ["sat", "sun"], from: "09:00", to: "17:00" }] }, {}, false],
    ["in another zone's hours (11:30 in Paris)", { time: [{ zone: "Europe/Paris", from: "11:00", to: "12:00" }] }, {}, true],
    [
      "window across midnight, evening part",
      { time: [{ zone: "UTC", days: ["sun"], from: "22:00", to: "06:00" }] },
      { now: Date.parse("2026-11-22T23:00:00Z") },
      true,
    ],
    [
      "window across midnight, morning part belongs to the day before",
      { time: [{ zone: "UTC", days: ["sun"], from: "22:00", to: "06:00" }] },
      { now: Date.parse("2026-11-23T05:00:00Z") },
      true,
    ],
    [
      "window across midnight, wrong day",
      { time: [{ zone: "UTC", days: ["mon"], from: "22:00", to: "06:00" }] },
      { now: Date.parse("2026-11-23T05:00:00Z") },
      false,
    ],
    ["short-lived certificate", { max_cert_lifetime: 2 * H }, {}, true],
    ["long-lived certificate", { max_cert_lifetime: 2 * H }, { peer: peer("spiffe://td/x", leafFor(24 * 365, 24)) }, false],
    ["remaining lifetime small enough", { max_cert_remaining: 2 * H }, {}, true],
    ["too much lifetime left", { max_cert_remaining: 2 * H }, { peer: peer("spiffe://td/x", leafFor(48, 47)) }, false],
    ["lifetime rule with no certificate known", { max_cert_lifetime: 2 * H }, { peer: peer("spiffe://td/x", null) }, false],
  ];
  it.each(cases)("%s", (_n, conditions, over, holds) => {
    const d = decide(policyOf([allow("r", { conditions })]), input("spiffe://td/x", over));
    expect(d.decision).toBe(holds ? "allow" : "deny");
    if (!holds) {
      const name = Object.keys(conditions!)[0]!.replace("source_cidrs", "source_cidr").replace("listeners", "listener");
      expect(d.reasons).toEqual([`condition_failed:${name}`, "default_deny"]);
    }
  });

  it("narrow a deny rule: it denies only where its conditions hold", () => {
    const p = policyOf([
      { name: "no-outside", action: "deny", conditions: { source_cidrs: ["0.0.0.0/0"] } },
      { name: "rest", action: "allow", conditions: { source_cidrs: ["10.0.0.0/8"] } },
    ]);
    // 0.0.0.0/0 holds for every IPv4 source, so the deny applies.
    expect(decide(p, input("spiffe://td/x")).rule).toBe("no-outside");
    expect(decide(p, input("spiffe://td/x", { sourceAddress: "fd00::1" })).reasons).toEqual(["condition_failed:source_cidr", "default_deny"]);
  });
});

describe("obligations", () => {
  it("merge policy limits with the rule's and end at the earliest of max duration and certificate expiry", () => {
    const p = policyOf([allow("r", { limits: { max_duration: 10 * 60_000, byte_budget: 1000 } })], { limits: { idle_timeout: 30_000, byte_budget: 5000 } });
    const d = decide(p, input("spiffe://td/x"));
    expect(allowed(d).obligations).toEqual({
      idleTimeoutMs: 30_000,
      byteBudget: 1000,
      maxDurationMs: 600_000,
      expiresAt: NOW + 600_000,
      expiresBecause: "max_duration",
    });
    const short = decide(p, input("spiffe://td/x", { peer: peer("spiffe://td/x", leafFor(1, 0.05)) }));
    expect(allowed(short).obligations.expiresBecause).toBe("certificate");
  });
});

describe("audit mode", () => {
  it("policy in audit mode admits what it would deny and says so", () => {
    const d = decide(policyOf([{ name: "deny-x", action: "deny", match: [{ id: "spiffe://td/x" }] }], { mode: "audit" }), input("spiffe://td/x"));
    expect([d.decision, d.mode, allowed(d).wouldDeny]).toEqual(["allow", "audit", { rule: "deny-x", reasons: ["explicit_deny"] }]);
  });

  it("an audit deny rule does not deny, but the allow that follows carries would_deny", () => {
    const p = policyOf([{ name: "trial-deny", action: "deny", mode: "audit", match: [{ id: "spiffe://td/x" }] }, allow("all")]);
    const d = decide(p, input("spiffe://td/x"));
    expect([d.decision, d.rule, allowed(d).wouldDeny]).toEqual(["allow", "all", { rule: "trial-deny", reasons: ["explicit_deny"] }]);
  });

  it("an audit allow rule admits a peer that fails its requirements, with the reasons", () => {
    const p = policyOf([allow("trial", { mode: "audit", conditions: { alpn: ["h3"] } })]);
    const d = decide(p, input("spiffe://td/x"));
    expect([d.decision, d.rule, allowed(d).wouldDeny]).toEqual(["allow", "trial", { rule: "trial", reasons: ["condition_failed:alpn"] }]);
  });

  it("an enforce policy still denies", () => {
    expect(decide(policyOf([allow("r", { conditions: { alpn: ["h3"] } })]), input("spiffe://td/x")).decision).toBe("deny");
  });
});

describe("explain", () => {
  it("says for every rule why it did or did not apply", () => {
    const p = policyOf([
      { name: "ban", action: "deny", match: [{ id: "spiffe://td/banned" }] },
      allow("needs-h3", { conditions: { alpn: ["h3"] } }),
      allow("fallback", { conditions: { listeners: ["web"] } }),
      allow("never-reached", { match: [{ id: "spiffe://td/x" }], conditions: { sni: ["x.example.org"] } }),
    ]);
    const d = decide(p, input("spiffe://td/x"), { explain: true });
    expect(d.rule).toBe("fallback");
    expect(d.explain!.map((t) => [t.rule, t.outcome, t.reasons])).toEqual([
      ["ban", "identity_not_matched", []],
      ["needs-h3", "requirements_unmet", ["condition_failed:alpn"]],
      ["fallback", "applied", []],
      ["never-reached", "not_reached", []],
    ]);
    expect(d.explain![1]!.details[0]).toMatch(/ALPN h2 is not one of h3/);
    expect(decide(p, input("spiffe://td/x")).explain).toBeUndefined();
  });
});

describe("compile errors name what is wrong and where", () => {
  const bad = (rules: RawRule[], src: Partial<PolicySources> = {}) =>
    compileAll({ ...src, policies: { p: { default: "deny", mode: "enforce", rules } } }).errors;
  it.each<[string, RawRule[], RegExp]>([
    ["unknown role", [allow("r", { roles: ["ghost"] })], /^policies\.p\.rules\.0\.roles\.0: unknown role ghost/],
    [
      "bad CIDR",
      [allow("r", { conditions: { source_cidrs: ["10.0.0.0/33"] } })],
      /^policies\.p\.rules\.0\.conditions\.source_cidrs\.0: bad CIDR 10\.0\.0\.0\/33/,
    ],
    ["CIDR that is not an address", [allow("r", { conditions: { source_cidrs: ["ten/8"] } })], /bad CIDR ten\/8/],
    [
      "glob with a partial wildcard",
      [allow("r", { match: [{ glob: "spiffe://td/web-*" }] })],
      /^policies\.p\.rules\.0\.match\.0: bad glob .*no partial wildcards/,
    ],
    ["glob with ** in the middle", [allow("r", { match: [{ glob: "spiffe://td/**/x" }] })], /'\*\*' may only be the last segment/],
    ["invalid SPIFFE ID", [allow("r", { match: [{ id: "spiffe://TD/x" }] })], /trust domain characters .*rule trust_domain_chars/],
    [
      "duplicate rule names",
      [allow("r"), allow("r", { match: [{ id: "spiffe://td/x" }], roles: [], conditions: { alpn: ["h2"] } })],
      /^policies\.p\.rules\.1\.name: duplicate rule name r/,
    ],
    ["unknown attestor", [allow("r", { attestation: { attestor: "tpm" } })], /unknown attestor tpm; defined: node/],
    ["unknown listener", [allow("r", { conditions: { listeners: ["ghost"] } })], /unknown listener ghost; defined: web, admin/],
    ["unknown time zone", [allow("r", { conditions: { time: [{ zone: "Mars/Olympus", from: "09:00", to: "10:00" }] } })], /unknown time zone Mars\/Olympus/],
    [
      "unreachable allow rule",
      [allow("broad"), allow("narrow", { match: [{ path_prefix: "spiffe://td/ns" }] })],
      /^policies\.p\.rules\.1: rule narrow is unreachable: rule broad always applies first/,
    ],
    ["allow rule behind an unconditional deny", [{ name: "deny-all", action: "deny" }, allow("dead")], /rule dead is unreachable: rule deny-all/],
    [
      "allow rule behind a deny rule written after it",
      [allow("dead", { match: [{ id: "spiffe://td/x" }] }), { name: "deny-td", action: "deny", match: [{ trust_domain: "td" }] }],
      /rule dead is unreachable: rule deny-td/,
    ],
    [
      "allow rule whose identities two earlier rules share between them",
      [
        allow("a", { match: [{ path_prefix: "spiffe://td/a" }] }),
        allow("b", { match: [{ glob: "spiffe://td/b/*" }] }),
        allow("dead", { match: [{ id: "spiffe://td/a/1" }, { id: "spiffe://td/b/2" }] }),
      ],
      /rule dead is unreachable: rule a/,
    ],
  ])("%s", (_n, rules, want) => {
    const errors = bad(rules);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]).toMatch(want);
  });

  it("a rule behind a conditional rule is reachable", () => {
    expect(bad([allow("broad", { conditions: { alpn: ["h2"] } }), allow("narrow", { match: [{ path_prefix: "spiffe://td/ns" }] })])).toEqual([]);
  });

  it("a rule only partly covered by earlier rules is reachable", () => {
    expect(
      bad([allow("a", { match: [{ path_prefix: "spiffe://td/a" }] }), allow("wider", { match: [{ id: "spiffe://td/a/1" }, { id: "spiffe://td/c/1" }] })]),
    ).toEqual([]);
  });
});
