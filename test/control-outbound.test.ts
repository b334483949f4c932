// Outbound routes delivered by a control plane over real gRPC: parley's control plane serves them from
// its node files, a sidecar binds them and carries a legacy client's bytes to a remote parley (here as
// multiplexed HTTP/2 CONNECT streams); a changed route on the same address serves new connections as
// changed and ends the old ones; a removed route stops listening. What may not be pushed (a route off
// loopback, negotiation) is refused by the control plane with the file's line, and NACKed by the
// sidecar with the field path when another server pushes it. A file reload changes a route in place
// the same way.
import { mkdirSync, writeFileSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { startControlPlane } from "../src/control/server/plane.js";
import { loadControlService } from "../src/control/wire.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import {
  freePort,
  MemoryLog,
  plaintextEcho as app,
  startBootstrapped,
  startHarness,
  tempDir,
  waitFor,
  writeFiles,
  type Controlled,
  type Harness,
} from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let allowed: Issued;
beforeAll(async () => {
  pki = await makePki();
  allowed = await pki.leaf(pki.a, "spiffe://a.test/allowed");
});

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const SHARED = `
trust_domains:
  a.test: { bundle: a.pem }
policies:
  main: { default: deny }
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:9", policy: main }
`;

/** The node's outbound routes, as a YAML flow list. */
const NODE = (routes: string) => `outbound: [${routes}]\n`;

/** A sidecar of node `node-a` presenting spiffe://a.test/allowed, bootstrapped to the control plane at `cpPort`. */
async function sidecar(cpPort: number): Promise<{ agent: Controlled; logs: MemoryLog }> {
  const started = await startBootstrapped(tempDir(), cpPort, allowed);
  cleanups.push(() => started.agent.stop(50));
  return started;
}

/** A directory for parley's control plane: shared resources, and `nodes/node-a.yaml` holding `node`. */
function cpDir(node: string): string {
  const dir = join(tempDir(), "cp");
  mkdirSync(join(dir, "nodes"), { recursive: true });
  writeFileSync(join(dir, "a.pem"), pki.a.certPem);
  writeFileSync(join(dir, "shared.yaml"), SHARED);
  writeFileSync(join(dir, "nodes", "node-a.yaml"), node);
  return dir;
}

function refusedAt(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve("connected");
    });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

