// Hostile and careless clients of parley's control plane, over real gRPC: a bad hello ends the stream
// with INVALID_ARGUMENT, nothing a client claims is believed beyond what the server sent, and what the
// server keeps per client (status entries, NACK details) stays bounded while other nodes are served.
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type ControlPlane } from "../src/control/server/plane.js";
import { NodeTable } from "../src/control/server/nodes.js";
import { loadControlService } from "../src/control/wire.js";
import { freePort, tempDir, waitFor } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
beforeAll(async () => {
  pki = await makePki();
});

const POLICY = (who: string) => `
trust_domains:
  a.test: { bundle: a.pem }
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:9", policy: main }
policies:
  main:
    rules:
      - { name: allowed, action: allow, match: [{ id: "spiffe://a.test/${who}" }] }
`;

interface Response {
  version_info: string;
  nonce: string;
}
type Stream = grpc.ClientDuplexStream<Record<string, unknown>, Response>;

let cp: ControlPlane | undefined;
const clients: grpc.Client[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await cp?.close();
  cp = undefined;
});

let clock = Date.now();
async function plane(opts: { helloTimeoutMs?: number; maxNodes?: number } = {}): Promise<{ cp: ControlPlane; dir: string }> {
  const dir = tempDir();
  mkdirSync(join(dir, "nodes"));
  writeFileSync(join(dir, "a.pem"), pki.a.certPem);
  writeFileSync(join(dir, "shared.yaml"), POLICY("alice"));
  cp = await startControlPlane({
    dir,
    listen: "127.0.0.1:0",
    admin: { host: "127.0.0.1", port: 0 },
    log: pino({ level: "silent" }),
    nodes: { ttlMs: 60_000, now: () => clock, ...(opts.maxNodes ? { maxNodes: opts.maxNodes } : {}) },
    ...(opts.helloTimeoutMs ? { helloTimeoutMs: opts.helloTimeoutMs } : {}),
  });
  return { cp, dir };
}

const channels = new Map<string, grpc.Client & { StreamConfig(): Stream }>();

/** A raw client stream on the connection named `conn` (a new one by default); `got` collects what arrives. */
function open(port: number, conn?: string) {
  const Service = loadControlService();
  const make = () =>
    new Service(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 }) as unknown as grpc.Client & {
      StreamConfig(): Stream;
    };
  let client = conn === undefined ? undefined : channels.get(`${port}/${conn}`);
  if (!client) {
    client = make();
    clients.push(client);
    if (conn !== undefined) channels.set(`${port}/${conn}`, client);
  }
  const call = client.StreamConfig();
  const got: Response[] = [];
  let status: grpc.StatusObject | undefined;
  call.on("data", (r: Response) => got.push(r));
  call.on("error", () => undefined);
  call.on("status", (s: grpc.StatusObject) => (status = s));
  return { call, got, status: () => status };
}

async function status(c: ControlPlane): Promise<{ text: string; body: { nodes: Array<Record<string, unknown>>; nodes_total: number } }> {
  const text = await (await fetch(`http://127.0.0.1:${c.adminPort}/status`)).text();
  return { text, body: JSON.parse(text) as { nodes: Array<Record<string, unknown>>; nodes_total: number } };
}

