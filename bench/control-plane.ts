// npm run bench:control-plane — one control-plane server process holding N sidecar streams (default
// 1,000): time for all to receive and ACK the first configuration, time to push a change to all, and
// the server's memory and CPU per node, and the push latency per node (change written → that node's
// push validated), p50/p99/max. Baseline: the same server holding a single stream, measured in the same
// run, so figures are reported as ratios too. The configuration sets proto3 `optional` fields (listener
// timeouts and max_sessions, limits with a rate burst): before their conversion was fixed, every push of
// it was NACKed.
//
// The clients are parley's own ControlClient, each on its own connection, each feeding a real Sidecar
// through the agent's ConfigSync (validate, apply, bind its listener, ACK), as `parley run --bootstrap`
// does; they share this process, so the push-to-all time includes 1,000 validations and applies on one
// core of the client side.
//
// Revocation: every sidecar then holds one live mTLS session of the same agent, through to a shared
// echo workload; `parley revoke --dir` (dist/cli.js, a child process) writes an entry naming the agent,
// and the figure is the time from spawning it to the last of the N sessions seen closed by its client.
// Baseline: the same with one sidecar, earlier in the run.
import { spawn } from "node:child_process";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { ControlClient } from "../src/control/agent/client.js";
import { ConfigSync } from "../src/control/agent/sync.js";
import { loadBootstrap } from "../src/config/load.js";
import { startEcho } from "../src/demo/echo.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { createLogger, DecisionLog } from "../src/telemetry/log.js";
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
const own = await ca.leaf({ uris: ["spiffe://bench.test/sidecar"], dnsNames: ["localhost"] });
const agent = await ca.leaf({ uris: ["spiffe://bench.test/ns0/agent"] });
const echo = await startEcho("127.0.0.1", 0);
const rules = Array.from({ length: 50 }, (_, i) => `      - { name: r${i}, action: allow, match: [{ path_prefix: spiffe://bench.test/ns${i} }] }`).join("\n");
const shared = (extra: string) => `trust_domains:
  bench.test: { bundle: ca.pem }
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:${(echo.server.address() as { port: number }).port}", policy: main, handshake_timeout: 3s, connect_timeout: 2s, max_sessions: 500 }
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
// A run that fails leaves no server behind.
process.on("exit", () => server.kill());
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

// One bootstrap for every simulated sidecar (the node id is the client's own), their logs discarded.
const bootDir = join(tmpdir(), `parley-bench-cp-boot-${process.pid}`);
mkdirSync(bootDir, { recursive: true });
writeFileSync(join(bootDir, "cert.pem"), own.chainPem);
writeFileSync(join(bootDir, "key.pem"), own.keyPem);
writeFileSync(join(bootDir, "boot.yaml"), `identity: { cert: cert.pem, key: key.pem }\ncontrol_plane: { address: "127.0.0.1:${port}", node_id: bench }\n`);
const bootstrap = loadBootstrap(join(bootDir, "boot.yaml"));
/**
 * The sidecars' log: the last denials and session ends (to say why a session failed), and when each
 * session was ended `revoked` (written synchronously as the sidecar destroys its sockets); the rest is
 * dropped.
 */
const recent: string[] = [];
const revokedEnds: number[] = [];
const quiet = new DecisionLog(
  createLogger("info", {
    write: (line: string) => {
      if (line.includes('"end_reason":"revoked"')) revokedEnds.push(performance.now());
      if (line.includes('"decision":"deny"') || line.includes('"event":"session_end"')) {
        recent.push(line);
        if (recent.length > 20) recent.shift();
      }
    },
  }),
);
const sidecars: Sidecar[] = [];

const clients: ControlClient[] = [];
const versions = new Map<number, string>();
/** When each node validated each version (ms, performance.now()). */
const validatedAt = new Map<string, number[]>();
let nacks = 0;
function connect(i: number): void {
  const sidecar = new Sidecar(undefined, { log: quiet, identity: bootstrap.identity });
  sidecars[i] = sidecar;
  const sync = new ConfigSync(sidecar, bootstrap, quiet);
  const c = new ControlClient({
    address: `127.0.0.1:${port}`,
    node: { id: `node-${i}`, version: "bench" },
    credentials: grpc.credentials.createInsecure(),
    channelOptions: { "grpc.use_local_subchannel_pool": 1 },
    backoff: { initialMs: 200, maxMs: 2000 },
    runningVersion: () => versions.get(i) ?? "",
    onPush: async (v, r) => {
      const answer = await sync.onPush(v, r);
      if (!answer.ok) {
        nacks++;
        return answer;
      }
      versions.set(i, v);
      const at = validatedAt.get(v) ?? [];
      at.push(performance.now());
      validatedAt.set(v, at);
      return answer;
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
/**
 * One live mTLS session of `who` through sidecar `i`, echoed once; resolves to when its client saw it
 * close. On a loaded machine a handshake can outlast the listener's timeout: such a session is opened
 * again (at most 3 tries, each retry counted and reported).
 */
let retries = 0;
async function liveSession(i: number, who: Issued, tries = 3): Promise<{ closed: Promise<number> }> {
  for (let t = 1; ; t++) {
    try {
      return await tryLiveSession(i, who);
    } catch (e) {
      if (t >= tries) throw new Error(`${(e as Error).message}; recent records:\n${recent.join("")}`);
      retries++;
    }
  }
}

async function tryLiveSession(i: number, who: Issued): Promise<{ closed: Promise<number> }> {
  const s: TLSSocket = tlsConnect({
    host: "127.0.0.1",
    port: sidecars[i]!.addresses()["main"]!.port,
    servername: "localhost",
    ca: ca.certPem,
    cert: who.chainPem,
    key: who.keyPem,
  });
  s.on("error", () => {});
  const closed = new Promise<number>((r) => s.once("close", () => r(performance.now())));
  await new Promise<void>((resolve, reject) => {
    s.once("secureConnect", () => s.write("ping"));
    s.once("data", () => resolve());
    s.once("close", () => reject(new Error(`the session through node-${i} closed before its echo`)));
  });
  return { closed };
}

/** Spawns `parley revoke --dir` naming `id`; `t0` is when it was spawned. */
function revoke(name: string, id: string): { t0: number; done: Promise<number> } {
  const t0 = performance.now();
  const args = ["dist/cli.js", "revoke", "--dir", dir, "--name", name, "--reason", "bench", "--until", "1h", "--spiffe-id", id];
  const cli = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "inherit"] });
  const done = new Promise<number>((resolve, reject) =>
    cli.on("close", (code) => (code === 0 ? resolve(performance.now() - t0) : reject(new Error(`parley revoke exited ${code}`)))),
  );
  return { t0, done };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms).unref())]);
}

const pctOf = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b);
  return (q: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN);
};

// A real change (comments do not change the content, hence not the version).
const change = (k: number) => writeFileSync(join(dir, "shared.yaml"), shared(`drain_timeout: ${k}s`));

// Baseline: one stream.
connect(0);
const v0 = await allOn(1, undefined, 10_000, "first node");
const one = procStats(server.pid!);
let t = performance.now();
change(1);
await allOn(1, v0, 10_000, "baseline push");
const pushOneMs = performance.now() - t;
const cpuOnePush = procStats(server.pid!).cpuMs - one.cpuMs;

// Baseline revocation: one sidecar, one live session of another ID.
const baseAgent = await ca.leaf({ uris: ["spiffe://bench.test/ns1/base"] });
const baseClosed = (await liveSession(0, baseAgent)).closed;
const baseRevoke = revoke("bench-base", "spiffe://bench.test/ns1/base");
const revokeOneSeenMs = (await within(baseClosed, 30_000, "baseline revocation")) - baseRevoke.t0;
const revokeOneMs = revokedEnds.at(-1)! - baseRevoke.t0;
await baseRevoke.done;

// N streams.
t = performance.now();
for (let i = 1; i < N; i++) connect(i);
const vAll = await allOn(N, undefined, 180_000, `${N} nodes acked`);
const connectAllMs = performance.now() - t;
const full = procStats(server.pid!);
t = performance.now();
change(2);
const v2 = await allOn(N, vAll, 60_000, "push to all");
const pushAllMs = performance.now() - t;
const latencies = (validatedAt.get(v2) ?? []).map((x) => x - t);
const pct = pctOf(latencies);
const after = procStats(server.pid!);
const streams = (await status(admin)).connected_streams;

// Revocation: one live session of the agent on every sidecar (opened 20 at a time), then the CLI.
const closes: Promise<number>[] = [];
for (let i = 0; i < N; i += 20) {
  const batch = Array.from({ length: Math.min(20, N - i) }, (_, k) => liveSession(i + k, agent));
  closes.push(...(await Promise.all(batch)).map((x) => x.closed));
}
const liveBefore = sidecars.reduce((n, s) => n + s.registry.size, 0);
revokedEnds.length = 0;
const allRevoke = revoke("bench-agent", "spiffe://bench.test/ns0/agent");
const seen = (await within(Promise.all(closes), 120_000, "revocation on all")).map((e) => e - allRevoke.t0);
const revokeCliMs = await allRevoke.done;
const ends = revokedEnds.map((e) => e - allRevoke.t0);
const revokeAllMs = Math.max(...ends);
const seenPct = pctOf(seen);
// When each node applied the version that carried the entry (the last one it validated).
const vRevoke = [...validatedAt.keys()].at(-1)!;
const appliedPct = pctOf((validatedAt.get(vRevoke) ?? []).map((x) => x - allRevoke.t0));
const revokePct = pctOf(ends);
const liveAfter = sidecars.reduce((n, s) => n + s.registry.size, 0);
// The next session of the agent is refused (no echo) on the last sidecar.
const refused = await liveSession(N - 1, agent, 1).then(
  () => false,
  () => true,
);

for (const c of clients) c.stop();
server.kill("SIGTERM");
await Promise.all(sidecars.map((s) => s.stop(0)));
await echo.close();

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
  revocation: {
    live_sessions_before: liveBefore,
    session_open_retries: retries,
    live_sessions_after: liveAfter,
    next_session_refused: refused,
    sessions_ended_revoked: ends.length,
    revoke_to_last_session_ended_ms: Math.round(revokeAllMs),
    revoke_to_session_ended_one_node_ms: Math.round(revokeOneMs),
    all_vs_one: +(revokeAllMs / revokeOneMs).toFixed(1),
    ended_per_node_ms: { p50: revokePct(0.5), p99: revokePct(0.99), max: revokePct(1) },
    seen_closed_by_clients_ms: { p50: seenPct(0.5), max: seenPct(1), one_node: Math.round(revokeOneSeenMs) },
    cli_exit_ms: Math.round(revokeCliMs),
    push_applied_per_node_ms: { p50: appliedPct(0.5), p99: appliedPct(0.99), max: appliedPct(1) },
    target_ms: 2000,
  },
};
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/control-plane.json", JSON.stringify(result, null, 2) + "\n");
console.log(JSON.stringify(result, null, 2));
process.exit(0);