describe("outbound routes from a control plane", () => {
  it("are bound and carry bytes; a changed route keeps its address; a removed one stops listening", async () => {
    const remote: Harness = await startHarness(pki, { listenerExtra: "multiplex: true" });
    cleanups.push(() => remote.close());
    const port = await freePort();
    const route = (target: string) =>
      `{ name: to-b, listen: "127.0.0.1:${port}", remote: "127.0.0.1:${remote.port}", expect_id: spiffe://a.test/sidecar, transport: multiplexed, target: "${target}", multiplex: { max_streams: 8 } }`;
    const dir = cpDir(NODE(route("one.test:7")));
    const cp = await startControlPlane({ dir, listen: "127.0.0.1:0", log: pino({ level: "silent" }), settleMs: 50 });
    cleanups.push(() => cp.close());
    const { agent, logs } = await sidecar(cp.port);
    await logs.next("config_applied");
    expect(agent.sidecar.outboundAddresses()["to-b"]?.port).toBe(port);

    const first = await app(port, "one");
    expect(await remote.logs.next("decision", (d) => d.target === "one.test:7")).toMatchObject({
      decision: "allow",
      alpn: "parley-mux/1",
      peer_id: "spiffe://a.test/allowed",
    });
    expect(await logs.next("outbound")).toMatchObject({ decision: "allow", transport: "multiplexed", target: "one.test:7" });

    // Changed: same address, another target. The route's live session ends; new ones take the new route.
    const applied = logs.of("config_applied").length;
    writeFileSync(join(dir, "nodes", "node-a.yaml"), NODE(route("two.test:7")));
    await waitFor(() => logs.of("config_applied").length > applied, 5000, "the changed route applied");
    await first.closed;
    expect(logs.of("lifecycle").filter((r) => r.msg === "outbound route changed")).toHaveLength(1);
    await logs.next("session_end", (e) => e.listener === "to-b" && e.end_reason === "listener_removed");
    const second = await app(port, "two");
    expect(await remote.logs.next("decision", (d) => d.target === "two.test:7")).toMatchObject({ decision: "allow" });
    second.s.destroy();

    // Removed: the address is let go.
    writeFileSync(join(dir, "nodes", "node-a.yaml"), "listeners: []\n");
    await waitFor(() => Object.keys(agent.sidecar.outboundAddresses()).length === 0 || undefined, 5000, "the route removed");
    expect(await refusedAt(port)).toBe("ECONNREFUSED");
    expect(logs.of("config_rejected")).toEqual([]);
  });

  it("off loopback, or negotiated, are refused by the control plane with the file's line", async () => {
    const wide = cpDir(NODE(`{ name: wide, listen: "0.0.0.0:15001", remote: "127.0.0.1:9", expect_id: spiffe://a.test/b }`));
    await expect(startControlPlane({ dir: wide, listen: "127.0.0.1:0", log: pino({ level: "silent" }) })).rejects.toThrow(
      /node-a\.yaml:1:\d+: outbound\[0\]\.listen: a pushed outbound route listens on loopback only .* not 0\.0\.0\.0/,
    );
    const negotiated = cpDir(NODE(`{ name: n, listen: "127.0.0.1:0", remote: "127.0.0.1:9", expect_id: spiffe://a.test/b, negotiate: { roles: [reader] } }`));
    await expect(startControlPlane({ dir: negotiated, listen: "127.0.0.1:0", log: pino({ level: "silent" }) })).rejects.toThrow(
      /outbound\[0\]\.negotiate: negotiation is file-only/,
    );
  });

  it("pushed by another server off loopback or out of bounds, are NACKed with each field path", async () => {
    const requests: Array<Record<string, unknown>> = [];
    const outbound = (name: string, body: Record<string, unknown>) => ({
      name,
      type: "outbound",
      outbound: { listen: "127.0.0.1:0", remote: "127.0.0.1:9", expect_id: "spiffe://a.test/b", ...body },
    });
    const server = new grpc.Server();
    server.addService(loadControlService().service, {
      StreamConfig: (call: grpc.ServerDuplexStream<Record<string, unknown>, unknown>) => {
        call.on("data", (req: Record<string, unknown>) => {
          requests.push(req);
          // The shape first (with what may not be pushed), then what the compiler checks across keys.
          if (requests.length === 1)
            call.write({
              version_info: "v-bad",
              nonce: "n1",
              resources: [outbound("wide", { listen: "[::]:15001" }), outbound("many", { transport: "multiplexed", multiplex: { max_streams: 1001 } })],
            });
          if (requests.length === 2) call.write({ version_info: "v-bad-2", nonce: "n2", resources: [outbound("plain", { target: "x.test:1" })] });
        });
      },
    });
    const port = await freePort();
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
    );
    cleanups.push(() => {
      server.forceShutdown();
      return Promise.resolve();
    });
    const { agent, logs } = await sidecar(port);
    const nacked = async (nonce: string) => {
      const nack = await waitFor(() => requests.find((q) => q.response_nonce === nonce), 5000, `the NACK of ${nonce}`);
      const detail = nack.error_detail as { code: number; details: Array<{ kind: string; resource: string; field: string }> };
      expect(detail.code).toBe(3);
      return detail.details.map((d) => `${d.kind}/${d.resource}: ${d.field}`).sort();
    };
    expect(await nacked("n1")).toEqual(["outbound/many: multiplex.max_streams", "outbound/wide: listen"]);
    expect(await nacked("n2")).toEqual(["outbound/plain: transport"]);
    expect(logs.of("config_applied")).toEqual([]);
    expect(agent.sidecar.outboundAddresses()).toEqual({});
  });
});

describe("an outbound route changed in a file", () => {
  it("keeps its fixed port on reload: applied, not refused as a port in use", async () => {
    const remote: Harness = await startHarness(pki, { listenerExtra: "multiplex: true" });
    cleanups.push(() => remote.close());
    const port = await freePort();
    const f = writeFiles({ "cert.pem": allowed.chainPem, "key.pem": allowed.keyPem, "a.pem": pki.a.certPem });
    const yaml = (target: string) => `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
outbound:
  - { name: to-b, listen: "127.0.0.1:${port}", remote: "127.0.0.1:${remote.port}", expect_id: spiffe://a.test/sidecar, transport: multiplexed, target: "${target}" }
policies: {}
admin: { listen: false }
`;
    const file = join(f.dir, "out.yaml");
    writeFileSync(file, yaml("one.test:7"));
    const logs = new MemoryLog();
    const sidecar = new Sidecar(loadConfig(file), { log: logs.log });
    await sidecar.start();
    cleanups.push(() => sidecar.stop(50));
    const first = await app(port, "one");
    writeFileSync(file, yaml("two.test:7"));
    expect(await sidecar.reload()).toBe("applied");
    await first.closed;
    const second = await app(port, "two");
    expect(await remote.logs.next("decision", (d) => d.target === "two.test:7")).toMatchObject({ decision: "allow" });
    second.s.destroy();
  });
});
