// The control plane end to end: the real server over a directory of YAML files, a sidecar driven by it
// over real gRPC on loopback, real TLS sessions through that sidecar.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadBootstrap } from "../src/config/load.js";
import { startControlPlane, type ControlPlane } from "../src/control/server/plane.js";
import { resourcesFromWire, resourcesToWire } from "../src/control/wire.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import { dialTls, freePort, MemoryLog, openSession, readAll, tempDir, waitFor, startControlled, type Controlled } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let alice: Issued;
let bob: Issued;
let carol: Issued; // spiffe://b.test/carol

beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/alice");
  bob = await pki.leaf(pki.a, "spiffe://a.test/bob");
  carol = await pki.leaf(pki.b, "spiffe://b.test/carol");
});

const SHARED = (ids: string[]) => `
trust_domains:
  a.test: { bundle: a.pem }
  b.test: { bundle: b.pem }
roles:
  reader: [{ trust_domain: b.test }]
policies:
  main:
    default: deny
    rules:
      - name: allowed
        action: allow
        match: [${ids.map((i) => `{ ${i.startsWith("spiffe") ? "id" : "trust_domain"}: ${i} }`).join(", ")}]
`;

const NODE = (upstreamPort: number, listen = "127.0.0.1:0") => `
listeners:
  - name: main
    listen: ${listen}
    upstream: 127.0.0.1:${upstreamPort}
    policy: main
`;

interface Fixture {
  dir: string;
  echo: EchoServer;
  cp: ControlPlane;
  cpLog: string[];
  agent: Controlled;
  logs: MemoryLog;
  port(): number;
  writeShared(text: string): void;
  writeNode(text: string): void;
  restartControlPlane(): Promise<void>;
  close(): Promise<void>;
}

let fx: Fixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

function quietLogger(lines: string[]) {
  return pino({ level: "info", base: null }, { write: (l: string) => void lines.push(l) });
}

async function fixture(opts: { maxStaleness?: string; onStale?: string } = {}): Promise<Fixture> {
  const dir = tempDir();
  mkdirSync(join(dir, "cp", "nodes"), { recursive: true });
  const cpDir = join(dir, "cp");
  writeFileSync(join(cpDir, "a.pem"), pki.a.certPem);
  writeFileSync(join(cpDir, "b.pem"), pki.b.certPem);
  const echo = await startEcho("127.0.0.1", 0);
  const upstream = (echo.server.address() as { port: number }).port;
  writeFileSync(join(cpDir, "shared.yaml"), SHARED(["spiffe://a.test/alice", "spiffe://a.test/bob", "b.test"]));
  writeFileSync(join(cpDir, "nodes", "node-a.yaml"), NODE(upstream));
  const cpLog: string[] = [];
  let cp = await startControlPlane({ dir: cpDir, listen: "127.0.0.1:0", admin: { host: "127.0.0.1", port: 0 }, log: quietLogger(cpLog), settleMs: 50 });
  const cpPort = cp.port;
  writeFileSync(join(dir, "cert.pem"), pki.server.chainPem);
  writeFileSync(join(dir, "key.pem"), pki.server.keyPem);
  writeFileSync(
    join(dir, "bootstrap.yaml"),
    `identity: { cert: cert.pem, key: key.pem }
control_plane:
  address: 127.0.0.1:${cpPort}
  node_id: node-a
  max_staleness: ${opts.maxStaleness ?? "1m"}
  on_stale: ${opts.onStale ?? "fail_closed"}
  backoff: { initial: 50ms, max: 200ms }
`,
  );
  const logs = new MemoryLog();
  const agent = await startControlled(loadBootstrap(join(dir, "bootstrap.yaml")), logs);
  await logs.next("config_applied");
  const f: Fixture = {
    dir: cpDir,
    echo,
    get cp() {
      return cp;
    },
    cpLog,
    agent,
    logs,
    port: () => agent.sidecar.addresses()["main"]!.port,
    writeShared: (t) => writeFileSync(join(cpDir, "shared.yaml"), t),
    writeNode: (t) => writeFileSync(join(cpDir, "nodes", "node-a.yaml"), t),
    async restartControlPlane() {
      cp = await startControlPlane({ dir: cpDir, listen: `127.0.0.1:${cpPort}`, admin: { host: "127.0.0.1", port: 0 }, log: quietLogger(cpLog), settleMs: 50 });
    },
    async close() {
      await agent.stop(100);
      await cp.close();
      await echo.close();
    },
  };
  return f;
}

