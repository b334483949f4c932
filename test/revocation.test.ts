// Revocations from the file configuration: live sessions they name end at once on reload (no grace),
// new ones are denied before the workload sees a byte; entries past their `until` are ignored.
import { createHash, generateKeyPairSync, X509Certificate } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { configView } from "../src/config/view.js";
import { connect, DeniedError } from "../src/negotiation/client.js";
import { RevocationList } from "../src/policy/revocation.js";
import { SpiffeId } from "../src/spiffe/spiffeid.js";
import { openSession, readAll, startHarness, waitFor, writeFiles, type Harness } from "../testkit/harness.js";
import { ALLOW_A_TEST as POLICIES, fingerprint, revocationFixtures } from "../testkit/revocations.js";

const fx = revocationFixtures();
let alice2: Issued; // the same ID as fx.alice, another certificate
let teamX: Issued;
let teammate: Issued;
let h: Harness | undefined;

beforeAll(async () => {
  alice2 = await fx.pki.leaf(fx.pki.a, "spiffe://a.test/alice");
  teamX = await fx.pki.leaf(fx.pki.a, "spiffe://a.test/team/x");
  teammate = await fx.pki.leaf(fx.pki.a, "spiffe://a.test/teammate");
});
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** A long grace: a revocation must not wait for it. */
const GRACE = "revocation_grace: 1h\n";
const revocations = (match: string, until = "2099-01-01T00:00:00Z") =>
  `${GRACE}revocations:\n  incident-7:\n    reason: agent compromised\n    until: ${until}\n    match: [${match}]\n`;

/** Expects a new session of `creds` to be refused with `reason`, the workload seeing no connection. */
async function expectRefused(creds: Issued, reason: string) {
  const d = await fx.expectRefused(h!, creds, reason);
  expect(d).toMatchObject({ reasons: [reason], detail: expect.stringContaining("incident-7") as unknown });
}

/** Reloads with `extra` and waits for the revoked record of `peer`. */
async function reloadRevoking(extra: string, peer: string) {
  h!.rewrite({ policies: POLICIES, extra });
  expect(await h!.sidecar.reload()).toBe("applied");
  return h!.logs.next("revoked", (r) => r.peer_id === peer);
}

describe("revocations in the file configuration", () => {
  it("a revoked SPIFFE ID: its live session ends at once despite the grace, others go on, a new one is denied", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES, extra: GRACE });
    const a = await openSession(h.port, fx.pki, fx.alice);
    const b = await openSession(h.port, fx.pki, fx.bob);
    const revoked = await reloadRevoking(revocations("{ id: spiffe://a.test/alice }"), "spiffe://a.test/alice");
    expect(revoked).toMatchObject({
      reasons: ["identity_revoked"],
      grace_ms: 0,
      cause: "revoked",
      revocation: { entry: "incident-7", match: "id spiffe://a.test/alice", reason: "agent compromised" },
    });
    await a.closed;
    expect((await h.logs.next("session_end", (r) => r.peer_id === "spiffe://a.test/alice")).end_reason).toBe("revoked");
    b.s.write("-on");
    await waitFor(() => b.got() === "ping-on", 3000, "bob still served");
    await expectRefused(fx.alice, "identity_revoked");
    expect(h.logs.of("revoked").filter((r) => r.peer_id === "spiffe://a.test/bob")).toEqual([]);
    const view = configView(h.sidecar.config, h.sidecar.identityStatus());
    expect(view.revocations).toEqual({
      "incident-7": { reason: "agent compromised", until: "2099-01-01T00:00:00.000Z", match: ["id spiffe://a.test/alice"] },
    });
    b.s.end();
    await b.closed;
  });

  it("a path prefix revokes the IDs below it on segment boundaries only", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES, extra: GRACE });
    const x = await openSession(h.port, fx.pki, teamX);
    const mate = await openSession(h.port, fx.pki, teammate);
    const revoked = await reloadRevoking(revocations("{ path_prefix: spiffe://a.test/team }"), "spiffe://a.test/team/x");
    expect(revoked).toMatchObject({ reasons: ["identity_revoked"], revocation: { match: "path_prefix spiffe://a.test/team" } });
    await x.closed;
    mate.s.write("-on");
    await waitFor(() => mate.got() === "ping-on", 3000, "teammate still served");
    await expectRefused(teamX, "identity_revoked");
    mate.s.end();
    await mate.closed;
  });

  it("a certificate fingerprint revokes that certificate, not another one of the same ID", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES, extra: GRACE });
    const one = await openSession(h.port, fx.pki, fx.alice);
    const two = await openSession(h.port, fx.pki, alice2);
    const revoked = await reloadRevoking(revocations(`{ cert_fingerprint: ${fingerprint(fx.alice).toUpperCase()} }`), "spiffe://a.test/alice");
    expect(revoked).toMatchObject({ reasons: ["certificate_revoked"], revocation: { match: `cert_fingerprint ${fingerprint(fx.alice)}` } });
    await one.closed;
    two.s.write("-on");
    await waitFor(() => two.got() === "ping-on", 3000, "the other certificate still served");
    expect(h.logs.of("revoked")).toHaveLength(1);
    await expectRefused(fx.alice, "certificate_revoked");
    two.s.end();
    await two.closed;
  });

  it("an entry whose until has passed is ignored and not kept", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES, extra: GRACE });
    const a = await openSession(h.port, fx.pki, fx.alice);
    h.rewrite({ policies: POLICIES, extra: revocations("{ id: spiffe://a.test/alice }", "2020-01-01T00:00:00Z") });
    expect(await h.sidecar.reload()).toBe("applied");
    a.s.write("-on");
    await waitFor(() => a.got() === "ping-on", 3000, "alice still served");
    expect(h.logs.of("revoked")).toEqual([]);
    const again = await openSession(h.port, fx.pki, fx.alice);
    expect(configView(h.sidecar.config, h.sidecar.identityStatus()).revocations).toEqual({});
    for (const s of [a, again]) {
      s.s.end();
      await s.closed;
    }
  });

  it("refuses a matcher with two keys, a bad fingerprint and a bad ID, naming each", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES });
    h.rewrite({ policies: POLICIES, extra: revocations("{ txn: t, jti: j }, { cert_fingerprint: abc }, { id: not-an-id }") });
    expect(await h.sidecar.reload()).toBe("rejected");
    const errors = (await h.logs.next("config_rejected")).errors as string[];
    expect(errors.join("\n")).toMatch(/revocations\.incident-7\.match\[0\]: .*exactly one of txn, jti/);
    expect(errors.join("\n")).toMatch(/revocations\.incident-7\.match\[1\]\.cert_fingerprint: .*64 hex digits/);
    h.rewrite({ policies: POLICIES, extra: revocations("{ id: spiffe://a.test/ok }, { path_prefix: not-an-id }") });
    expect(await h.sidecar.reload()).toBe("rejected");
    const second = await h.logs.next("config_rejected", (r) => (r.errors as string[]).some((e) => e.includes("].path_prefix:")));
    expect(second.errors).toEqual([expect.stringMatching(/revocations\.incident-7\.match\[1\]\.path_prefix: .*scheme/) as unknown]);
  });
});

