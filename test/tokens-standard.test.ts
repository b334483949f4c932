// Standard tokens at negotiation (ALPN parley/1, real TLS, a real sidecar): OAuth Transaction Tokens as
// task approvals, RFC 8693 `act` delegation chains, IETF RATS EAR attestation results. Every token is
// minted here with jose; each broken claim has its forgery, refused with its own rule or reason.
import { createHash, generateKeyPairSync, randomUUID, X509Certificate } from "node:crypto";
import { exportJWK, generateKeyPair, importSPKI, jwtVerify, SignJWT, UnsecuredJWT, type JWK } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { connect, DeniedError } from "../src/negotiation/client.js";
import { actorChain, MAX_ACT_DEPTH } from "../src/negotiation/delegation.js";
import { EAR_PROFILE } from "../src/negotiation/ear.js";
import { TokenError } from "../src/negotiation/tokenerror.js";
import { judgeEar, worst, type EarResult } from "../src/policy/ear.js";
import { loadConfig } from "../src/config/load.js";
import { ConfigError } from "../src/config/source.js";
import { configYaml, readAll, startHarness, waitFor, writeFiles, type Harness, type LogRecord } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;
let pki: TestPki;
let agent: Issued;
let other: Issued;
/** Holds the observer role, whose rule allows warning; `agent` holds deployer, whose rule does not. */
let watcher: Issued;
let h: Harness;
let grantPublicPem: string;
let tts: KeyPair;
let verifier: KeyPair;
let approver: KeyPair;
let impostor: KeyPair;
const OWN = "spiffe://a.test/sidecar";
const AGENT = "spiffe://a.test/agent";
const WATCHER = "spiffe://a.test/watcher";
const GATEWAY = "spiffe://a.test/gateway/edge";
const TTS_ISS = "https://a.test/txn-token-service";
const REVOKED_TXN = "txn-revoked-7c1f";

const now = () => Math.floor(Date.now() / 1000);
const thumbprint = (i: Issued) => createHash("sha256").update(new X509Certificate(i.certPem).raw).digest("base64url");

/** Claims `over` replaces (undefined removes one), signed with `key` under header `header`. */
function sign(base: Record<string, unknown>, over: Record<string, unknown>, key: CryptoKey | import("node:crypto").KeyObject, header: Record<string, unknown>) {
  const claims = Object.fromEntries(Object.entries({ ...base, ...over }).filter(([, v]) => v !== undefined));
  return new SignJWT(claims).setProtectedHeader({ alg: "ES256", ...header }).sign(key);
}

/** A well-formed Transaction Token (draft-ietf-oauth-transaction-tokens-10 §9) for trust domain a.test. */
function txnToken(over: Record<string, unknown> = {}, key = tts.privateKey, header: Record<string, unknown> = {}) {
  const base = {
    iss: TTS_ISS,
    iat: now(),
    aud: "a.test",
    exp: now() + 300,
    txn: randomUUID(),
    sub: "user:alice",
    scope: "trader audit",
    req_wl: GATEWAY,
    tctx: { action: "BUY", ticker: "MSFT", customer_type: { geo: "US", level: "VIP" } },
    rctx: { req_ip: "69.151.72.123", authn: "face" },
  };
  return sign(base, over, key, { kid: "tts-1", typ: "txntoken+jwt", ...header });
}

/** A parley approval token (docs/negotiation.md), here with whatever `act` a test gives it. */
function approval(over: Record<string, unknown> = {}, key = approver.privateKey) {
  return sign({ iss: "tickets", sub: AGENT, aud: OWN, exp: now() + 300, scope: "support" }, over, key, { kid: "tickets-1" });
}

/** A well-formed EAR (draft-ietf-rats-ear-04, JWT) bound to `agent`'s certificate, with submodule `cpu`. */
function ear(over: Record<string, unknown> = {}, cpu: Record<string, unknown> = {}, key = verifier.privateKey, bound = agent) {
  const base = {
    eat_profile: EAR_PROFILE,
    iat: now(),
    exp: now() + 300,
    ear_verifier_id: { developer: "https://veraison-project.org", build: "vts 0.0.1" },
    submods: {
      cpu: {
        ear_status: "affirming",
        ear_trustworthiness_vector: { "instance-identity": 2, executables: 2, hardware: 2 },
        ear_appraisal_policy_ids: ["policy:1"],
        ...cpu,
      },
    },
    cnf: { "x5t#S256": thumbprint(bound) },
  };
  return sign(base, over, key, { kid: "vts-1" });
}