async function status(port: number): Promise<{ nodes: Array<Record<string, unknown>>; last_rejected: unknown }> {
  return (await fetch(`http://127.0.0.1:${port}/status`)).json() as never;
}

const applied = (f: Fixture) => f.logs.of("config_applied").length;

describe("wire format", () => {
  it("round-trips every resource kind", () => {
    const raw = {
      listeners: [{ name: "l", listen: "127.0.0.1:1", upstream: "127.0.0.1:2", policy: "p", handshake_timeout: "3s", max_sessions: 7 }],
      policies: {
        p: {
          default: "deny",
          mode: "audit",
          limits: { idle_timeout: "1m" },
          rules: [
            {
              name: "r",
              action: "allow",
              match: [{ glob: "spiffe://td/ns/*" }],
              roles: ["x"],
              attestation: { attestor: "node", claims: { env: "prod", tier: ["gold", "silver"], signed: true }, max_age: "1h" },
              conditions: { source_cidrs: ["10.0.0.0/8"], time: [{ zone: "UTC", days: ["mon"], from: "09:00", to: "17:00" }], max_cert_lifetime: "1d" },
              limits: {
                byte_budget: "1GiB",
                bandwidth: "1MiB/s",
                identity_bandwidth: "2MiB/s",
                rate: { per_second: 5, burst: 10 },
                max_sessions: 3,
                max_wait: "200ms",
              },
            },
          ],
        },
      },
      trust_domains: { td: { bundle_pem: "PEM" } },
      roles: { x: [{ trust_domain: "td" }] },
      attestors: { node: { description: "d", jwks: { keys: [{ kty: "EC", crv: "P-256", x: "AA", y: "BB", kid: "k" }] } } },
      approvers: { tickets: { jwks: { keys: [] } } },
      attestations: [
        {
          subject: "spiffe://td/w",
          attestor: "node",
          claims: { env: "prod", image: { signed: true } },
          issued_at: "2026-01-01T00:00:00Z",
          expires_at: "2027-01-01T00:00:00Z",
        },
      ],
      revocations: {
        incident: {
          reason: "compromised",
          until: "2099-01-01T00:00:00Z",
          match: [{ id: "spiffe://td/w" }, { txn: "t-1" }, { cert_fingerprint: "ab".repeat(32) }],
        },
      },
      drain_timeout: "5s",
      revocation_grace: "1s",
      limits: {
        max_chain_length: 4,
        max_sessions: 100,
        max_handshakes: 50,
        max_handshakes_per_source: 10,
        source_rate: { per_second: 20, burst: 40 },
        max_held: 5,
      },
    };
    const { raw: back, problems } = resourcesFromWire(
      resourcesToWire(raw).map((r) => ({ ...r, kind: Object.keys(r).find((k) => k !== "name" && k !== "type") })),
    );
    expect(problems).toEqual([]);
    expect(back).toEqual(raw);
  });
});

