// The control plane serves a sidecar only its own configuration, proven by its SVID: real gRPC over
// mTLS with certificates made by the suite. Node files bind node ids to SPIFFE IDs; a claim that does
// not match is PERMISSION_DENIED naming the rule, logged with the peer's ID, recorded in /status, and
// nothing is sent. The sidecar checks the control plane's own SPIFFE ID.
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadBootstrap } from "../src/config/load.js";
import { serverCredentials, startControlPlane, type ControlPlane } from "../src/control/server/plane.js";
import { SnapshotStore } from "../src/control/server/snapshots.js";
import { loadControlService } from "../src/control/wire.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import { BundleSet, X509Bundle } from "../src/spiffe/x509bundle.js";
import { TrustDomain } from "../src/spiffe/spiffeid.js";
import { SvidVerifier } from "../src/spiffe/x509svid.js";
import { freePort, MemoryLog, startControlled, tempDir, waitFor } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let cpCert: Issued;
let orders: Issued;
let payments: Issued;
let foreign: Issued; // spiffe://b.test/orders from b.test's own root
let forged: Issued; // spiffe://b.test/orders signed by a.test's root
beforeAll(async () => {
  pki = await makePki();
  cpCert = await pki.a.leaf({ uris: ["spiffe://a.test/control-plane"], dnsNames: ["control.a.test"] });
  orders = await pki.leaf(pki.a, "spiffe://a.test/ns/shop/sa/orders");
  payments = await pki.leaf(pki.a, "spiffe://a.test/ns/shop/sa/payments");
  foreign = await pki.leaf(pki.b, "spiffe://b.test/orders");
  forged = await pki.leaf(pki.a, "spiffe://b.test/orders");
});

const SHARED = `
trust_domains:
  a.test: { bundle: a.pem }
  b.test: { bundle: b.pem }
attestors:
  node: {}
attestations:
  - { subject: spiffe://a.test/alice, attestor: node, claims: { env: prod }, issued_at: "2026-01-01T00:00:00Z", expires_at: "2099-01-01T00:00:00Z" }
  - { subject: spiffe://a.test/bob, attestor: node, claims: { env: prod }, issued_at: "2026-01-01T00:00:00Z", expires_at: "2099-01-01T00:00:00Z" }
`;
const NODE = (name: string, upstream: number, who: string, identity?: string) => `
${identity ? `identity: ${identity}\n` : ""}listeners:
  - { name: ${name}, listen: "127.0.0.1:0", upstream: "127.0.0.1:${upstream}", policy: ${name} }
policies:
  ${name}:
    rules:
      - { name: attested, action: allow, match: [{ id: "spiffe://a.test/${who}" }], attestation: { attestor: node } }
`;

interface Rig {
  dir: string;
  cp: ControlPlane;
  echo: EchoServer;
  log: Array<Record<string, unknown>>;
}
let rig: Rig | undefined;
const closers: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  rig = undefined;
});

async function start(): Promise<Rig> {
  const dir = tempDir();
  mkdirSync(join(dir, "cp", "nodes"), { recursive: true });
  const echo = await startEcho("127.0.0.1", 0);
  const up = (echo.server.address() as { port: number }).port;
  writeFileSync(join(dir, "cp", "a.pem"), pki.a.certPem);
  writeFileSync(join(dir, "cp", "b.pem"), pki.b.certPem);
  writeFileSync(join(dir, "cp", "shared.yaml"), SHARED);
  writeFileSync(join(dir, "cp", "nodes", "orders.yaml"), NODE("orders", up, "alice", "{ path_prefix: spiffe://a.test/ns/shop/sa/orders }"));
  writeFileSync(join(dir, "cp", "nodes", "billing.yaml"), NODE("billing", up, "bob", "spiffe://a.test/ns/shop/sa/billing"));
  writeFileSync(join(dir, "cp", "nodes", "unbound.yaml"), NODE("unbound", up, "bob"));
  const log: Array<Record<string, unknown>> = [];
  const clientBundles = new BundleSet([X509Bundle.fromPem(TrustDomain.parse("a.test"), pki.a.certPem, "a.pem")]);
  const cp = await startControlPlane({
    dir: join(dir, "cp"),
    listen: "127.0.0.1:0",
    admin: { host: "127.0.0.1", port: 0 },
    credentials: serverCredentials(Buffer.from(cpCert.chainPem), Buffer.from(cpCert.keyPem), clientBundles),
    clientSvids: new SvidVerifier(clientBundles),
    log: pino({ level: "info", base: null }, { write: (l: string) => void log.push(JSON.parse(l) as Record<string, unknown>) }),
  });
  closers.push(
    () => echo.close(),
    () => cp.close(),
  );
  writeFileSync(join(dir, "cert.pem"), pki.server.chainPem);
  writeFileSync(join(dir, "key.pem"), pki.server.keyPem);
  writeFileSync(join(dir, "ca.pem"), pki.a.certPem);
  return { dir, cp, echo, log };
}