describe("revocations of negotiated sessions", () => {
  const OWN = "spiffe://a.test/sidecar";
  const AGENT = "spiffe://a.test/agent";
  let approver: Awaited<ReturnType<typeof generateKeyPair>>;
  let attestor: Awaited<ReturnType<typeof generateKeyPair>>;
  let agent: Issued;
  let base: string;

  beforeAll(async () => {
    agent = await fx.pki.leaf(fx.pki.a, AGENT);
    approver = await generateKeyPair("ES256");
    attestor = await generateKeyPair("ES256");
    const grantKey = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const files = writeFiles({ "grant.pem": grantKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string });
    const jwks = async (k: CryptoKey, kid: string) => JSON.stringify({ keys: [{ ...(await exportJWK(k)), kid, use: "sig" }] });
    base = `
  main:
    rules:
      - name: approved-writer
        action: allow
        match: [{ id: ${AGENT} }]
        roles: [writer]
roles:
  writer: [{ id: spiffe://a.test/nobody }]
attestors:
  node: { jwks: ${await jwks(attestor.publicKey, "node-1")} }
approvers:
  tickets: { jwks: ${await jwks(approver.publicKey, "tickets-1")} }
negotiation: { grant_key: ${files["grant.pem"]}, grant_ttl: 1h }
${GRACE}`;
  });

  const approval = (claims: Record<string, string>) =>
    new SignJWT({ scope: "writer", ...claims })
      .setProtectedHeader({ alg: "ES256", kid: "tickets-1" })
      .setIssuer("tickets")
      .setSubject(AGENT)
      .setAudience(OWN)
      .setExpirationTime("10m")
      .sign(approver.privateKey);
  const attestation = () =>
    new SignJWT({ env: "prod", cnf: { "x5t#S256": createHash("sha256").update(new X509Certificate(agent.certPem).raw).digest("base64url") } })
      .setProtectedHeader({ alg: "ES256", kid: "node-1" })
      .setIssuer("node")
      .setSubject(AGENT)
      .setAudience(OWN)
      .setIssuedAt()
      .setExpirationTime("10m")
      .sign(attestor.privateKey);
  const negotiate = async (claims: Record<string, string>, attested = false) =>
    connect({
      host: "127.0.0.1",
      port: h!.port,
      cert: agent.chainPem,
      key: agent.keyPem,
      ca: fx.pki.a.certPem,
      roles: ["writer"],
      approvalToken: await approval(claims),
      ...(attested ? { attestationToken: await attestation() } : {}),
    });
  const withRevocation = (match: string) =>
    `${base}revocations:\n  task-over:\n    reason: task done\n    until: 2099-01-01T00:00:00Z\n    match: [${match}]\n`;

  it("a revoked identity is refused before its tokens are read: the code, not negotiation_failed", async () => {
    h = await startHarness(fx.pki, { policies: withRevocation(`{ id: ${AGENT} }`) });
    const before = h.echo.accepted();
    const e = await connect({
      host: "127.0.0.1",
      port: h.port,
      cert: agent.chainPem,
      key: agent.keyPem,
      ca: fx.pki.a.certPem,
      roles: ["writer"],
      approvalToken: "not.a.token",
    }).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(DeniedError);
    expect([(e as DeniedError).denial, (e as DeniedError).reasons]).toEqual(["denied", ["identity_revoked"]]);
    expect(await h.logs.next("decision", (r) => r.decision === "deny")).toMatchObject({ reasons: ["identity_revoked"], negotiation_rule: "revoked" });
    expect(h.echo.accepted()).toBe(before);
  });

  it.each<[string, (grantId: string) => string, string, boolean?]>([
    ["its task (txn)", () => "{ txn: task-42 }", "task_revoked"],
    ["its approval token (jti)", () => "{ jti: approval-1 }", "token_revoked"],
    ["its grant id", (g) => `{ grant: "${g}" }`, "grant_revoked"],
    ["the attestor of its evidence", () => "{ attestor: node }", "attestor_revoked", true],
  ])("a live session revoked by %s ends at once, and a new negotiation is decided by it", async (_what, match, code, attested) => {
    h = await startHarness(fx.pki, { policies: base });
    const live = await negotiate({ txn: "task-42", jti: "approval-1" }, attested);
    const other = await negotiate({ txn: "task-43", jti: "approval-2" });
    const closed = readAll(live.socket);
    const untouched = readAll(other.socket);
    // What an operator sees before revoking: each session's grant and task.
    const registry = h.sidecar.registry;
    const listed = await waitFor(() => (registry.all().length === 2 ? registry.all().map((s) => s.info(Date.now())) : undefined));
    expect(listed.map((i) => [i.grant_id, i.txn]).sort()).toEqual(
      [
        [live.grant.grant_id, "task-42"],
        [other.grant.grant_id, "task-43"],
      ].sort(),
    );
    h.rewrite({ policies: withRevocation(match(live.grant.grant_id)) });
    expect(await h.sidecar.reload()).toBe("applied");
    const revoked = await h.logs.next("revoked");
    expect(revoked).toMatchObject({ peer_id: AGENT, reasons: [code], grace_ms: 0, revocation: { entry: "task-over", reason: "task done" } });
    await closed;
    expect((await h.logs.next("session_end", (r) => r.end_reason === "revoked")).session_id).toBe(revoked.session_id);
    // Only the named session ended; the other task's goes on.
    expect(h.logs.of("revoked")).toHaveLength(1);
    const before = h.echo.accepted();
    const again = negotiate({ txn: "task-42", jti: "approval-1" }, attested);
    if (code === "grant_revoked") {
      // A grant id names one session: a new negotiation is a new grant.
      const next = await again;
      expect(next.grant.grant_id).not.toBe(live.grant.grant_id);
      next.socket.destroy();
    } else {
      const e = await again.then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(DeniedError);
      expect((e as DeniedError).reasons).toEqual([code]);
      expect(h.echo.accepted()).toBe(before);
    }
    other.socket.end("still on");
    expect((await untouched).toString()).toBe("still on");
  });
});

