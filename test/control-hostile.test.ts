// A control plane that misbehaves: oversized and malformed messages, invalid resources, and one that
// comes and goes every 100 ms. The sidecar keeps serving on its last good configuration throughout.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { pino } from "pino";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadBootstrap } from "../src/config/load.js";
import { startControlPlane, type ControlPlane } from "../src/control/server/plane.js";
import { PROTO_ROOT } from "../src/assets/paths.js";
import { MAX_ISSUES } from "../src/control/issues.js";
import { LOADER_OPTIONS, loadControlService, PROTO_FILE } from "../src/control/wire.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import { freePort, MemoryLog, openSession, tempDir, waitFor, startControlled, type Controlled } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let alice: Issued;
beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/alice");
});

const RESOURCES = (upstream: number) => `
trust_domains:
  a.test: { bundle: a.pem }
  b.test: { bundle: b.pem }
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:${upstream}", policy: main }
policies:
  main:
    rules:
      - { name: allowed, action: allow, match: [{ id: spiffe://a.test/alice }] }
`;

interface Rig {
  dir: string;
  cpPort: number;
  echo: EchoServer;
  agent: Controlled;
  logs: MemoryLog;
  port(): number;
  close(): Promise<void>;
}
let rig: Rig | undefined;
const servers: grpc.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) s.forceShutdown();
  await rig?.close();
  rig = undefined;
});

/** A sidecar serving a static fallback, pointed at `cpPort` (where each test puts its own server). */
async function start(cpPort: number): Promise<Rig> {
  const dir = tempDir();
  const echo = await startEcho("127.0.0.1", 0);
  const up = (echo.server.address() as { port: number }).port;
  writeFileSync(join(dir, "cert.pem"), pki.server.chainPem);
  writeFileSync(join(dir, "key.pem"), pki.server.keyPem);
  writeFileSync(join(dir, "a.pem"), pki.a.certPem);
  writeFileSync(join(dir, "b.pem"), pki.b.certPem);
  writeFileSync(join(dir, "fallback.yaml"), `identity: { cert: cert.pem, key: key.pem }\nadmin: { listen: false }\n${RESOURCES(up)}`);
  writeFileSync(
    join(dir, "bootstrap.yaml"),
    `identity: { cert: cert.pem, key: key.pem }
control_plane: { address: "127.0.0.1:${cpPort}", node_id: node-a, max_staleness: 1h, backoff: { initial: 20ms, max: 100ms } }
initial: { static: fallback.yaml }
`,
  );
  const logs = new MemoryLog();
  const agent = await startControlled(loadBootstrap(join(dir, "bootstrap.yaml")), logs);
  return {
    dir,
    cpPort,
    echo,
    agent,
    logs,
    port: () => agent.sidecar.addresses()["main"]!.port,
    async close() {
      await agent.stop(50);
      await echo.close();
    },
  };
}

/** The protocol as a newer build might speak it: one more kind of resource in the oneof. */
function newerService(): grpc.ServiceDefinition {
  const dir = tempDir();
  const text = readFileSync(join(PROTO_ROOT, PROTO_FILE), "utf8").replace(/(Approver approver = 17;[^\n]*\n)/, "$1    Future future = 99;\n");
  mkdirSync(join(dir, "parley", "control", "v1"), { recursive: true });
  writeFileSync(join(dir, PROTO_FILE), `${text}\nmessage Future { string note = 1; }\n`);
  const def = protoLoader.loadSync(PROTO_FILE, { ...LOADER_OPTIONS, includeDirs: [dir] });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { parley: { control: { v1: { ControlPlane: grpc.ServiceClientConstructor } } } };
  return pkg.parley.control.v1.ControlPlane.service;
}

