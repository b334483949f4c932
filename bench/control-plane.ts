// npm run bench:control-plane — one control-plane server process holding N sidecar streams (default
// 1,000): time for all to receive and ACK the first configuration, time to push a change to all, and
// the server's memory and CPU per node, and the push latency per node (change written → that node's
// push validated), p50/p99/max. Baseline: the same server holding a single stream, measured in the same
// run, so figures are reported as ratios too. The configuration sets proto3 `optional` fields (listener
// timeouts and max_sessions, limits with a rate burst): before their conversion was fixed, every push of
// it was NACKed.
//
// The clients are parley's own ControlClient, each on its own connection, each validating every push
// with the sidecar's compiler before it ACKs (as a sidecar does); they share this process, so the
// push-to-all time includes 1,000 validations on one core of the client side.
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthority } from "../src/certs/issue.js";
import { ControlClient } from "../src/control/agent/client.js";
import { compilePush } from "../src/control/agent/validate.js";
import { freePort } from "../testkit/harness.js";

const N = Number(process.env.BENCH_NODES ?? 1000);

async function status(port: number): Promise<{ connected_streams: number; nodes: Array<{ acked_version: string | null; connected: boolean }> }> {
  // A server busy with 1,000 streams may close an idle keep-alive socket as it is reused: ask again.
  for (let i = 0; ; i++) {
    try {
      return (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as never;
    } catch (e) {
      if (i >= 3) throw e;
    }
  }
}

function procStats(pid: number): { rssMiB: number; cpuMs: number } {
  const st = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  const ticks = Number(st[11]) + Number(st[12]); // utime + stime, in clock ticks (100/s)
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) / 1024;
  return { rssMiB: Math.round(rss * 10) / 10, cpuMs: ticks * 10 };
}

async function until(pred: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  while (!(await pred())) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return performance.now() - t0;
}

const dir = join(tmpdir(), `parley-bench-cp-${process.pid}`);
mkdirSync(join(dir, "nodes"), { recursive: true });
const ca = await CertificateAuthority.root({ trustDomain: "bench.test" });
writeFileSync(join(dir, "ca.pem"), ca.certPem);
const rules = Array.from({ length: 50 }, (_, i) => `      - { name: r${i}, action: allow, match: [{ path_prefix: spiffe://bench.test/ns${i} }] }`).join("\n");
const shared = (extra: string) => `trust_domains:
  bench.test: { bundle: ca.pem }
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:9", policy: main, handshake_timeout: 3s, connect_timeout: 2s, max_sessions: 500 }
policies:
  main:
    limits: { max_duration: 1h, rate: { per_second: 50, burst: 100 } }
    rules:
${rules}
${extra}`;
writeFileSync(join(dir, "shared.yaml"), shared(""));

const port = await freePort();
const admin = await freePort();
const server = spawn(process.execPath, ["dist/cli.js", "control-plane", "--dir", dir, "--listen", `127.0.0.1:${port}`, "--admin", `127.0.0.1:${admin}`], {
  stdio: ["ignore", "ignore", "inherit"],
});
await until(
  async () =>
    status(admin).then(
      () => true,
      () => false,
    ),
  10_000,
  "server start",
);
const idle = procStats(server.pid!);

const clients: ControlClient[] = [];
const versions = new Map<number, string>();
/** When each node validated each version (ms, performance.now()). */
const validatedAt = new Map<string, number[]>();
let nacks = 0;
function connect(i: number): void {
  const c = new ControlClient({
    address: `127.0.0.1:${port}`,
    node: { id: `node-${i}`, version: "bench" },
    credentials: grpc.credentials.createInsecure(),
    channelOptions: { "grpc.use_local_subchannel_pool": 1 },
    backoff: { initialMs: 200, maxMs: 2000 },
    runningVersion: () => versions.get(i) ?? "",
    onPush: (v, r) => {
      const c = compilePush(r, v);
      if (!c.ok) {
        nacks++;
        return Promise.resolve({ ok: false, code: 3, message: `rejected ${v}`, issues: c.lines, details: c.details });
      }
      versions.set(i, v);
      const at = validatedAt.get(v) ?? [];
      at.push(performance.now());
      validatedAt.set(v, at);
      return Promise.resolve({ ok: true });
    },
    onUp: () => {},
    onDown: () => {},
  });
  clients.push(c);
  c.start();
}

/** Versions ACKed by connected nodes, counted. */
async function acked(): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const n of (await status(admin)).nodes) if (n.connected && n.acked_version) counts.set(n.acked_version, (counts.get(n.acked_version) ?? 0) + 1);
  return counts;
}
/** Waits until `n` nodes ACKed one version other than `not`; returns it. */
async function allOn(n: number, not: string | undefined, timeoutMs: number, what: string): Promise<string> {
  let v = "";
  await until(
    async () => {
      for (const [version, count] of await acked()) if (version !== not && count >= n) v = version;
      return v !== "";
    },
    timeoutMs,
    what,
  );
  return v;
}
// A real change (comments do not change the content, hence not the version).
const change = (k: number) => writeFileSync(join(dir, "shared.yaml"), shared(`drain_timeout: ${k}s`));

// Baseline: one stream.
connect(0);
const v0 = await allOn(1, undefined, 10_000, "first node");
const one = procStats(server.pid!);
let t = performance.now();
change(1);
const v1 = await allOn(1, v0, 10_000, "baseline push");
const pushOneMs = performance.now() - t;
const cpuOnePush = procStats(server.pid!).cpuMs - one.cpuMs;

// N streams.
t = performance.now();
for (let i = 1; i < N; i++) connect(i);
await allOn(N, undefined, 120_000, `${N} nodes acked`);
const connectAllMs = performance.now() - t;
const full = procStats(server.pid!);
t = performance.now();
change(2);
const v2 = await allOn(N, v1, 60_000, "push to all");
const pushAllMs = performance.now() - t;
const latencies = (validatedAt.get(v2) ?? []).map((x) => x - t).sort((a, b) => a - b);
const pct = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? NaN);
const after = procStats(server.pid!);
const streams = (await status(admin)).connected_streams;

for (const c of clients) c.stop();
server.kill("SIGTERM");

const result = {
  bench: "control-plane",
  date: new Date().toISOString(),
  node: process.version,
  nodes: N,
  connected_streams: streams,
  connect_and_ack_all_ms: Math.round(connectAllMs),
  push_change_to_all_acked_ms: Math.round(pushAllMs),
  push_change_to_one_acked_ms: Math.round(pushOneMs),
  push_latency_per_node_ms: { p50: pct(0.5), p99: pct(0.99), max: pct(1), nodes: latencies.length },
  nacks,
  server_rss_mib: { idle: idle.rssMiB, one_node: one.rssMiB, all_nodes: full.rssMiB, after_push: after.rssMiB },
  server_rss_per_node_kib: Math.round(((full.rssMiB - one.rssMiB) * 1024) / (N - 1)),
  push_all_vs_one: +(pushAllMs / pushOneMs).toFixed(1),
  server_cpu_ms_push_to_all: after.cpuMs - full.cpuMs,
  server_cpu_ms_push_to_one: cpuOnePush,
  server_cpu_ms_per_node_push: +((after.cpuMs - full.cpuMs) / N).toFixed(3),
};
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/control-plane.json", JSON.stringify(result, null, 2) + "\n");
console.log(JSON.stringify(result, null, 2));
process.exit(0);
