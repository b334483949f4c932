// Revocations from the file configuration: live sessions they name end at once on reload (no grace),
// new ones are denied before the workload sees a byte; entries past their `until` are ignored.
import { createHash, X509Certificate } from "node:crypto";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { configView } from "../src/config/view.js";
import { dialTls, openSession, readAll, startHarness, waitFor, type Harness } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let alice: Issued;
let alice2: Issued; // the same ID, another certificate
let bob: Issued;
let teamX: Issued;
let teammate: Issued;
let h: Harness | undefined;

beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/alice");
  alice2 = await pki.leaf(pki.a, "spiffe://a.test/alice");
  bob = await pki.leaf(pki.a, "spiffe://a.test/bob");
  teamX = await pki.leaf(pki.a, "spiffe://a.test/team/x");
  teammate = await pki.leaf(pki.a, "spiffe://a.test/teammate");
});
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const POLICIES = `
  main:
    default: deny
    rules:
      - name: everyone
        action: allow
        match: [{ trust_domain: a.test }]
`;
/** A long grace: a revocation must not wait for it. */
const GRACE = "revocation_grace: 1h\n";
const revocations = (match: string, until = "2099-01-01T00:00:00Z") =>
  `${GRACE}revocations:\n  incident-7:\n    reason: agent compromised\n    until: ${until}\n    match: [${match}]\n`;
const fingerprint = (i: Issued) => createHash("sha256").update(new X509Certificate(i.certPem).raw).digest("hex");

/** Expects a new session of `creds` to be refused with `reason`, the workload seeing no connection. */
async function expectRefused(creds: Issued, reason: string) {
  const before = h!.echo.accepted();
  const s = await dialTls(h!.port, pki, creds);
  s.write("must not arrive");
  expect((await readAll(s)).length).toBe(0);
  const d = await h!.logs.next("decision", (r) => r.decision === "deny" && (r.reasons as string[]).includes(reason));
  expect(d).toMatchObject({ reasons: [reason], detail: expect.stringContaining("incident-7") as unknown });
  expect(h!.echo.accepted()).toBe(before);
}

/** Reloads with `extra` and waits for the revoked record of `peer`. */
async function reloadRevoking(extra: string, peer: string) {
  h!.rewrite({ policies: POLICIES, extra });
  expect(await h!.sidecar.reload()).toBe("applied");
  return h!.logs.next("revoked", (r) => r.peer_id === peer);
}

describe("revocations in the file configuration", () => {
  it("a revoked SPIFFE ID: its live session ends at once despite the grace, others go on, a new one is denied", async () => {
    h = await startHarness(pki, { policies: POLICIES, extra: GRACE });
    const a = await openSession(h.port, pki, alice);
    const b = await openSession(h.port, pki, bob);
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
    await expectRefused(alice, "identity_revoked");
    expect(h.logs.of("revoked").filter((r) => r.peer_id === "spiffe://a.test/bob")).toEqual([]);
    const view = configView(h.sidecar.config, h.sidecar.identityStatus());
    expect(view.revocations).toEqual({
      "incident-7": { reason: "agent compromised", until: "2099-01-01T00:00:00.000Z", match: ["id spiffe://a.test/alice"] },
    });
    b.s.end();
    await b.closed;
  });

  it("a path prefix revokes the IDs below it on segment boundaries only", async () => {
    h = await startHarness(pki, { policies: POLICIES, extra: GRACE });
    const x = await openSession(h.port, pki, teamX);
    const mate = await openSession(h.port, pki, teammate);
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
    h = await startHarness(pki, { policies: POLICIES, extra: GRACE });
    const one = await openSession(h.port, pki, alice);
    const two = await openSession(h.port, pki, alice2);
    const revoked = await reloadRevoking(revocations(`{ cert_fingerprint: ${fingerprint(alice).toUpperCase()} }`), "spiffe://a.test/alice");
    expect(revoked).toMatchObject({ reasons: ["certificate_revoked"], revocation: { match: `cert_fingerprint ${fingerprint(alice)}` } });
    await one.closed;
    two.s.write("-on");
    await waitFor(() => two.got() === "ping-on", 3000, "the other certificate still served");
    expect(h.logs.of("revoked")).toHaveLength(1);
    await expectRefused(alice, "certificate_revoked");
    two.s.end();
    await two.closed;
  });

  it("an entry whose until has passed is ignored and not kept", async () => {
    h = await startHarness(pki, { policies: POLICIES, extra: GRACE });
    const a = await openSession(h.port, pki, alice);
    h.rewrite({ policies: POLICIES, extra: revocations("{ id: spiffe://a.test/alice }", "2020-01-01T00:00:00Z") });
    expect(await h.sidecar.reload()).toBe("applied");
    a.s.write("-on");
    await waitFor(() => a.got() === "ping-on", 3000, "alice still served");
    expect(h.logs.of("revoked")).toEqual([]);
    const again = await openSession(h.port, pki, alice);
    expect(configView(h.sidecar.config, h.sidecar.identityStatus()).revocations).toEqual({});
    for (const s of [a, again]) {
      s.s.end();
      await s.closed;
    }
  });

  it("refuses a matcher with two keys, a bad fingerprint and a bad ID, naming each", async () => {
    h = await startHarness(pki, { policies: POLICIES });
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