/** A raw client presenting `svid`, claiming `nodeId`. */
function claim(port: number, svid: Issued, nodeId: string) {
  const Service = loadControlService();
  const creds = grpc.credentials.createSsl(Buffer.from(pki.a.certPem), Buffer.from(svid.keyPem), Buffer.from(svid.chainPem));
  const client = new Service(`127.0.0.1:${port}`, creds, { "grpc.ssl_target_name_override": "control.a.test", "grpc.use_local_subchannel_pool": 1 });
  closers.push(() => client.close());
  const call = (client as unknown as { StreamConfig(): grpc.ClientDuplexStream<unknown, unknown> }).StreamConfig();
  const got: unknown[] = [];
  let status: grpc.StatusObject | undefined;
  call.on("data", (r: unknown) => got.push(r));
  call.on("error", () => undefined);
  call.on("status", (s: grpc.StatusObject) => (status = s));
  call.write({ node: { id: nodeId } });
  return { got, status: () => status };
}

async function statusOf(r: Rig): Promise<{ nodes: Array<Record<string, unknown>>; refusals: Array<Record<string, unknown>> }> {
  return (await fetch(`http://127.0.0.1:${r.cp.adminPort}/status`)).json() as never;
}

function bootstrap(r: Rig, nodeId: string, expectId = "spiffe://a.test/control-plane", svid?: Issued): string {
  if (svid) {
    writeFileSync(join(r.dir, `${nodeId}-cert.pem`), svid.chainPem);
    writeFileSync(join(r.dir, `${nodeId}-key.pem`), svid.keyPem);
  }
  const file = join(r.dir, `${nodeId}-boot.yaml`);
  writeFileSync(
    file,
    `identity: { cert: ${svid ? `${nodeId}-cert.pem` : "cert.pem"}, key: ${svid ? `${nodeId}-key.pem` : "key.pem"} }
control_plane:
  address: 127.0.0.1:${r.cp.port}
  node_id: ${nodeId}
  tls: { ca: ca.pem, expect_id: "${expectId}", mtls: true }
  backoff: { initial: 50ms, max: 200ms }
`,
  );
  return file;
}