describe("the revocation list", () => {
  const T = Date.parse("2026-06-01T00:00:00Z");
  const list = new RevocationList([
    { name: "old", reason: "r1", until: T + 1000, match: [{ kind: "identity", matcher: { kind: "id", id: SpiffeId.parse("spiffe://a.test/x") } }] },
    { name: "task", reason: "r2", until: T + 5000, match: [{ kind: "txn", value: "t-1" }] },
    { name: "grant", reason: "r3", until: T + 5000, match: [{ kind: "grant", value: "g-1" }] },
  ]);
  const x = SpiffeId.parse("spiffe://a.test/x");

  it("ignores an entry from its until on, by the clock it is given, and live() drops it", () => {
    expect(list.match({ peer: x }, T + 999)).toMatchObject({ code: "identity_revoked", entry: "old" });
    expect(list.match({ peer: x }, T + 1000)).toBeUndefined();
    const live = list.live(T + 1000);
    expect(live.entries.map((e) => e.name)).toEqual(["task", "grant"]);
    expect(live.live(T + 1000)).toBe(live);
    expect(list.live(T + 5000).size).toBe(0);
  });

  it("names the most specific matcher when several hold", () => {
    expect(list.match({ peer: x, txn: "t-1", grant: "g-1" }, T)).toMatchObject({ code: "grant_revoked", entry: "grant", match: "grant g-1" });
    expect(list.match({ peer: x, txn: "t-1" }, T)).toMatchObject({ code: "task_revoked", reason: "r2" });
    expect(list.match({ peer: SpiffeId.parse("spiffe://a.test/x/y"), txn: "t-2" }, T)).toBeUndefined();
  });
});