beforeAll(async () => {
  pki = await makePki();
  agent = await pki.leaf(pki.a, AGENT);
  other = await pki.leaf(pki.a, "spiffe://a.test/other");
  watcher = await pki.leaf(pki.a, WATCHER);
  [tts, verifier, approver, impostor] = await Promise.all([
    generateKeyPair("ES256"),
    generateKeyPair("ES256"),
    generateKeyPair("ES256"),
    generateKeyPair("ES256"),
  ]);
  const grantKey = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  grantPublicPem = grantKey.publicKey.export({ type: "spki", format: "pem" }) as string;
  const files = writeFiles({ "grant.pem": grantKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string });
  const jwks = async (k: CryptoKey | import("node:crypto").KeyObject, kid: string) =>
    JSON.stringify({ keys: [{ ...(await exportJWK(k)), kid, use: "sig" } satisfies JWK] });
  const policies = `
  main:
    rules:
      - name: trade
        action: allow
        match: [{ trust_domain: a.test }]
        roles: [trader]
        conditions: { tctx: { action: BUY, customer_type.geo: [US, CA] }, rctx: { authn: face } }
      - name: on-behalf
        action: allow
        match: [{ trust_domain: a.test }]
        roles: [support]
        conditions: { acting_for: [alice], actors: [{ path_prefix: spiffe://a.test/gateway }] }
        max_delegation_depth: 2
      - name: deploy
        action: allow
        match: [{ trust_domain: a.test }]
        roles: [deployer]
        attestation: { attestor: veraison, ear: { submods: [cpu] }, claims: { submods.cpu.ear_trustworthiness_vector.executables: 2 } }
      - name: observe
        action: allow
        match: [{ id: ${WATCHER} }]
        roles: [observer]
        attestation: { attestor: veraison, ear: { allow_warning: true, appraisal_policy_ids: ["policy:1"] } }
roles:
  trader: [{ id: spiffe://a.test/nobody }]
  audit: [{ id: spiffe://a.test/nobody }]
  support: [{ id: spiffe://a.test/nobody }]
  deployer: [{ id: ${AGENT} }]
  observer: [{ id: ${WATCHER} }]
token_services:
  tts: { issuer: "${TTS_ISS}", jwks: ${await jwks(tts.publicKey, "tts-1")} }
verifiers:
  veraison: { jwks: ${await jwks(verifier.publicKey, "vts-1")} }
approvers:
  tickets: { jwks: ${await jwks(approver.publicKey, "tickets-1")} }
revocations:
  task-over: { reason: "the task is over", until: "${new Date(Date.now() + 3_600_000).toISOString()}", match: [{ txn: ${REVOKED_TXN} }] }
negotiation: { grant_key: ${files["grant.pem"]}, grant_ttl: 1h, frame_timeout: 1s }`;
  h = await startHarness(pki, { policies });
});
afterAll(() => h.close());

const opts = (creds: Issued = agent) => ({ host: "127.0.0.1", port: h.port, cert: creds.chainPem, key: creds.keyPem, ca: pki.a.certPem });
type Extra = { roles?: string[]; approvalToken?: string; attestationToken?: string };

/** The first decision record logged from `mark` on. */
const decisionAfter = (mark: number): Promise<LogRecord> =>
  waitFor(() => h.logs.records.slice(mark).find((r) => r.event === "decision"), 5000, "a decision record");

/** Connects with `extra`, expects a grant, proves the session carries bytes; returns the grant and its decision record. */
async function granted(extra: Extra, creds = agent) {
  const mark = h.logs.records.length;
  const { socket, grant } = await connect({ ...opts(creds), ...extra });
  const echoed = readAll(socket);
  socket.end("payload");
  expect((await echoed).toString()).toBe("payload");
  return { grant, decision: await decisionAfter(mark) };
}