describe("a bad hello", () => {
  const hellos: Array<[string, Record<string, unknown>]> = [
    ["no node", { version_info: "", response_nonce: "" }],
    ["an empty id", { node: { id: "" } }],
    ["a blank id", { node: { id: "   \t" } }],
    ["an id over 256 bytes", { node: { id: "n".repeat(257) } }],
    ["an id with a slash", { node: { id: "../etc/passwd" } }],
    ["an id with a space inside", { node: { id: "node a" } }],
    ["an ACK-shaped first message", { version_info: "v1", response_nonce: "abc" }],
  ];
  for (const [what, hello] of hellos) {
    it(`${what}: INVALID_ARGUMENT, the stream ends, nothing is kept`, async () => {
      const { cp } = await plane();
      const c = open(cp.port);
      c.call.write(hello);
      const s = await waitFor(c.status, 5000, "status");
      expect(s.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(s.details).toMatch(/node\.id/);
      expect(c.got).toEqual([]);
      expect(cp.server.connectedStreams).toBe(0);
      expect((await status(cp)).body.nodes).toEqual([]);
    });
  }

  it("an id with spaces around it is trimmed and served", async () => {
    const { cp } = await plane();
    const c = open(cp.port);
    c.call.write({ node: { id: "  node-a  " } });
    await waitFor(() => c.got[0], 5000, "push");
    expect((await status(cp)).body.nodes.map((n) => n.node_id)).toEqual(["node-a"]);
  });

  it("no hello at all: the stream ends after the hello timeout", async () => {
    const { cp } = await plane({ helloTimeoutMs: 200 });
    const c = open(cp.port);
    expect((await waitFor(c.status, 5000, "status")).code).toBe(grpc.status.DEADLINE_EXCEEDED);
  });
});

describe("what a client claims", () => {
  it("an ACK counts only for the version sent on that stream with that nonce", async () => {
    const { cp } = await plane();
    const c = open(cp.port);
    c.call.write({ node: { id: "node-a" }, version_info: "never-sent" });
    const push = await waitFor(() => c.got[0], 5000, "push");
    const node = async () => (await status(cp)).body.nodes[0]!;
    expect(await node()).toMatchObject({ running_version: "never-sent", acked_version: null });
    c.call.write({ version_info: "forged", response_nonce: push.nonce });
    c.call.write({ version_info: push.version_info, response_nonce: "not-the-nonce" });
    await waitFor(() => cp.server.nodes.list()[0]!.last_seen, 5000, "answers read");
    expect((await node()).acked_version).toBeNull();
    c.call.write({ version_info: push.version_info, response_nonce: push.nonce });
    await waitFor(() => cp.server.nodes.list()[0]!.acked_version === push.version_info || undefined, 5000, "ACK");
  });
});

describe("bounded state under 500 hostile nodes", () => {
  it("the control plane's RSS, status body and NACK details stay bounded; a good node is still served", async () => {
    const dir = tempDir();
    mkdirSync(join(dir, "nodes"));
    writeFileSync(join(dir, "a.pem"), pki.a.certPem);
    writeFileSync(join(dir, "shared.yaml"), POLICY("alice"));
    const [port, admin] = [await freePort(), await freePort()];
    // A heap of 128 MiB: keeping what the clients send (~55 MiB of text, twice that in memory) would not fit.
    const child = spawn(
      process.execPath,
      ["--max-old-space-size=128", "dist/cli.js", "control-plane", "--dir", dir, "--listen", `127.0.0.1:${port}`, "--admin", `127.0.0.1:${admin}`],
      {
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    let logged = 0;
    child.stdout.on("data", (b: Buffer) => (logged += b.length));
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))![1]) * 1024;
    const getStatus = async () => {
      const text = await (await fetch(`http://127.0.0.1:${admin}/status`)).text();
      return { text, body: JSON.parse(text) as { nodes: Array<Record<string, unknown>>; nodes_total: number } };
    };
    try {
      await waitFor(() => logged > 0 || undefined, 10_000, "control plane ready");
      const good = open(port);
      good.call.write({ node: { id: "good" } });
      const first = await waitFor(() => good.got[0], 5000, "first push");
      const rss0 = rss();
      // 500 nodes over 25 connections: 256-byte ids, 1 KiB claims, and a 110 KiB NACK each.
      const huge = Array.from({ length: 100 }, (_, i) => `issue ${i}: ${"x".repeat(1024)}`);
      // In batches of 50 (all stay connected): on a loaded machine 500 hellos at once can outlast the
      // server's 10 s hello timeout.
      const hostile: Array<ReturnType<typeof open>> = [];
      for (let batch = 0; batch < 10; batch++) {
        const streams = Array.from({ length: 50 }, (_, j) => {
          const i = batch * 50 + j;
          const c = open(port, `conn-${i % 25}`);
          c.call.write({
            node: { id: `h${i}-${"n".repeat(250 - String(i).length)}`, cluster: "c".repeat(1024), parley_version: "v".repeat(1024) },
            version_info: "x".repeat(1024),
          });
          return c;
        });
        for (const c of streams) {
          const push = await waitFor(() => c.got[0], 60_000, "hostile push");
          c.call.write({ version_info: "", response_nonce: push.nonce, error_detail: { code: 3, message: "m".repeat(10_000), issues: huge } });
        }
        hostile.push(...streams);
      }
      let nacked = 0;
      const poll = setInterval(() => void getStatus().then((s) => (nacked = s.body.nodes.filter((n) => n.last_nack).length)), 200);
      await waitFor(() => nacked === 500 || undefined, 30_000, "500 NACKs").finally(() => clearInterval(poll));
      const { text, body } = await getStatus();
      const grown = rss() - rss0;
      expect(child.exitCode).toBeNull();
      expect(body.nodes_total).toBe(501);
      const nack = body.nodes.find((n) => n.node_id !== "good")!.last_nack as { issues: string[]; issue_count: number; message: string };
      expect(nack.issue_count).toBe(100);
      expect(nack.issues.length).toBeLessThanOrEqual(5);
      for (const l of nack.issues) expect(Buffer.byteLength(l)).toBeLessThanOrEqual(256);
      expect(Buffer.byteLength(nack.message)).toBeLessThanOrEqual(512);
      // Unbounded, one node's entry would be ~130 KiB (55 MiB in all); bounded it is under 4 KiB.
      expect(Buffer.byteLength(text)).toBeLessThan(501 * 4096);
      expect(rss()).toBeLessThan(320 * 1024 * 1024);
      // Nor does the log grow with what the clients sent: well under 130 KiB a node.
      expect(logged).toBeLessThan(500 * 8192);
      console.log(
        `500 hostile nodes: control-plane RSS +${(grown / 1048576).toFixed(1)} MiB, /status ${(text.length / 1024).toFixed(0)} KiB, log ${(logged / 1024).toFixed(0)} KiB`,
      );

      // The good node is served a change while they are all connected.
      writeFileSync(join(dir, "shared.yaml"), POLICY("bob"));
      const second = await waitFor(() => good.got[1], 10_000, "second push");
      expect(second.version_info).not.toBe(first.version_info);
    } finally {
      child.kill();
    }
  }, 180_000);

  it("disconnected nodes expire after the TTL", async () => {
    const { cp } = await plane();
    const c = open(cp.port);
    c.call.write({ node: { id: "gone" } });
    await waitFor(() => c.got[0], 5000, "push");
    c.call.cancel();
    await waitFor(() => cp.server.connectedStreams === 0 || undefined, 5000, "closed");
    expect((await status(cp)).body.nodes.map((n) => n.node_id)).toEqual(["gone"]);
    clock += 60_001;
    expect((await status(cp)).body.nodes).toEqual([]);
  });
});