/** A gRPC server for the ControlPlane service with our own handler (and serializer, or whole service). */
async function rogue(
  port: number,
  handler: (call: grpc.ServerDuplexStream<unknown, unknown>) => void,
  serialize?: (x: never) => Buffer,
  def = loadControlService().service,
): Promise<void> {
  const service = serialize ? { StreamConfig: { ...def.StreamConfig!, responseSerialize: serialize } } : def;
  const server = new grpc.Server();
  server.addService(service as grpc.ServiceDefinition, { StreamConfig: handler });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
  );
  servers.push(server);
}

async function keepsServing(r: Rig) {
  const s = await openSession(r.port(), pki, alice);
  s.s.end();
  await s.closed;
  expect(r.agent.sync.running()).toBe("");
}

describe("a misbehaving control plane", () => {
  it("a message over the size limit breaks the stream, which is retried; serving goes on", async () => {
    const port = await freePort();
    let opened = 0;
    await rogue(port, (call) => {
      opened++;
      call.on("data", () =>
        call.write({ version_info: "huge", nonce: "n", resources: [{ name: "x", attestor: { description: "x".repeat(5 * 1024 * 1024) } }] }),
      );
    });
    rig = await start(port);
    await waitFor(() => opened >= 3 || undefined, 5000, "reconnects");
    expect(rig.logs.of("lifecycle").some((r) => r.msg === "control plane unreachable" && /RESOURCE_EXHAUSTED/.test(String(r.reason)))).toBe(true);
    await keepsServing(rig);
  });

  it("malformed protobuf is refused (a broken stream retried, or a NACK); serving goes on", async () => {
    const port = await freePort();
    let opened = 0;
    await rogue(
      port,
      (call) => {
        opened++;
        // A length-delimited field claiming four gigabytes, in a frame of eight bytes.
        call.once("data", () => call.write(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]) as never));
      },
      (b: Buffer) => b,
    );
    rig = await start(port);
    await waitFor(() => opened >= 2 || rig!.logs.of("config_rejected").length > 0 || undefined, 5000, "refusal");
    expect(rig.logs.of("config_applied")).toHaveLength(0);
    await keepsServing(rig);
  });

  it("a resource that fails validation is NACKed with the problem; nothing changes", async () => {
    const port = await freePort();
    const requests: Array<Record<string, unknown>> = [];
    await rogue(port, (call) => {
      call.on("data", (req: Record<string, unknown>) => {
        requests.push(req);
        if (requests.length === 1) {
          call.write({
            version_info: "v-bad",
            nonce: "n1",
            resources: [{ name: "main", listener: { listen: "nowhere", upstream: "127.0.0.1:1", policy: "ghost" } }],
          });
        }
      });
    });
    rig = await start(port);
    const nack = await waitFor(() => requests.find((r) => r.response_nonce === "n1"), 5000, "NACK");
    expect(nack.version_info).toBe("");
    const detail = nack.error_detail as { code: number; issues: string[]; details: unknown[]; issue_count: number };
    expect(detail.code).toBe(3);
    expect(detail.issues.join("\n")).toMatch(/^push v-bad: listeners\[0\]\.listen: expected host:port/m);
    expect(detail.details).toContainEqual({ kind: "listener", resource: "main", field: "listen", message: expect.stringMatching(/host:port/) as unknown });
    expect(detail.issue_count).toBe(detail.issues.length);
    await keepsServing(rig);
  });

  it("a push with a thousand problems is NACKed with the first few, clipped, and the count", async () => {
    const port = await freePort();
    const requests: Array<Record<string, unknown>> = [];
    const rules = Array.from({ length: 1000 }, (_, i) => ({ name: `r${i}`, action: "allow", match: [{ glob: `spiffe://a.test/${"x".repeat(2048)}*${i}` }] }));
    await rogue(port, (call) => {
      call.on("data", (req: Record<string, unknown>) => {
        requests.push(req);
        if (requests.length === 1) call.write({ version_info: "v-many", nonce: "n1", resources: [{ name: "main", type: "policy", policy: { rules } }] });
      });
    });
    rig = await start(port);
    const nack = await waitFor(() => requests.find((r) => r.response_nonce === "n1"), 10_000, "NACK");
    const detail = nack.error_detail as { issues: string[]; details: Array<{ kind: string; resource: string; field: string }>; issue_count: number };
    expect(detail.issue_count).toBeGreaterThanOrEqual(1000);
    expect(detail.issues).toHaveLength(MAX_ISSUES);
    expect(detail.details).toHaveLength(MAX_ISSUES);
    for (const line of detail.issues) expect(Buffer.byteLength(line)).toBeLessThanOrEqual(512);
    expect(detail.details[0]).toMatchObject({ kind: "policy", resource: "main", field: "rules[0].match[0]" });
    await keepsServing(rig);
  });

  it("a resource kind this sidecar does not know is skipped with a warning; the rest is applied and ACKed", async () => {
    const port = await freePort();
    const requests: Array<Record<string, unknown>> = [];
    const r = await start(port);
    rig = r;
    const upstream = (r.echo.server.address() as { port: number }).port;
    await rogue(
      port,
      (call) => {
        call.on("data", (req: Record<string, unknown>) => {
          requests.push(req);
          if (requests.length > 1) return;
          call.write({
            version_info: "v-new",
            nonce: "n1",
            resources: [
              { name: "a.test", type: "trust_bundle", trust_bundle: { x509_authorities_pem: pki.a.certPem } },
              { name: "main", type: "listener", listener: { listen: "127.0.0.1:0", upstream: `127.0.0.1:${upstream}`, policy: "main" } },
              { name: "main", type: "policy", policy: { rules: [{ name: "allowed", action: "allow", match: [{ id: "spiffe://a.test/alice" }] }] } },
              { name: "later", type: "future", future: { note: "a kind from a newer build" } },
            ],
          });
        });
      },
      undefined,
      newerService(),
    );
    const ack = await waitFor(() => requests.find((q) => q.response_nonce === "n1"), 5000, "answer");
    expect(ack.error_detail).toBeUndefined();
    expect(ack.version_info).toBe("v-new");
    expect(r.agent.sync.running()).toBe("v-new");
    expect(r.logs.of("warning").find((w) => /kinds this sidecar does not know/.test(String(w.msg)))).toMatchObject({ skipped: ["future/later"] });
  });

  it("a control plane that comes and goes every 100 ms for 3 s: no failed session, then the config arrives", async () => {
    const port = await freePort();
    const cpDir = tempDir();
    mkdirSync(join(cpDir, "nodes"));
    writeFileSync(join(cpDir, "a.pem"), pki.a.certPem);
    writeFileSync(join(cpDir, "b.pem"), pki.b.certPem);
    rig = await start(port);
    writeFileSync(join(cpDir, "shared.yaml"), RESOURCES((rig.echo.server.address() as { port: number }).port));
    const quiet = pino({ level: "silent" });
    let cp: ControlPlane | undefined;
    let failures = 0;
    let sessions = 0;
    const run = { on: true };
    const traffic = (async () => {
      while (run.on) {
        try {
          const s = await openSession(rig.port(), pki, alice);
          s.s.end();
          await s.closed;
          sessions++;
        } catch {
          failures++;
        }
      }
    })();
    const until = Date.now() + 3000;
    while (Date.now() < until) {
      cp = await startControlPlane({ dir: cpDir, listen: `127.0.0.1:${port}`, log: quiet });
      await new Promise((r) => setTimeout(r, 100));
      await cp.close();
      await new Promise((r) => setTimeout(r, 100));
    }
    cp = await startControlPlane({ dir: cpDir, listen: `127.0.0.1:${port}`, log: quiet });
    try {
      await waitFor(() => rig!.agent.sync.running() || undefined, 5000, "config after the flapping");
      run.on = false;
      await traffic;
      expect(failures).toBe(0);
      expect(sessions).toBeGreaterThan(10);
      expect((await openSession(rig.port(), pki, alice)).got()).toBe("ping");
    } finally {
      run.on = false;
      await cp.close();
    }
  }, 20_000);
});
