// Revocation and context change across a mesh: one real control plane over a directory, two sidecars
// fed by it over real gRPC, real TLS sessions through both. `parley revoke --dir` (dist/cli.js) ends
// the named sessions on both sidecars with the push and refuses the next ones; an attestation record
// that changes or disappears re-checks the sessions that relied on it.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { loadBootstrap } from "../src/config/load.js";
import { startControlPlane, type ControlPlane } from "../src/control/server/plane.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import { MemoryLog, openSession, startControlled, tempDir, waitFor, type Controlled } from "../testkit/harness.js";
import { ALLOW_A_TEST, cli, revocationFixtures } from "../testkit/revocations.js";

const fx = revocationFixtures();

interface Node {
  readonly agent: Controlled;
  readonly logs: MemoryLog;
  port(): number;
}
interface Mesh {
  readonly dir: string;
  readonly echo: EchoServer;
  readonly nodes: readonly Node[];
  writeShared(text: string): void;
  close(): Promise<void>;
}
let mesh: Mesh | undefined;
afterEach(async () => {
  await mesh?.close();
  mesh = undefined;
});

/** A control plane on `shared` and two sidecars (node-a, node-b), each with its listener to one echo. */
async function startMesh(shared: string): Promise<Mesh> {
  const root = tempDir();
  const dir = join(root, "cp");
  mkdirSync(join(dir, "nodes"), { recursive: true });
  writeFileSync(join(dir, "a.pem"), fx.pki.a.certPem);
  writeFileSync(join(dir, "shared.yaml"), shared);
  const echo = await startEcho("127.0.0.1", 0);
  const upstream = (echo.server.address() as { port: number }).port;
  for (const id of ["node-a", "node-b"]) {
    writeFileSync(
      join(dir, "nodes", `${id}.yaml`),
      `# the listeners of ${id}\nlisteners: [{ name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:${upstream}", policy: main }]\n`,
    );
  }
  const cp: ControlPlane = await startControlPlane({ dir, listen: "127.0.0.1:0", log: pino({ level: "silent" }), settleMs: 50 });
  writeFileSync(join(root, "cert.pem"), fx.pki.server.chainPem);
  writeFileSync(join(root, "key.pem"), fx.pki.server.keyPem);
  const nodes: Node[] = [];
  for (const id of ["node-a", "node-b"]) {
    const boot = join(root, `${id}.yaml`);
    writeFileSync(
      boot,
      `identity: { cert: cert.pem, key: key.pem }
control_plane: { address: "127.0.0.1:${cp.port}", node_id: ${id}, backoff: { initial: 50ms, max: 200ms } }
`,
    );
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(boot), logs);
    await logs.next("config_applied");
    nodes.push({ agent, logs, port: () => agent.sidecar.addresses()["main"]!.port });
  }
  return {
    dir,
    echo,
    nodes,
    writeShared: (text) => writeFileSync(join(dir, "shared.yaml"), text),
    async close() {
      for (const n of nodes) await n.agent.stop(100);
      await cp.close();
      await echo.close();
    },
  };
}

const BASE = `trust_domains: { a.test: { bundle: a.pem } }
revocation_grace: 1h
policies:${ALLOW_A_TEST}`;

describe("parley revoke --dir, two sidecars fed by one control plane", () => {
  it("ends the named sessions on both sidecars with the push, despite the grace, and refuses the next ones", async () => {
    mesh = await startMesh(BASE);
    const live = await Promise.all(
      mesh.nodes.map(async (n) => ({ a: await openSession(n.port(), fx.pki, fx.alice), b: await openSession(n.port(), fx.pki, fx.bob) })),
    );
    const r = await cli(
      "revoke",
      "--dir",
      mesh.dir,
      "--name",
      "agent-out",
      "--reason",
      "agent compromised",
      "--until",
      "1h",
      "--spiffe-id",
      "spiffe://a.test/alice",
    );
    expect([r.status, r.stderr]).toEqual([0, ""]);
    expect(r.stdout).toMatch(/^revocation agent-out written to .*revocations\.yaml/);
    for (const [i, n] of mesh.nodes.entries()) {
      const revoked = await n.logs.next("revoked");
      expect(revoked).toMatchObject({ peer_id: "spiffe://a.test/alice", reasons: ["identity_revoked"], grace_ms: 0, revocation: { entry: "agent-out" } });
      // Within the push: the version that carried the entry is the one that ended the session.
      expect(revoked.new_version).toBe(n.agent.sync.running());
      await live[i]!.a.closed;
      live[i]!.b.s.write("-on");
      await waitFor(() => live[i]!.b.got() === "ping-on", 3000, "bob still served");
      const refused = await fx.expectRefused({ port: n.port(), logs: n.logs, echo: mesh.echo }, fx.alice, "identity_revoked");
      expect(refused.reasons).toEqual(["identity_revoked"]);
      live[i]!.b.s.end();
      await live[i]!.b.closed;
    }
  });
});

