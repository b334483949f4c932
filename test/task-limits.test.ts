// A task's own bound (limits.per_task): the sessions of one approval's `txn` are capped in number and
// in new sessions a minute, locally and across sidecars (Redis), so one approval cannot be replayed
// into unbounded sessions. Sessions without a txn are not subject to it.
import { generateKeyPairSync } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { connect, DeniedError } from "../src/negotiation/client.js";
import { until } from "../testkit/attempt.js";
import { ManualClock } from "../testkit/clock.js";
import { readAll, waitFor, writeFiles, type Harness } from "../testkit/harness.js";
import { sharedLimitsRig } from "../testkit/shared-rig.js";

const OWN = "spiffe://a.test/sidecar";
const AGENT = "spiffe://a.test/agent";
const rig = sharedLimitsRig();
const { sockets } = rig;
let agent: Issued;
let approver: Awaited<ReturnType<typeof generateKeyPair>>;
let common: string;

beforeAll(async () => {
  agent = await rig.pki.leaf(rig.pki.a, AGENT);
  approver = await generateKeyPair("ES256");
  const grantKey = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const files = writeFiles({ "grant.pem": grantKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string });
  const jwks = JSON.stringify({ keys: [{ ...(await exportJWK(approver.publicKey)), kid: "tickets-1", use: "sig" }] });
  common = `
roles:
  writer: [{ id: spiffe://a.test/nobody }]
approvers:
  tickets: { jwks: ${jwks} }
negotiation: { grant_key: ${files["grant.pem"]}, grant_ttl: 1h }
`;
});

const policies = (perTask: string) => `
  main:
    rules:
      - name: approved-writer
        action: allow
        match: [{ id: ${AGENT} }]
        roles: [writer]
        limits: { per_task: ${perTask} }
${common}`;

const sidecar = (perTask: string, clock: ManualClock) => rig.start({ policies: policies(perTask), now: clock.now });

/** A negotiated session under an approval of task `txn` (none: no txn claim): its socket, or the denial's reasons. */
async function session(h: Harness, txn: string | undefined): Promise<TLSSocket | readonly string[]> {
  const token = await new SignJWT({ scope: "writer", ...(txn !== undefined ? { txn } : {}) })
    .setProtectedHeader({ alg: "ES256", kid: "tickets-1" })
    .setIssuer("tickets")
    .setSubject(AGENT)
    .setAudience(OWN)
    .setExpirationTime("10m")
    .sign(approver.privateKey);
  const c = { host: "127.0.0.1", port: h.port, cert: agent.chainPem, key: agent.keyPem, ca: rig.pki.a.certPem, roles: ["writer"], approvalToken: token };
  try {
    const { socket } = await connect(c);
    sockets.push(socket);
    return socket;
  } catch (e) {
    if (e instanceof DeniedError) return e.reasons;
    throw e;
  }
}

const admitted = (r: TLSSocket | readonly string[]) => !Array.isArray(r);

describe("per-task limits on one sidecar (local)", () => {
  it("refuses an approval replayed beyond its task's concurrent sessions, then beyond its new sessions a minute", async () => {
    const clock = new ManualClock();
    const h = await sidecar("{ max_sessions: 2, per_minute: 3 }", clock);
    const first = await session(h, "task-1");
    expect(admitted(first)).toBe(true);
    expect(admitted(await session(h, "task-1"))).toBe(true);
    expect(await session(h, "task-1")).toEqual(["task_limit_exceeded"]);
    expect(admitted(await session(h, "task-2"))).toBe(true); // another task, its own bound
    // One of task-1's sessions ends: a slot, and the third of its three a minute.
    const ended = readAll(first as TLSSocket);
    (first as TLSSocket).end();
    await ended;
    await waitFor(() => h.sidecar.registry.all().length === 2 || undefined, 5000, "session end");
    expect(admitted(await session(h, "task-1"))).toBe(true);
    sockets[sockets.length - 1]!.destroy();
    await waitFor(() => h.sidecar.registry.all().length === 2 || undefined, 5000, "session end");
    // A slot is free, but the minute's three new sessions are spent; 20 s later one more token.
    expect(await session(h, "task-1")).toEqual(["task_limit_exceeded"]);
    clock.advance(20_000);
    expect(admitted(await session(h, "task-1"))).toBe(true);
    const refusals = h.logs.of("decision").filter((d) => d.decision === "deny");
    expect(refusals.map((d) => d.reasons)).toEqual([["task_limit_exceeded"], ["task_limit_exceeded"]]);
    expect(refusals.map((d) => d.detail)).toEqual(["task task-1 already has 2 sessions", "task task-1: over 3/min (burst 3)"]);
    expect(h.sidecar.limitCounts.get("task_limit_exceeded")).toBe(2);
  });

  it("does not bound sessions whose approval names no task", async () => {
    const h = await sidecar("{ max_sessions: 1, per_minute: 1 }", new ManualClock());
    for (let i = 0; i < 3; i++) expect(admitted(await session(h, undefined))).toBe(true);
    expect(admitted(await session(h, "task-1"))).toBe(true);
    expect(await session(h, "task-1")).toEqual(["task_limit_exceeded"]);
  });
});

describe("per-task limits across sidecars (scope: shared)", () => {
  it("counts a task's sessions and rate on every sidecar together", async () => {
    const clock = new ManualClock();
    const prefix = rig.prefix("task");
    const opts = { policies: policies("{ max_sessions: 2, per_minute: 3, scope: shared }"), now: clock.now, extra: rig.section(prefix) };
    const [h1, h2] = await rig.sidecars(2, opts);
    expect(admitted(await session(h1!, "task-1"))).toBe(true);
    expect(admitted(await session(h2!, "task-1"))).toBe(true);
    expect(await session(h1!, "task-1")).toEqual(["task_limit_exceeded"]);
    expect(await session(h2!, "task-1")).toEqual(["task_limit_exceeded"]);
    sockets[0]!.destroy();
    await waitFor(() => h1!.sidecar.registry.all().length === 0 || undefined, 5000, "session end");
    // The slot comes back once the release reached Redis; the third new session of the minute is admitted.
    await until(async () => (await rig.inspect.zCard(`${prefix}task:sessions:task-1`)) === 1, 5000, "lease released");
    expect(admitted(await session(h2!, "task-1"))).toBe(true);
    sockets[sockets.length - 1]!.destroy();
    await waitFor(() => h2!.sidecar.registry.all().length === 1 || undefined, 5000, "session end");
    expect(await session(h1!, "task-1")).toEqual(["task_limit_exceeded"]); // a slot, but no token
    expect(
      h1!.logs
        .of("decision")
        .filter((d) => d.decision === "deny")
        .map((d) => d.detail),
    ).toEqual(["task task-1: all 2 shared sessions are in use", "task task-1: over the shared 0.05/s (burst 3)"]);
  });
});