/** Connects with `extra`, expects a denial (`code`), no connection to the workload; returns the denial and its decision record. */
async function refused(extra: Extra, code: "token_invalid" | "denied", creds = agent) {
  const before = h.echo.accepted();
  const mark = h.logs.records.length;
  const e = await connect({ ...opts(creds), ...extra }).then(
    ({ socket }) => (socket.destroy(), undefined),
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(DeniedError);
  expect((e as DeniedError).denial).toBe(code);
  expect(h.echo.accepted()).toBe(before);
  return { denial: e as DeniedError, decision: await decisionAfter(mark) };
}

describe("OAuth Transaction Tokens as task approvals", () => {
  it("a well-formed Txn-Token grants the roles requested within its scope; txn and exp reach the grant and the log", async () => {
    const exp = now() + 120;
    const txn = randomUUID();
    const { grant, decision } = await granted({ roles: ["trader"], approvalToken: await txnToken({ exp, txn }) });
    expect(grant.roles).toEqual(["trader"]);
    expect(Date.parse(grant.expires_at)).toBe(exp * 1000); // its exp caps the grant (TTL 1 h, certificate 1 day)
    const { payload } = await jwtVerify(grant.grant, await importSPKI(grantPublicPem, "ES256"), { issuer: OWN, audience: AGENT });
    expect(payload.txn).toBe(txn);
    expect(decision).toMatchObject({
      decision: "allow",
      rule: "trade",
      negotiation: { approver: "tts", granted_roles: ["trader"], approval: { kind: "txn_token", txn, subject: "user:alice", actors: [], requester: GATEWAY } },
    });
  });

  it("a Txn-Token without iss (optional in §9.2) verifies with the configured token service's keys", async () => {
    const { grant } = await granted({ roles: ["trader"], approvalToken: await txnToken({ iss: undefined }) });
    expect(grant.roles).toEqual(["trader"]);
  });

  it("policy reads tctx: a SELL transaction does not satisfy the BUY rule", async () => {
    const token = await txnToken({ tctx: { action: "SELL", customer_type: { geo: "US" } } });
    const { denial, decision } = await refused({ roles: ["trader"], approvalToken: token }, "denied");
    expect(denial.reasons).toContain("condition_failed:tctx");
    expect(decision).toMatchObject({ decision: "deny", negotiation: { approval: { kind: "txn_token" } } });
  });

  it("policy reads rctx: an approval authenticated otherwise does not satisfy the rule", async () => {
    const { denial } = await refused({ roles: ["trader"], approvalToken: await txnToken({ rctx: { authn: "pwd" } }) }, "denied");
    expect(denial.reasons).toContain("condition_failed:rctx");
  });

  it("a revoked task (revocation by txn) refuses the Txn-Token that names it", async () => {
    const { denial, decision } = await refused({ roles: ["trader"], approvalToken: await txnToken({ txn: REVOKED_TXN }) }, "denied");
    expect(denial.reasons).toEqual(["task_revoked"]);
    expect(decision).toMatchObject({ decision: "deny", reasons: ["task_revoked"] });
  });

  const hs256 = () =>
    new SignJWT({ aud: "a.test", txn: "t", sub: "s", scope: "trader", req_wl: GATEWAY, iss: TTS_ISS })
      .setProtectedHeader({ alg: "HS256", typ: "txntoken+jwt" })
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(new Uint8Array(32));
  const none = () =>
    new UnsecuredJWT({ aud: "a.test", txn: "t", sub: "s", scope: "trader", req_wl: GATEWAY, iss: TTS_ISS }).setIssuedAt().setExpirationTime("5m").encode();

  it.each<[string, () => Promise<string> | string, string, string[]?]>([
    ["signed by another key", () => txnToken({}, impostor.privateKey), "bad_signature"],
    ["alg none", none, "alg_not_allowed"],
    ["alg HS256", hs256, "alg_not_allowed"],
    ["typ JWT instead of txntoken+jwt", () => txnToken({}, tts.privateKey, { typ: "JWT" }), "typ_mismatch"],
    ["aud the trust domain as a SPIFFE ID (only the bare name is accepted)", () => txnToken({ aud: "spiffe://a.test" }), "claim_aud"],
    ["aud another trust domain", () => txnToken({ aud: "b.test" }), "claim_aud"],
    ["expired", () => txnToken({ exp: now() - 120 }), "expired"],
    ["nbf in the future", () => txnToken({ nbf: now() + 600 }), "claim_nbf"],
    ["no txn", () => txnToken({ txn: undefined }), "claim_txn"],
    ["an empty txn", () => txnToken({ txn: "" }), "claim_txn"],
    ["no sub", () => txnToken({ sub: undefined }), "claim_sub"],
    ["no scope", () => txnToken({ scope: undefined }), "claim_scope"],
    ["no req_wl", () => txnToken({ req_wl: undefined }), "claim_req_wl"],
    ["no iat", () => txnToken({ iat: undefined }), "claim_iat"],
    ["tctx not an object", () => txnToken({ tctx: "BUY" }), "claim_tctx"],
    ["an iss no token service signs with", () => txnToken({ iss: "https://rogue.test/tts" }), "unknown_issuer"],
    ["a scope narrower than the roles requested", () => txnToken({ scope: "audit" }), "txn_scope_exceeded", ["trader"]],
  ])("a Txn-Token with %s is refused", async (_n, make, rule, roles = ["trader"]) => {
    const { decision } = await refused({ roles, approvalToken: await make() }, "token_invalid");
    expect(decision).toMatchObject({ decision: "deny", reasons: ["negotiation_failed"], negotiation_rule: rule });
  });

  it("parley's own approval format keeps working beside Txn-Tokens", async () => {
    const { grant, decision } = await granted({
      roles: ["support"],
      approvalToken: await approval({ sub: "alice", act: { sub: AGENT, act: { sub: GATEWAY } } }),
    });
    expect(grant.roles).toEqual(["support"]);
    expect(decision).toMatchObject({ rule: "on-behalf", negotiation: { approver: "tickets", approval: { kind: "parley", subject: "alice" } } });
    const { decision: d2 } = await refused({ roles: ["support", "trader"], approvalToken: await approval() }, "token_invalid");
    expect(d2.negotiation_rule).toBe("scope_not_approved");
  });
});

describe("delegation chains (RFC 8693 act)", () => {
  it("an approval acting for alice, current actor the peer, prior actor the gateway: admitted, the chain logged", async () => {
    const { decision } = await granted({ roles: ["support"], approvalToken: await approval({ sub: "alice", act: { sub: AGENT, act: { sub: GATEWAY } } }) });
    expect(decision).toMatchObject({ rule: "on-behalf", negotiation: { approval: { subject: "alice", actors: [AGENT, GATEWAY] } } });
  });

  it("a Txn-Token's act chain must end at the peer too, and is logged", async () => {
    const token = await txnToken({ act: { sub: AGENT, act: { sub: GATEWAY } } });
    const { decision } = await granted({ roles: ["trader"], approvalToken: token });
    expect(decision).toMatchObject({ negotiation: { approval: { kind: "txn_token", actors: [AGENT, GATEWAY] } } });
    const { decision: d2 } = await refused({ roles: ["trader"], approvalToken: await txnToken({ act: { sub: GATEWAY } }) }, "token_invalid");
    expect(d2.negotiation_rule).toBe("actor_mismatch");
  });

  it.each<[string, Record<string, unknown>, string]>([
    ["whose current actor is another workload", { sub: "alice", act: { sub: "spiffe://a.test/other", act: { sub: GATEWAY } } }, "actor_mismatch"],
    ["whose act is not an object", { sub: "alice", act: "spiffe://a.test/agent" }, "claim_act"],
    ["whose act has no sub", { sub: "alice", act: { iss: "x" } }, "claim_act"],
    ["whose sub is someone else and carries no act", { sub: "alice" }, "claim_sub"],
  ])("an approval %s is refused", async (_n, over, rule) => {
    const { decision } = await refused({ roles: ["support"], approvalToken: await approval(over) }, "token_invalid");
    expect(decision.negotiation_rule).toBe(rule);
  });

  it("nesting deeper than parley parses is refused, not truncated (act_too_deep)", async () => {
    let act: Record<string, unknown> = { sub: GATEWAY };
    for (let i = 0; i < MAX_ACT_DEPTH; i++) act = { sub: i === MAX_ACT_DEPTH - 1 ? AGENT : `${GATEWAY}/${i}`, act };
    const { decision } = await refused({ roles: ["support"], approvalToken: await approval({ sub: "alice", act }) }, "token_invalid");
    expect(decision.negotiation_rule).toBe("act_too_deep");
  });

  it("a chain longer than the rule's max_delegation_depth is denied delegation_too_deep", async () => {
    const act = { sub: AGENT, act: { sub: `${GATEWAY}/2`, act: { sub: GATEWAY } } };
    const { denial, decision } = await refused({ roles: ["support"], approvalToken: await approval({ sub: "alice", act }) }, "denied");
    expect(denial.reasons).toContain("delegation_too_deep");
    expect(decision.reasons).toContain("delegation_too_deep");
  });

  it("policy matches on the subject acted for and on the actors", async () => {
    const bob = await refused({ roles: ["support"], approvalToken: await approval({ sub: "bob", act: { sub: AGENT, act: { sub: GATEWAY } } }) }, "denied");
    expect(bob.denial.reasons).toContain("condition_failed:acting_for");
    const direct = await refused({ roles: ["support"], approvalToken: await approval({ sub: "alice", act: { sub: AGENT } }) }, "denied");
    expect(direct.denial.reasons).toContain("condition_failed:actors");
  });
});

describe("EAR attestation results", () => {
  it("an affirming result bound to the peer's certificate is evidence; the session ends at its exp", async () => {
    const exp = now() + 3;
    const mark = h.logs.records.length;
    const { socket, grant } = await connect({ ...opts(), roles: ["deployer"], attestationToken: await ear({ exp }) });
    expect(grant.roles).toEqual(["deployer"]);
    expect(Date.parse(grant.expires_at)).toBe(exp * 1000);
    const decision = await decisionAfter(mark);
    expect(decision).toMatchObject({ rule: "deploy", negotiation: { attestation_results: { veraison: "affirming" } } });
    const end = await h.logs.next("session_end", (r) => r.session_id === decision.session_id, 8000);
    expect(end.end_reason).toMatch(/^(attestation|grant)_expired$/);
    socket.destroy();
  });

  it("an EAR naming its verifier in iss verifies too", async () => {
    const { decision } = await granted({ roles: ["deployer"], attestationToken: await ear({ iss: "veraison" }) });
    expect(decision.rule).toBe("deploy");
  });

  it.each<[string, Record<string, unknown>, string]>([
    ["contraindicated", { ear_status: "contraindicated" }, "attestation_contraindicated"],
    ["none", { ear_status: "none" }, "attestation_unappraised"],
    ["warning (the deploy rule allows only affirming)", { ear_status: "warning" }, "attestation_warning"],
  ])("a cpu submodule %s is denied with its own reason", async (_n, cpu, reason) => {
    const { denial } = await refused({ roles: ["deployer"], attestationToken: await ear({}, cpu) }, "denied");
    expect(denial.reasons).toContain(reason);
  });

  it("an absent required submodule is unappraised", async () => {
    const token = await ear({ submods: { gpu: { ear_status: "affirming" } } });
    const { denial } = await refused({ roles: ["deployer"], attestationToken: token }, "denied");
    expect(denial.reasons).toContain("attestation_unappraised");
  });

  it("the trustworthiness vector is readable by policy: executables 96 fails the claim", async () => {
    const token = await ear({}, { ear_trustworthiness_vector: { executables: 96 } });
    const { denial } = await refused({ roles: ["deployer"], attestationToken: token }, "denied");
    expect(denial.reasons).toContain("attestation_claim_mismatch");
  });

  it("warning is admitted where a rule allows it, and the appraisal policy id is checked", async () => {
    const warning = await ear({}, { ear_status: "warning" }, verifier.privateKey, watcher);
    const { decision } = await granted({ roles: ["observer"], attestationToken: warning }, watcher);
    expect(decision).toMatchObject({ rule: "observe", negotiation: { attestation_results: { veraison: "warning" } } });
    const unlisted = await ear({}, { ear_appraisal_policy_ids: ["policy:9"] }, verifier.privateKey, watcher);
    const { denial } = await refused({ roles: ["observer"], attestationToken: unlisted }, "denied", watcher);
    expect(denial.reasons).toContain("attestation_claim_mismatch");
  });

  it("the overall status is the worst of the top-level ear_status and every submodule's", async () => {
    const submods = {
      cpu: { ear_status: "affirming", ear_appraisal_policy_ids: ["policy:1"] },
      gpu: { ear_status: "contraindicated", ear_appraisal_policy_ids: ["policy:1"] },
    };
    const token = await ear({ ear_status: "affirming", submods }, {}, verifier.privateKey, watcher);
    const { denial } = await refused({ roles: ["observer"], attestationToken: token }, "denied", watcher);
    expect(denial.reasons).toContain("attestation_contraindicated");
    // A top-level status worse than every submodule's counts too.
    const top = await ear({ ear_status: "none" }, {}, verifier.privateKey, watcher);
    const { denial: d2 } = await refused({ roles: ["observer"], attestationToken: top }, "denied", watcher);
    expect(d2.reasons).toContain("attestation_unappraised");
  });

  it.each<[string, () => Promise<string> | string, string, Issued?]>([
    ["signed by another key", () => ear({}, {}, impostor.privateKey), "bad_signature"],
    ["alg none", () => new UnsecuredJWT({ eat_profile: EAR_PROFILE }).setIssuedAt().setExpirationTime("5m").encode(), "alg_not_allowed"],
    ["no cnf", () => ear({ cnf: undefined }), "claim_cnf"],
    ["cnf without x5t#S256", () => ear({ cnf: { jkt: "abc" } }), "unbound"],
    ["cnf naming another certificate", () => ear({ cnf: { "x5t#S256": thumbprint(other) } }), "wrongly_bound"],
    ["another revision's eat_profile", () => ear({ eat_profile: "tag:github.com,2023:veraison/ear" }), "claim_eat_profile"],
    ["no submods", () => ear({ submods: undefined }), "claim_submods"],
    ["empty submods", () => ear({ submods: {} }), "claim_submods"],
    ["a status outside the four tiers", () => ear({}, { ear_status: "fine" }), "claim_submods"],
    ["a top-level status outside the four tiers", () => ear({ ear_status: 2 }), "claim_ear_status"],
    ["no ear_verifier_id", () => ear({ ear_verifier_id: undefined }), "claim_ear_verifier_id"],
    ["expired", () => ear({ exp: now() - 120 }), "expired"],
    ["no exp", () => ear({ exp: undefined }), "claim_exp"],
    ["a floating-point iat", () => ear({ iat: now() + 0.5 }), "claim_iat"],
    ["nbf in the future", () => ear({ nbf: now() + 600 }), "claim_nbf"],
    ["an aud that is not this sidecar", () => ear({ aud: "spiffe://a.test/elsewhere" }), "claim_aud"],
    ["an iss no verifier signs with", () => ear({ iss: "rogue" }), "unknown_issuer"],
  ])("an EAR with %s is refused", async (_n, make, rule) => {
    const { decision } = await refused({ roles: ["deployer"], attestationToken: await make() }, "token_invalid");
    expect(decision.negotiation_rule).toBe(rule);
  });

  it("an EAR replayed over another certificate is refused (wrongly_bound)", async () => {
    const { decision } = await refused({ roles: [], attestationToken: await ear() }, "token_invalid", other);
    expect(decision.negotiation_rule).toBe("wrongly_bound");
  });
});

describe("pure checks", () => {
  it("actorChain reads current first, bounds depth, refuses non-objects", () => {
    expect(actorChain(undefined)).toEqual([]);
    expect(actorChain({ sub: "a", act: { sub: "b", act: { sub: "c", exp: 1 } } })).toEqual(["a", "b", "c"]);
    let deep: Record<string, unknown> = { sub: "x" };
    for (let i = 1; i < MAX_ACT_DEPTH; i++) deep = { sub: "x", act: deep };
    expect(actorChain(deep)).toHaveLength(MAX_ACT_DEPTH);
    const rule = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as TokenError).rule;
      }
      return "accepted";
    };
    expect(rule(() => actorChain({ sub: "x", act: deep }))).toBe("act_too_deep");
    expect(rule(() => actorChain([{ sub: "x" }]))).toBe("claim_act");
    expect(rule(() => actorChain({ sub: "x".repeat(2049) }))).toBe("claim_act");
  });

  it("worst orders contraindicated, none, warning, affirming; judgeEar names the worst failure", () => {
    expect(worst(["affirming", "warning"])).toBe("warning");
    expect(worst(["warning", "none"])).toBe("none");
    expect(worst(["none", "contraindicated", "affirming"])).toBe("contraindicated");
    const result: EarResult = {
      overall: "contraindicated",
      submods: new Map([
        ["a", { status: "warning", policyIds: ["p"] }],
        ["b", { status: "contraindicated", policyIds: ["p"] }],
      ]),
    };
    expect(judgeEar({ allowWarning: false, submods: ["a", "b"] }, result, "v")?.reason).toBe("attestation_contraindicated");
    expect(judgeEar({ allowWarning: false, submods: ["a"] }, result, "v")?.reason).toBe("attestation_warning");
    expect(judgeEar({ allowWarning: true, submods: ["a"] }, result, "v")).toBeUndefined();
    expect(judgeEar({ allowWarning: true, submods: ["a"], appraisalPolicyIds: ["q"] }, result, "v")?.reason).toBe("attestation_claim_mismatch");
    expect(judgeEar({ allowWarning: true }, undefined, "v")?.reason).toBe("attestation_unappraised");
  });
});