describe("parley revoke --dir DIR --node ID", () => {
  it("revokes on that node alone, keeping its file's comments and listeners", async () => {
    mesh = await startMesh(BASE);
    const [a, b] = mesh.nodes;
    const onA = await openSession(a!.port(), fx.pki, fx.bob);
    const onB = await openSession(b!.port(), fx.pki, fx.bob);
    const r = await cli(
      "revoke",
      "--dir",
      mesh.dir,
      "--node",
      "node-b",
      "--name",
      "bob-b",
      "--reason",
      "moved",
      "--until",
      "10m",
      "--spiffe-id",
      "spiffe://a.test/bob",
    );
    expect([r.status, r.stdout]).toEqual([0, expect.stringMatching(/written to .*nodes\/node-b\.yaml/)]);
    expect(await b!.logs.next("revoked")).toMatchObject({ peer_id: "spiffe://a.test/bob", revocation: { entry: "bob-b" } });
    await onB.closed;
    onA.s.write("-on");
    await waitFor(() => onA.got() === "ping-on", 3000, "bob still served on node-a");
    expect(a!.logs.of("revoked")).toEqual([]);
    expect(readFileSync(join(mesh.dir, "nodes", "node-b.yaml"), "utf8")).toMatch(
      /^# the listeners of node-b\nlisteners: \[ ?\{ name: main, .*\} ?]\nrevocations:\n {2}bob-b:\n/,
    );
    const missing = await cli("revoke", "--dir", mesh.dir, "--node", "node-c", "--name", "x", "--reason", "r", "--until", "1h", "--txn", "t");
    expect([missing.status, missing.stderr]).toEqual([2, expect.stringMatching(/--node .*node-c\.yaml: no such file/)]);
    const traversal = await cli("revoke", "--dir", mesh.dir, "--node", "../shared", "--name", "x", "--reason", "r", "--until", "1h", "--txn", "t");
    expect([traversal.status, traversal.stderr]).toEqual([2, expect.stringMatching(/--node \.\.\/shared: expected a node id/)]);
    onA.s.end();
    await onA.closed;
  });
});

describe("context change: a pushed attestation record", () => {
  const ATTESTED = (claims: string, record = true) => `trust_domains: { a.test: { bundle: a.pem } }
attestors: { node: { description: node attestor } }
policies:
  main:
    default: deny
    rules:
      - name: attested-alice
        action: allow
        match: [{ id: spiffe://a.test/alice }]
        attestation: { attestor: node, claims: { env: prod }, max_age: 1h }
      - name: bob
        action: allow
        match: [{ id: spiffe://a.test/bob }]
attestations:
${
  record
    ? `  - subject: spiffe://a.test/alice
    attestor: node
    claims: ${claims}
    issued_at: ${new Date(Date.now() - 60_000).toISOString()}
    expires_at: ${new Date(Date.now() + 3_600_000).toISOString()}`
    : "  []"
}
`;

  it.each([
    ["changes its claims", ATTESTED("{ env: dev }"), "attestation_claim_mismatch"],
    ["disappears", ATTESTED("{ env: prod }", false), "attestation_missing"],
  ])("that %s re-checks the session that relied on it on both sidecars: it ends, the others go on", async (_what, next, reason) => {
    mesh = await startMesh(ATTESTED("{ env: prod }"));
    const live = await Promise.all(
      mesh.nodes.map(async (n) => ({ a: await openSession(n.port(), fx.pki, fx.alice), b: await openSession(n.port(), fx.pki, fx.bob) })),
    );
    mesh.writeShared(next);
    for (const [i, n] of mesh.nodes.entries()) {
      const revoked = await n.logs.next("revoked");
      expect(revoked).toMatchObject({ peer_id: "spiffe://a.test/alice", reasons: [reason, "default_deny"], new_version: n.agent.sync.running() });
      await live[i]!.a.closed;
      expect((await n.logs.next("session_end", (r) => r.peer_id === "spiffe://a.test/alice")).end_reason).toBe("revoked");
      live[i]!.b.s.write("-on");
      await waitFor(() => live[i]!.b.got() === "ping-on", 3000, "bob still served");
      expect(n.logs.of("revoked")).toHaveLength(1);
      live[i]!.b.s.end();
      await live[i]!.b.closed;
    }
  });
});
