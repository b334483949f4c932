// A listener's `multiplex` delivered by a control plane over real gRPC: served by parley's control
// plane from its node files and put in force by the sidecar (HTTP/2 CONNECT streams served as sessions,
// checked with a bare node:http2 client); turned off live (the multiplexed connection gets GOAWAY and
// drains, its open stream going on; new connections get the workload's ALPN); bounds changed live
// (new connections only); and bad values NACKed with the field path by the sidecar.
import { mkdirSync, writeFileSync } from "node:fs";
import type { ClientHttp2Session } from "node:http2";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { startControlPlane, type ControlPlane } from "../src/control/server/plane.js";
import { loadControlService } from "../src/control/wire.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import { dialTls, freePort, MemoryLog, startBootstrapped, tempDir, waitFor, type Controlled } from "../testkit/harness.js";
import { echoed, h2Peer, openConnect } from "../testkit/h2peer.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let allowed: Issued;
beforeAll(async () => {
  pki = await makePki();
  allowed = await pki.leaf(pki.a, "spiffe://a.test/allowed");
});

const SHARED = `
trust_domains:
  a.test: { bundle: a.pem }
policies:
  main:
    default: deny
    rules:
      - { name: allowed, action: allow, match: [{ id: spiffe://a.test/allowed }] }
`;

const NODE = (upstream: number, multiplex?: string) => `
listeners:
  - name: main
    listen: "127.0.0.1:0"
    upstream: "127.0.0.1:${upstream}"
    policy: main
${multiplex === undefined ? "" : `    multiplex: ${multiplex}\n`}`;