describe("node ids bound to SPIFFE IDs over mTLS", () => {
  it("the right SVID gets its node's resources (and only the attestation records its policies use)", async () => {
    rig = await start();
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(bootstrap(rig, "orders", undefined, orders)), logs);
    closers.push(() => agent.stop(50));
    await logs.next("config_applied");
    expect(Object.keys(agent.sidecar.addresses())).toEqual(["orders"]);
    expect(agent.sidecar.config.attestations.size).toBe(1);
    expect(agent.sidecar.config.attestations.for("spiffe://a.test/alice")).toHaveLength(1);
    const node = await waitFor(() => rig!.cp.server.nodes.list().find((n) => n.node_id === "orders" && n.acked_version), 5000, "ACK");
    expect(node.peer_id).toBe("spiffe://a.test/ns/shop/sa/orders");
  });

  it("a valid SVID of another workload claiming that node is refused, gets nothing, and the refusal is logged and shown", async () => {
    rig = await start();
    const c = claim(rig.cp.port, payments, "orders");
    const s = await waitFor(c.status, 5000, "status");
    expect(s.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(s.details).toMatch(/^node_identity: node orders is bound to path_prefix spiffe:\/\/a.test\/ns\/shop\/sa\/orders/);
    expect(c.got).toEqual([]);
    const logged = rig.log.find((l) => l.event === "node_refused")!;
    expect(logged).toMatchObject({ node_id: "orders", peer_id: "spiffe://a.test/ns/shop/sa/payments", rule: "node_identity" });
    const st = await statusOf(rig);
    expect(st.nodes).toEqual([]);
    expect(st.refusals).toEqual([
      expect.objectContaining({ node_id: "orders", peer_id: "spiffe://a.test/ns/shop/sa/payments", rule: "node_identity" }) as unknown,
    ]);
    // The status view shows versions and outcomes, never resource contents.
    expect(JSON.stringify(st)).not.toMatch(/BEGIN CERTIFICATE|attested|upstream|claims/);
  });

  it("a node file without identity: no SVID may claim it", async () => {
    rig = await start();
    const c = claim(rig.cp.port, orders, "unbound");
    const s = await waitFor(c.status, 5000, "status");
    expect(s.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(s.details).toMatch(/^node_unbound: /);
    expect(c.got).toEqual([]);
  });

  it("an SVID of another trust domain is refused: from its own root at the handshake, forged under ours by the SPIFFE rules", async () => {
    rig = await start();
    const own = claim(rig.cp.port, foreign, "orders");
    expect((await waitFor(own.status, 5000, "status")).code).toBe(grpc.status.UNAVAILABLE);
    expect(own.got).toEqual([]);
    // Signed by a.test's root, which OpenSSL's merged check accepts; its ID says b.test, whose bundle is not trusted here.
    const cross = claim(rig.cp.port, forged, "orders");
    const s = await waitFor(cross.status, 5000, "status");
    expect(s.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(s.details).toMatch(/^svid_untrusted_domain: /);
    expect(cross.got).toEqual([]);
    expect((await statusOf(rig)).refusals.map((r) => r.rule)).toEqual(["svid_untrusted_domain"]);
  });

  it("a sidecar that expects another control-plane ID refuses to apply its pushes", async () => {
    rig = await start();
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(bootstrap(rig, "orders", "spiffe://a.test/not-the-control-plane", orders)), logs);
    closers.push(() => agent.stop(50));
    const down = await logs.next("lifecycle", (r) => r.msg === "control plane unreachable");
    expect(String(down.reason)).toMatch(/spiffe:\/\/a.test\/control-plane, not the expected spiffe:\/\/a.test\/not-the-control-plane/);
    expect(logs.of("config_applied")).toEqual([]);
    expect(agent.sidecar.configured).toBe(false);
    expect(rig.cp.server.nodes.list()).toEqual([]);
  });
});

describe("per-node resources", () => {
  it("shared resources reach every node; per-node ones and the attestation records they use only their node", async () => {
    rig = await start();
    const store = new SnapshotStore(join(rig.dir, "cp"));
    expect(store.load().ok).toBe(true);
    const names = (id: string) => {
      const s = store.forNode(id);
      if ("error" in s) throw new Error(s.error);
      return s.resources.map((r) => `${r.type}/${r.name}`).sort();
    };
    expect(names("orders")).toEqual([
      "attestation/spiffe://a.test/alice#node#0",
      "attestor/node",
      "listener/orders",
      "policy/orders",
      "trust_bundle/a.test",
      "trust_bundle/b.test",
    ]);
    expect(names("billing")).toEqual([
      "attestation/spiffe://a.test/bob#node#0",
      "attestor/node",
      "listener/billing",
      "policy/billing",
      "trust_bundle/a.test",
      "trust_bundle/b.test",
    ]);
  });
});

describe("transport safety of `parley control-plane`", () => {
  it("refuses plaintext on 0.0.0.0 without --insecure (exit 2); with it, starts and warns", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "a.pem"), pki.a.certPem);
    writeFileSync(
      join(dir, "shared.yaml"),
      `trust_domains: { a.test: { bundle: a.pem } }\nlisteners: [{ name: m, listen: "127.0.0.1:0", upstream: "127.0.0.1:9", policy: p }]\npolicies: { p: {} }\n`,
    );
    const port = await freePort();
    const args = ["dist/cli.js", "control-plane", "--dir", dir, "--listen", `0.0.0.0:${port}`, "--admin", `127.0.0.1:${await freePort()}`];
    const refused = spawnSync(process.execPath, args, { encoding: "utf8", timeout: 15_000 });
    expect(refused.status).toBe(2);
    expect(refused.stderr).toMatch(/refusing plaintext on 0\.0\.0\.0:\d+, which is not loopback/);
    const child = spawn(process.execPath, [...args, "--insecure"], { stdio: ["ignore", "pipe", "pipe"] });
    closers.push(() => void child.kill());
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    await waitFor(() => out.includes("control_plane_ready") || undefined, 10_000, "ready");
    expect(JSON.parse(out.split("\n").find((l) => l.includes('"insecure"'))!)).toMatchObject({ level: "warn", listen: `0.0.0.0:${port}` });
  });
});
