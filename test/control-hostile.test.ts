// A control plane that misbehaves: oversized and malformed messages, invalid resources, and one that
// comes and goes every 100 ms. The sidecar keeps serving on its last good configuration throughout.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadBootstrap } from "../src/config/load.js";
import { startControlPlane, type ControlPlane } from "../src/control/server/plane.js";
import { loadControlService } from "../src/control/wire.js";
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

/** A gRPC server for the ControlPlane service with our own handler (and serializer). */
async function rogue(port: number, handler: (call: grpc.ServerDuplexStream<unknown, unknown>) => void, serialize?: (x: never) => Buffer): Promise<void> {
  const def = loadControlService().service;
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
      ((b: Buffer) => b) as never,
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
    const detail = nack.error_detail as { code: number; issues: string[] };
    expect(detail.code).toBe(3);
    expect(detail.issues.join("\n")).toMatch(/listeners\[0\]\.listen: expected host:port/);
    await keepsServing(rig);
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
    let stop = false;
    const traffic = (async () => {
      while (!stop) {
        try {
          const s = await openSession(rig!.port(), pki, alice);
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
      stop = true;
      await traffic;
      expect(failures).toBe(0);
      expect(sessions).toBeGreaterThan(10);
      expect((await openSession(rig.port(), pki, alice)).got()).toBe("ping");
    } finally {
      stop = true;
      await cp.close();
    }
  }, 20_000);
});