interface Rig {
  cpDir: string;
  echo: EchoServer;
  agent: Controlled;
  logs: MemoryLog;
  port(): number;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A sidecar of node `node-a`, bootstrapped to the control plane at `cpPort`. */
async function sidecar(dir: string, cpPort: number): Promise<{ agent: Controlled; logs: MemoryLog }> {
  const started = await startBootstrapped(dir, cpPort, pki.server);
  cleanups.push(() => started.agent.stop(50));
  return started;
}

/** parley's own control plane serving `nodes/node-a.yaml` with `multiplex`, and a sidecar it configured. */
async function rig(multiplex: string | undefined): Promise<Rig> {
  const dir = tempDir();
  const cpDir = join(dir, "cp");
  mkdirSync(join(cpDir, "nodes"), { recursive: true });
  const echo = await startEcho("127.0.0.1", 0);
  cleanups.push(() => echo.close());
  const upstream = (echo.server.address() as { port: number }).port;
  writeFileSync(join(cpDir, "a.pem"), pki.a.certPem);
  writeFileSync(join(cpDir, "shared.yaml"), SHARED);
  writeFileSync(join(cpDir, "nodes", "node-a.yaml"), NODE(upstream, multiplex));
  const cp: ControlPlane = await startControlPlane({ dir: cpDir, listen: "127.0.0.1:0", log: pino({ level: "silent" }), settleMs: 50 });
  cleanups.push(() => cp.close());
  const { agent, logs } = await sidecar(dir, cp.port);
  await logs.next("config_applied");
  return {
    cpDir,
    echo,
    agent,
    logs,
    port: () => agent.sidecar.addresses()["main"]!.port,
  };
}

/** Rewrites the node file and waits for the sidecar to apply (and so ACK) the push it causes. */
async function push(r: Rig, multiplex: string | undefined): Promise<void> {
  const applied = r.logs.of("config_applied").length;
  writeFileSync(join(r.cpDir, "nodes", "node-a.yaml"), NODE((r.echo.server.address() as { port: number }).port, multiplex));
  await waitFor(() => r.logs.of("config_applied").length > applied, 5000, "the push applied");
}

const h2 = (port: number) => h2Peer(port, pki.a.certPem, allowed);
const open = (session: ClientHttp2Session) => openConnect(session);

/** The ALPN protocol the listener selects for a client offering h2 first, then http/1.1. */
async function alpnFor(port: number): Promise<string | false | null> {
  const s = await dialTls(port, pki, allowed, { ALPNProtocols: ["h2", "http/1.1"] });
  const chosen = s.alpnProtocol;
  s.destroy();
  return chosen;
}

describe("multiplex from a control plane", () => {
  it("pushed on: a CONNECT stream is a session; pushed off: GOAWAY, the stream drains, h2 is the workload's", async () => {
    const r = await rig("{ max_streams: 4, idle_timeout: 1m }");
    expect(r.agent.sidecar.config.listeners[0]!.multiplex).toEqual({ maxStreams: 4, idleTimeoutMs: 60_000 });
    const c = await h2(r.port());
    let goaway: number | undefined;
    c.on("goaway", (code: number) => (goaway = code));
    const closed = new Promise<void>((resolve) => c.once("close", resolve));
    try {
      // The server's SETTINGS carry the pushed bound.
      await waitFor(() => c.remoteSettings.maxConcurrentStreams === 4 || undefined, 3000, "the server's SETTINGS");
      const before = r.echo.accepted();
      const o = await open(c);
      expect(o.headers[":status"]).toBe(200);
      await echoed(o, "over a stream");
      expect(r.echo.accepted()).toBe(before + 1);
      const decision = await r.logs.next("decision", (d) => d.target === "echo.test:7");
      expect(decision).toMatchObject({ decision: "allow", alpn: "h2", peer_id: "spiffe://a.test/allowed" });

      await push(r, undefined);
      expect(r.agent.sidecar.config.listeners[0]!.multiplex).toBeUndefined();
      // GOAWAY NO_ERROR: no new streams on this connection; the open one goes on (draining).
      await waitFor(() => goaway !== undefined || undefined, 3000, "GOAWAY");
      expect(goaway).toBe(0);
      await echoed(o, ", still served");
      // New connections: h2 is no longer taken, the workload's ALPN is selected.
      expect(await alpnFor(r.port())).toBe("http/1.1");
      // The drained connection closes once its last stream ends; the session ends completed.
      o.stream.end();
      await closed;
      const end = await r.logs.next("session_end", (e) => e.session_id === decision.session_id);
      expect(end).toMatchObject({ end_reason: "completed" });
    } finally {
      c.destroy();
    }
  });

  it("pushed on later: h2 becomes multiplexed; changed bounds apply to new connections", async () => {
    const r = await rig(undefined);
    expect(await alpnFor(r.port())).toBe("http/1.1");
    await push(r, "true");
    expect(await alpnFor(r.port())).toBe("h2");
    const first = await h2(r.port());
    try {
      await waitFor(() => first.remoteSettings.maxConcurrentStreams === 100 || undefined, 3000, "the default bound");
      await push(r, "{ max_streams: 2 }");
      const second = await h2(r.port());
      try {
        await waitFor(() => second.remoteSettings.maxConcurrentStreams === 2 || undefined, 3000, "the new bound");
        // The connection accepted before keeps its bound and serves on.
        expect(first.remoteSettings.maxConcurrentStreams).toBe(100);
        const o = await open(first);
        expect(o.headers[":status"]).toBe(200);
        await echoed(o, "old connection");
        o.stream.destroy();
      } finally {
        second.destroy();
      }
    } finally {
      first.destroy();
    }
  });
});

describe("multiplex values a control plane must not push", () => {
  it("are NACKed with code 3 and each field path; nothing is applied", async () => {
    const requests: Array<Record<string, unknown>> = [];
    const listener = (name: string, multiplex: Record<string, unknown>) => ({
      name,
      type: "listener",
      listener: { listen: "127.0.0.1:0", upstream: "127.0.0.1:9", policy: "main", multiplex },
    });
    const server = new grpc.Server();
    server.addService(loadControlService().service, {
      StreamConfig: (call: grpc.ServerDuplexStream<Record<string, unknown>, unknown>) => {
        call.on("data", (req: Record<string, unknown>) => {
          requests.push(req);
          if (requests.length > 1) return;
          call.write({
            version_info: "v-bad",
            nonce: "n1",
            resources: [
              { name: "main", type: "policy", policy: { default: "deny" } },
              listener("zero", { max_streams: 0 }),
              listener("many", { max_streams: 1001 }),
              listener("never", { idle_timeout: "0s" }),
              listener("month", { idle_timeout: "25d" }),
              listener("soon", { idle_timeout: "soon" }),
            ],
          });
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
    const { logs } = await sidecar(tempDir(), port);
    const nack = await waitFor(() => requests.find((q) => q.response_nonce === "n1"), 5000, "the NACK");
    expect(nack.version_info).toBe("");
    const detail = nack.error_detail as {
      code: number;
      details: Array<{ kind: string; resource: string; field: string; message: string }>;
      issue_count: number;
    };
    expect(detail.code).toBe(3);
    expect(detail.details.map((d) => `${d.kind}/${d.resource}: ${d.field}`)).toEqual([
      "listener/zero: multiplex.max_streams",
      "listener/many: multiplex.max_streams",
      "listener/never: multiplex.idle_timeout",
      "listener/month: multiplex.idle_timeout",
      "listener/soon: multiplex.idle_timeout",
    ]);
    expect(detail.details[2]!.message).toMatch(/1ms to 24h/);
    expect(detail.issue_count).toBe(5);
    expect(logs.of("config_applied")).toEqual([]);
  });
});