describe("the node table", () => {
  it("holds at most maxNodes: the oldest disconnected entry makes room; when all are connected a new node is refused", () => {
    let now = 0;
    const t = new NodeTable({ maxNodes: 2, ttlMs: 1000, now: () => now });
    expect(t.opened("a", { peer: "p" })).toBe(true);
    now = 1;
    expect(t.opened("b", { peer: "p" })).toBe(true);
    expect(t.opened("c", { peer: "p" })).toBe(false);
    t.closed("a");
    expect(t.opened("c", { peer: "p" })).toBe(true);
    expect(t.list().map((n) => n.node_id)).toEqual(["b", "c"]);
    for (let i = 0; i < 150; i++) t.refused({ node_id: `x${i}`, peer: "p", peer_id: null, rule: "r", message: "m" });
    expect(t.recentRefusals()).toHaveLength(100);
    expect(t.recentRefusals()[0]!.node_id).toBe("x50");
  });

  it("a many-stream flood is refused with RESOURCE_EXHAUSTED once the table is full of connected nodes", async () => {
    const { cp } = await plane({ maxNodes: 3 });
    const ok = [0, 1, 2].map((i) => {
      const c = open(cp.port);
      c.call.write({ node: { id: `n${i}` } });
      return c;
    });
    for (const c of ok) await waitFor(() => c.got[0], 5000, "push");
    const extra = open(cp.port);
    extra.call.write({ node: { id: "n3" } });
    expect((await waitFor(extra.status, 5000, "status")).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });
});