describe("configuration", () => {
  const jwks = `{ keys: [{ kty: EC, crv: P-256, x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", kid: k }] }`;
  /** The configuration issues of a sidecar file with `policies` and `extra` (token issuers and such). */
  function issuesOf(policies: string, extra: string): string[] {
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
    const yaml = configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, 9, { policies, extra });
    try {
      loadConfig(writeFiles({ "c.yaml": yaml })["c.yaml"]!);
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
    }
    return [];
  }
  const rule = (body: string) => `
  main:
    rules:
      - { name: r, action: allow, match: [{ trust_domain: a.test }], ${body} }
`;
  const grantKey = () =>
    writeFiles({ "g.pem": generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ type: "pkcs8", format: "pem" }) as string })["g.pem"]!;

  it("accepts token services, verifiers and every rule option that reads them", () => {
    const extra = `token_services: { tts: { issuer: "https://a.test/tts", jwks: ${jwks} } }\nverifiers: { vts: { jwks: ${jwks} } }\n`;
    const body =
      "attestation: { attestor: vts, ear: { submods: [cpu], allow_warning: true } }, conditions: { acting_for: [alice], actors: [{ trust_domain: a.test }], tctx: { action: BUY }, rctx: { authn: [face, otp] } }, max_delegation_depth: 3";
    expect(issuesOf(rule(body), extra)).toEqual([]);
  });

  it.each<[string, string, string, RegExp]>([
    [
      "an ear requirement on an attestor that is no verifier",
      "attestation: { attestor: node, ear: {} }",
      `attestors: { node: { jwks: ${jwks} } }\n`,
      /node is not a configured verifier/,
    ],
    ["a max_delegation_depth over what parley parses", "max_delegation_depth: 17", "", /max_delegation_depth/],
    ["a token service without keys", "mode: enforce", "token_services: { tts: { issuer: x } }\n", /token_services\.tts\.jwks/],
    ["an actor matcher that is no SPIFFE matcher", "conditions: { actors: [{ id: not-an-id }] }", "", /actors/],
  ])("refuses %s", (_n, body, extra, want) => {
    expect(issuesOf(rule(body), extra).join("\n")).toMatch(want);
  });

  it("refuses a verifier and an attestor of the same name", () => {
    const extra = `attestors: { node: { jwks: ${jwks} } }\nverifiers: { node: { jwks: ${jwks} } }\nnegotiation: { grant_key: ${grantKey()} }\n`;
    expect(issuesOf(rule("mode: enforce"), extra).join("\n")).toMatch(/node is also an attestor/);
  });
});