describe("control plane and sidecar", () => {
  it("first config: the sidecar binds what the control plane pushes and serves it; the status shows the ACK", async () => {
    fx = await fixture();
    expect((await openSession(fx.port(), pki, alice)).got()).toBe("ping");
    const version = fx.agent.sync.running();
    expect(version).toMatch(/^[0-9a-f]{16}$/);
    const st = await status(fx.cp.adminPort!);
    await waitFor(() => fx!.cp.server.nodes.list()[0]?.acked_version === version, 3000, "ack recorded");
    expect(st.nodes[0]).toMatchObject({ node_id: "node-a", connected: true });
    expect((await status(fx.cp.adminPort!)).nodes[0]).toMatchObject({ acked_version: version, sent_version: version, last_nack: null });
    const d = await fx.logs.next("decision");
    expect(d.policy_version).toBe(version);
  });

  it("an update is pushed within a second and revokes exactly the sessions it no longer admits", async () => {
    fx = await fixture();
    const v1 = fx.agent.sync.running();
    const a = await openSession(fx.port(), pki, alice);
    const b = await openSession(fx.port(), pki, bob);
    const t0 = Date.now();
    fx.writeShared(SHARED(["spiffe://a.test/alice", "b.test"]));
    await waitFor(() => applied(fx!) === 2, 3000, "second config");
    expect(Date.now() - t0).toBeLessThan(1000);
    const v2 = fx.agent.sync.running();
    expect(v2).not.toBe(v1);
    const revoked = await fx.logs.next("revoked");
    expect(revoked).toMatchObject({ peer_id: "spiffe://a.test/bob", old_version: v1, new_version: v2 });
    await b.closed;
    a.s.write("!");
    await waitFor(() => a.got() === "ping!", 2000, "alice untouched");
    expect(fx.logs.of("revoked")).toHaveLength(1);
    a.s.end();
    await a.closed;
  });

  it("a pushed revocation ends the matching session on the sidecar at once, despite the grace; new ones are denied", async () => {
    fx = await fixture();
    const a = await openSession(fx.port(), pki, alice);
    const b = await openSession(fx.port(), pki, bob);
    fx.writeShared(
      `${SHARED(["spiffe://a.test/alice", "spiffe://a.test/bob", "b.test"])}revocation_grace: 1h
revocations:
  incident-9:
    reason: agent compromised
    until: 2099-01-01T00:00:00Z
    match: [{ id: spiffe://a.test/alice }]
`,
    );
    const revoked = await fx.logs.next("revoked");
    expect(revoked).toMatchObject({
      peer_id: "spiffe://a.test/alice",
      reasons: ["identity_revoked"],
      grace_ms: 0,
      revocation: { entry: "incident-9", match: "id spiffe://a.test/alice" },
    });
    await a.closed;
    expect((await fx.logs.next("session_end", (r) => r.peer_id === "spiffe://a.test/alice")).end_reason).toBe("revoked");
    const before = fx.echo.accepted();
    const s = await dialTls(fx.port(), pki, alice);
    await readAll(s);
    expect((await fx.logs.next("decision", (r) => r.decision === "deny")).reasons).toEqual(["identity_revoked"]);
    expect(fx.echo.accepted()).toBe(before);
    b.s.write("!");
    await waitFor(() => b.got() === "ping!", 2000, "bob untouched");
    b.s.end();
    await b.closed;
  });

  it("a push the sidecar cannot apply is NACKed; it keeps serving the old version; the status shows the NACK", async () => {
    fx = await fixture();
    const v1 = fx.agent.sync.running();
    const taken = (fx.echo.server.address() as { port: number }).port;
    fx.writeNode(NODE(taken, `127.0.0.1:${taken}`)); // valid data, but the address is in use
    await fx.logs.next("config_rejected");
    await waitFor(() => fx!.cp.server.nodes.list()[0]?.last_nack, 3000, "nack recorded");
    const st = (await status(fx.cp.adminPort!)).nodes[0]!;
    expect(st.acked_version).toBe(v1);
    expect((st.last_nack as { issues: string[] }).issues[0]).toMatch(/EADDRINUSE/);
    expect(fx.agent.sync.running()).toBe(v1);
    expect((await openSession(fx.port(), pki, alice)).got()).toBe("ping");
  });

  it("an invalid file set is refused by the server: logged with file and line, nothing pushed", async () => {
    fx = await fixture();
    const before = fx.agent.sync.running();
    fx.writeShared(SHARED(["spiffe://a.test/alice"]).replace("action: allow", "action: permit"));
    await waitFor(() => fx!.cpLog.some((l) => l.includes("snapshot_rejected")), 3000, "rejection");
    const rejected = JSON.parse(fx.cpLog.find((l) => l.includes("snapshot_rejected"))!);
    expect(rejected.errors[0]).toMatch(/shared\.yaml:\d+:\d+: policies\.main\.rules\[0\]\.action/);
    expect((await status(fx.cp.adminPort!)).last_rejected).toMatchObject({
      errors: [expect.stringMatching(/shared\.yaml:\d+:\d+: policies\.main\.rules\[0\]\.action/)],
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(applied(fx)).toBe(1);
    expect(fx.agent.sync.running()).toBe(before);
  });

  it("control plane down: sessions keep flowing on the last good config; back up: config resumes", async () => {
    fx = await fixture();
    const a = await openSession(fx.port(), pki, alice);
    await fx.cp.close();
    await fx.logs.next("lifecycle", (r) => r.msg === "control plane unreachable");
    a.s.write("+");
    await waitFor(() => a.got() === "ping+", 2000, "live session during outage");
    expect((await openSession(fx.port(), pki, bob)).got()).toBe("ping");
    fx.writeShared(SHARED(["spiffe://a.test/alice"])); // changed while down
    await fx.restartControlPlane();
    await waitFor(() => applied(fx!) === 2, 5000, "config after reconnect");
    const s = await dialTls(fx.port(), pki, bob);
    await readAll(s);
    expect((await fx.logs.next("decision", (r) => r.peer_id === "spiffe://a.test/bob" && r.decision === "deny")).policy_version).toBe(fx.agent.sync.running());
    a.s.end();
  });

  it("past max staleness it fails closed: new sessions denied (config_stale), live ones revoked; fresh again on reconnect", async () => {
    fx = await fixture({ maxStaleness: "400ms" });
    const a = await openSession(fx.port(), pki, alice);
    await fx.cp.close();
    await a.closed;
    expect((await fx.logs.next("revoked")).reasons).toEqual(["config_stale"]);
    const s = await dialTls(fx.port(), pki, alice);
    await readAll(s);
    await fx.logs.next("decision", (r) => (r.reasons as string[])[0] === "config_stale");
    await fx.restartControlPlane();
    await fx.logs.next("lifecycle", (r) => r.msg === "configuration fresh again: serving it");
    expect((await openSession(fx.port(), pki, alice)).got()).toBe("ping");
  });

  it("fail_open keeps serving the stale configuration when the operator says so", async () => {
    fx = await fixture({ maxStaleness: "300ms", onStale: "fail_open" });
    await fx.cp.close();
    await fx.logs.next("error", (r) => String(r.msg).includes("failing open"));
    expect((await openSession(fx.port(), pki, alice)).got()).toBe("ping");
    // Ready (it serves), and /readyz says what it serves is stale.
    const r = fx.agent.sidecar.readiness();
    expect(r.ready).toBe(true);
    expect(r.serving_stale_config?.since).toMatch(/^\d{4}-/);
    await fx.restartControlPlane();
    await fx.logs.next("lifecycle", (l) => l.msg === "configuration fresh again: serving it");
    expect(fx.agent.sidecar.readiness().serving_stale_config).toBeUndefined();
  });

  it("a bundle rotation that removes a root revokes the sessions chained to it", async () => {
    fx = await fixture();
    const c = await openSession(fx.port(), pki, carol);
    const a = await openSession(fx.port(), pki, alice);
    const otherB = (await import("../src/certs/issue.js")).CertificateAuthority.root({ trustDomain: "b.test" });
    writeFileSync(join(fx.dir, "b.pem"), (await otherB).certPem);
    fx.writeShared(SHARED(["spiffe://a.test/alice", "spiffe://a.test/bob", "b.test"]) + "\n# rotated\n");
    const revoked = await fx.logs.next("revoked");
    expect(revoked).toMatchObject({ peer_id: "spiffe://b.test/carol", svid_rule: "chain_unverified" });
    await c.closed;
    a.s.write("!");
    await waitFor(() => a.got() === "ping!", 2000, "a.test session untouched");
    a.s.end();
  });
});

describe("TLS to the control plane", () => {
  it("connects over TLS and presents the sidecar's own SVID when mtls is on", async () => {
    const { ServerCredentials } = await import("@grpc/grpc-js");
    const cpCert = await pki.a.leaf({ uris: ["spiffe://a.test/control-plane"], dnsNames: ["control.a.test"] });
    const dir = tempDir();
    mkdirSync(join(dir, "nodes"));
    writeFileSync(join(dir, "a.pem"), pki.a.certPem);
    writeFileSync(join(dir, "b.pem"), pki.b.certPem);
    writeFileSync(join(dir, "shared.yaml"), SHARED(["spiffe://a.test/alice"]));
    const echo = await startEcho("127.0.0.1", 0);
    writeFileSync(join(dir, "nodes", "node-a.yaml"), NODE((echo.server.address() as { port: number }).port));
    const lines: string[] = [];
    const creds = ServerCredentials.createSsl(
      Buffer.from(pki.a.certPem),
      [{ cert_chain: Buffer.from(cpCert.chainPem), private_key: Buffer.from(cpCert.keyPem) }],
      true,
    );
    const cp = await startControlPlane({ dir, listen: "127.0.0.1:0", credentials: creds, log: quietLogger(lines) });
    writeFileSync(join(dir, "cert.pem"), pki.server.chainPem);
    writeFileSync(join(dir, "key.pem"), pki.server.keyPem);
    writeFileSync(join(dir, "ca.pem"), pki.a.certPem);
    const boot = (mtls: boolean) =>
      `identity: { cert: cert.pem, key: key.pem }
control_plane:
  address: 127.0.0.1:${cp.port}
  node_id: node-a
  tls: { ca: ca.pem, server_name: control.a.test, mtls: ${mtls} }
  backoff: { initial: 50ms, max: 200ms }
`;
    writeFileSync(join(dir, "boot-mtls.yaml"), boot(true));
    writeFileSync(join(dir, "boot-plain.yaml"), boot(false));
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(join(dir, "boot-mtls.yaml")), logs);
    const noCert = new MemoryLog();
    const refused = await startControlled(loadBootstrap(join(dir, "boot-plain.yaml")), noCert);
    try {
      await logs.next("config_applied");
      expect(agent.sidecar.configured).toBe(true);
      // Without a client certificate the server refuses the stream: no config ever arrives.
      await noCert.next("lifecycle", (r) => r.msg === "control plane unreachable");
      expect(noCert.of("config_applied")).toHaveLength(0);
      expect(refused.sidecar.configured).toBe(false);
    } finally {
      await agent.stop(50);
      await refused.stop(50);
      await cp.close();
      await echo.close();
    }
  });
});

describe("before the first push", () => {
  it("serves a static fallback configuration, then switches to what the control plane pushes", async () => {
    const dir = tempDir();
    const echo = await startEcho("127.0.0.1", 0);
    const up = (echo.server.address() as { port: number }).port;
    writeFileSync(join(dir, "cert.pem"), pki.server.chainPem);
    writeFileSync(join(dir, "key.pem"), pki.server.keyPem);
    writeFileSync(join(dir, "a.pem"), pki.a.certPem);
    writeFileSync(join(dir, "b.pem"), pki.b.certPem);
    writeFileSync(join(dir, "fallback.yaml"), `identity: { cert: cert.pem, key: key.pem }\n${SHARED(["spiffe://a.test/bob"])}${NODE(up)}`);
    // The control plane is not running yet.
    const cpPort = await freePort();
    writeFileSync(
      join(dir, "bootstrap.yaml"),
      `identity: { cert: cert.pem, key: key.pem }
control_plane: { address: "127.0.0.1:${cpPort}", node_id: node-a, backoff: { initial: 50ms, max: 100ms } }
initial: { static: fallback.yaml }
`,
    );
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(join(dir, "bootstrap.yaml")), logs);
    let cp: ControlPlane | undefined;
    try {
      const port = agent.sidecar.addresses()["main"]!.port;
      expect((await openSession(port, pki, bob)).got()).toBe("ping");
      mkdirSync(join(dir, "cp", "nodes"), { recursive: true });
      writeFileSync(join(dir, "cp", "a.pem"), pki.a.certPem);
      writeFileSync(join(dir, "cp", "b.pem"), pki.b.certPem);
      writeFileSync(join(dir, "cp", "shared.yaml"), SHARED(["spiffe://a.test/alice"]));
      writeFileSync(join(dir, "cp", "nodes", "node-a.yaml"), NODE(up));
      cp = await startControlPlane({ dir: join(dir, "cp"), listen: `127.0.0.1:${cpPort}`, log: quietLogger([]) });
      await logs.next("config_applied");
      const s = await dialTls(port, pki, bob);
      await readAll(s);
      expect((await logs.next("decision", (r) => r.peer_id === "spiffe://a.test/bob" && r.decision === "deny")).policy_version).toBe(agent.sync.running());
      expect((await openSession(port, pki, alice)).got()).toBe("ping");
    } finally {
      await agent.stop(50);
      await cp?.close();
      await echo.close();
    }
  });
});
