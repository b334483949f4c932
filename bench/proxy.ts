// npm run bench — parley against a bare Node TLS pipe (the floor for any Node proxy) and, when it is
// installed, nginx's stream module doing mTLS termination, all in front of the same echo workload,
// with the same certificates, driven by one load generator in alternating rounds. Reports medians,
// ratios parley/pipe and parley/nginx, and each server's own CPU (utime+stime from /proc) per unit
// of work, which stays steady where client-side rates are bounded by the load generator itself.
//
// nginx: `apt-get install nginx libnginx-mod-stream` (Debian); skipped with a notice when absent.
// Sizes: BENCH_SECONDS (per measurement, default 5), BENCH_ROUNDS (2), BENCH_BULK_MIB (512 each way),
// BENCH_IDLE (10000 idle sessions, fewer if the descriptor limit cannot hold them). While working on one
// figure, BENCH_TARGETS (parley,pipe,nginx) and BENCH_FIGURES (new,resumed,rt,bulk,idle,latency,
// bulk-limits,idle-mix,sweep) run a subset. latency: new-session time to first echoed byte at 1, 8 and 32 concurrent (bench/latency.ts).
// Then parley and the pipe are also run at once, connections alternating, for BENCH_WINDOWS (5)
// windows: a steadier ratio of CPU per new session (0 skips it).
// First-seen certificates: parley and the pipe at once again, CPU per new session with one client
// certificate (verified once, then cached) and with BENCH_SVID_CERTS (1000) distinct ones, each
// presented once to each, for BENCH_SVID_WINDOWS (3) windows of each kind (0 skips it); and the CPU
// of verifying a chain that spends the path-building budget, in this process.
// bulk-limits: CPU per GiB of parley under a realistic rule and under a bandwidth limit that does not
// bind, against the pipe, interleaved over BENCH_BULK_ROUNDS (5) rounds, with the Mark-Compacts per
// GiB each server's V8 reports (--trace-gc: a count the machine's load does not move); idle-mix: RSS per idle
// session of parley and the pipe, BENCH_IDLE_MIX (5000) sessions, BENCH_IDLE_ROUNDS (3) rounds.
// sweep: CPU per new and per resumed session and round-trip p99 of parley and the pipe at once at 1, 4,
// 16 and 64 concurrent (bench/sweep.ts); run alone, it replaces only the sweep in bench/results/proxy.json.
// Profiling: BENCH_PARLEY_NODE_OPTIONS is passed to parley's node, e.g. --perf-basic-prof for perf.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { connect, createSecureContext, type ConnectionOptions, type SecureContext, type TLSSocket } from "node:tls";
import { MALLOC_TUNABLES } from "../src/app/malloc.js";
import { CertificateAuthority } from "../src/certs/issue.js";
import { LATENCY_SKIPPED, latencyVerdict, newSessionLatency } from "./latency.js";
import { startEcho } from "../src/demo/echo.js";
import { TrustDomain } from "../src/spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../src/spiffe/x509bundle.js";
import { derFromPem } from "../src/spiffe/x509cert.js";
import { SvidVerifier } from "../src/spiffe/x509svid.js";
import { freePort, tempDir } from "../testkit/harness.js";
import { bulkEcho, endAndClose, median, newSessionLoad, openIdle, payload64, quantile, roundTrip, roundTripLatencies } from "./load.js";
import { cpuMsByThread, cpuMsOf, processTree, rssKiBOf } from "./procstat.js";
import { printSweep, sweep, SWEEP_CONCURRENCY, type Kind, type PairFigures, type Sweep } from "./sweep.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const BULK_MIB = Number(process.env.BENCH_BULK_MIB ?? 512);
const CONCURRENCY = 16;
const TARGETS = (process.env.BENCH_TARGETS ?? "parley,pipe,nginx").split(",");
// BENCH_SERVER_ENV: environment for parley and the pipe alike, not the load generator (an allocator:
// LD_PRELOAD=…libjemalloc.so.2). By default the malloc tunables parley gives itself (src/app/malloc.ts),
// given to the pipe as well, so that the two are compared on the same allocator settings.
const SERVER_ENV = process.env.BENCH_SERVER_ENV ?? `GLIBC_TUNABLES=${MALLOC_TUNABLES}`;
const ALL_FIGURES = "new,resumed,rt,bulk,idle,latency,bulk-limits,idle-mix,sweep";
const FIGURES = new Set((process.env.BENCH_FIGURES ?? ALL_FIGURES).split(","));

// Each idle session holds a descriptor in the load generator, two in the proxy and one in the echo
// workload (which runs in this process): without enough, the run would stall rather than fail.
const fdLimit = Number(/Max open files\s+(\d+)/.exec(readFileSync("/proc/self/limits", "utf8"))?.[1] ?? Infinity);
const fdRoom = Math.floor((fdLimit - 1000) / 2 / 1000) * 1000;
const IDLE = Number(process.env.BENCH_IDLE ?? Math.min(10_000, fdRoom));
if (IDLE > fdRoom) {
  console.error(`BENCH_IDLE=${IDLE} needs at least ${2 * IDLE + 1000} open files; the limit is ${fdLimit} (raise it: ulimit -n 65536)`);
  process.exit(2);
}
if (IDLE < 10_000) console.log(`idle sessions: ${IDLE}, not 10,000: the open-files limit (${fdLimit}) holds no more (ulimit -n 65536 to raise it)`);

const dir = tempDir();
const ca = await CertificateAuthority.root({ trustDomain: "bench.test" });
const server = await ca.leaf({ uris: ["spiffe://bench.test/sidecar"], dnsNames: ["localhost"] });
const client = await ca.leaf({ uris: ["spiffe://bench.test/ns/ns7/sa/svc7"] });
const f = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};
const files = { cert: f("cert.pem", server.chainPem), key: f("key.pem", server.keyPem), ca: f("ca.pem", ca.certPem) };
const echo = await startEcho("127.0.0.1", 0);
const upstream = (echo.server.address() as { port: number }).port;

/** The bench client's limits by parley variant: a realistic rule, and a bandwidth far above the link. */
const BENCH_LIMITS = {
  parley: "{ idle_timeout: 5m, rate: { per_second: 100000, burst: 100000 } }",
  "parley-limits": "{ idle_timeout: 1m, rate: { per_second: 100000, burst: 100000 }, max_sessions: 10000 }",
  "parley-bandwidth": "{ idle_timeout: 1m, rate: { per_second: 100000, burst: 100000 }, max_sessions: 10000, bandwidth: 100GiB/s }",
  "parley-none": "{}",
} as const;
type Variant = keyof typeof BENCH_LIMITS;

/** A realistic parley configuration: 1,000 rules, decision log to a file, limits on. */
function parleyConfig(port: number, variant: Variant = "parley"): string {
  const rules = Array.from({ length: 1000 }, (_, i) =>
    i % 10 === 0
      ? `      - { name: deny-${i}, action: deny, match: [{ id: spiffe://bench.test/ns/ns${i % 100}/sa/banned${i} }] }`
      : `      - { name: allow-${i}, action: allow, match: [{ id: spiffe://bench.test/ns/ns${i % 100}/sa/app${i} }], limits: { idle_timeout: 5m, rate: { per_second: 100000, burst: 100000 } } }`,
  ).join("\n");
  return `identity: { cert: ${files.cert}, key: ${files.key} }
trust_domains: { bench.test: { bundle: ${files.ca} } }
listeners:
  - { name: main, listen: "127.0.0.1:${port}", upstream: "127.0.0.1:${upstream}", policy: main, max_sessions: 100000 }
policies:
  main:
    rules:
      - { name: bench-client, action: allow, match: [{ id: spiffe://bench.test/ns/ns7/sa/svc7 }], limits: ${BENCH_LIMITS[variant]} }
${rules}
limits: { max_sessions: 100000, max_handshakes: 4096, max_handshakes_per_source: 4096 }
log: { deny_cap: false }
admin: { listen: false }
`;
}

function nginxConfig(port: number): string {
  const modules = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"].find(existsSync);
  return `${modules ? `load_module ${modules};\n` : ""}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log;
events { worker_connections 20000; }
stream {
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${files.cert};
    ssl_certificate_key ${files.key};
    ssl_client_certificate ${files.ca};
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    proxy_pass 127.0.0.1:${upstream};
  }
}
`;
}

interface Target {
  name: "parley" | "pipe" | "pipe-again" | "nginx" | Exclude<Variant, "parley">;
  port: number;
  proc: ChildProcess;
  /** The file V8's --trace-gc lines go to, when the target was started with it (bulk-limits). */
  gcLog?: string;
}

/** Waits up to ~30 s: four parley processes loading 1,000 rules at once on loaded cores take a while. */
async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: "127.0.0.1", port, rejectUnauthorized: false });
      s.on("error", () => resolve(false));
      s.on("secureConnect", () => {
        s.destroy();
        resolve(true);
      });
      s.on("close", () => resolve(true));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listening on ${port}`);
}

/** Starts a target; with traceGc, parley or the pipe writes V8's --trace-gc lines to its stdout file. */
async function start(name: Target["name"], traceGc = false): Promise<Target | undefined> {
  const port = await freePort();
  const trace = traceGc ? "--trace-gc" : "";
  let proc: ChildProcess;
  let gcLog: string | undefined;
  if (name === "parley" || name in BENCH_LIMITS) {
    const cfg = f(`${name}.yaml`, parleyConfig(port, name as Variant));
    const log = f(`${name}.log`, "");
    gcLog = traceGc ? log : undefined;
    proc = spawn(
      "bash",
      [
        "-c",
        `exec env ${SERVER_ENV} "${process.execPath}" ${trace} ${process.env.BENCH_PARLEY_NODE_OPTIONS ?? ""} dist/cli.js run --config "${cfg}" --no-watch > "${log}"`,
      ],
      { stdio: "ignore" },
    );
  } else if (name === "pipe" || name === "pipe-again") {
    gcLog = traceGc ? f(`${name}.log`, "") : undefined;
    const args = [...(traceGc ? [trace] : []), "bench/pipe.mjs", String(port), String(upstream), files.cert, files.key, files.ca];
    proc = spawn("bash", ["-c", `exec env ${SERVER_ENV} "${process.execPath}" ${args.map((a) => `"${a}"`).join(" ")} > "${gcLog ?? "/dev/null"}"`], {
      stdio: "ignore",
    });
  } else {
    const bin = ["/usr/sbin/nginx", "/usr/bin/nginx"].find(existsSync);
    if (!bin) {
      console.log("nginx is not installed: skipping it (apt-get install nginx libnginx-mod-stream)");
      return undefined;
    }
    const conf = f("nginx.conf", nginxConfig(port));
    proc = spawn(bin, ["-c", conf, "-p", dir], { stdio: "ignore" });
  }
  await waitPort(port);
  return { name, port, proc, ...(gcLog ? { gcLog } : {}) };
}

/** Mark-Compacts V8 reported in a --trace-gc file past `from` (its length then). */
function markCompacts(file: string | undefined, from: number): number {
  return file
    ? (readFileSync(file, "utf8")
        .slice(from)
        .match(/Mark-Compact/g)?.length ?? 0)
    : NaN;
}

const cpuMs = (pid: number): number => cpuMsOf(processTree(pid));
const rssKiB = (pid: number): number => rssKiBOf(processTree(pid));

// One client context for every connection: building it per connection (parsing the key and
// certificates) would make the load generator, not the servers, the bound.
const clientContext = createSecureContext({ ca: ca.certPem, cert: client.chainPem, key: client.keyPem });
const tlsOpts = (port: number, extra: Partial<ConnectionOptions> = {}): ConnectionOptions => ({
  host: "127.0.0.1",
  port,
  servername: "localhost",
  secureContext: clientContext,
  ...extra,
});

function dial(port: number, extra: Partial<ConnectionOptions> = {}): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = connect(tlsOpts(port, extra));
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

/** Full handshake (or resumed), 64-byte echo, close; at fixed concurrency for SECONDS. */
async function newSessions(t: Target, resume: boolean): Promise<{ perSec: number; cpuUsPerSession: number }> {
  return (await newSessionsAcross([t], resume))[0]!;
}

/**
 * New sessions at fixed concurrency for SECONDS, connections dealt round robin over `targets` (one
 * target: the turn-based figure; several: served at once, so that whatever else the machine does
 * weighs on each alike). Rate and server CPU per session, per target.
 */
async function newSessionsAcross(targets: Target[], resume: boolean, concurrency = CONCURRENCY): Promise<{ perSec: number; cpuUsPerSession: number }[]> {
  const cpu0 = targets.map((t) => cpuMs(t.proc.pid!));
  const opener = () => {
    const sessions: (Buffer | undefined)[] = targets.map(() => undefined);
    return async (i: number) => {
      const s = await dial(targets[i]!.port, resume && sessions[i] ? { session: sessions[i] } : {});
      if (resume) s.once("session", (sess: Buffer) => (sessions[i] = sess));
      return s;
    };
  };
  const { done, errors } = await newSessionLoad({ targets: targets.length, concurrency, seconds: SECONDS, opener });
  const total = done.reduce((a, b) => a + b, 0);
  if (errors > total / 100) console.log(`  ${targets.map((t) => t.name).join("+")}: ${errors} errors in new sessions`);
  return targets.map((t, i) => ({ perSec: done[i]! / SECONDS, cpuUsPerSession: ((cpuMs(t.proc.pid!) - cpu0[i]!) * 1000) / Math.max(1, done[i]!) }));
}

/** Request/response on long-lived sessions: throughput and latency percentiles. */
async function roundTrips(t: Target): Promise<{ perSec: number; p50: number; p99: number; p999: number; cpuUsPerRt: number }> {
  const sessions = await Promise.all(Array.from({ length: CONCURRENCY }, () => dial(t.port)));
  const cpu0 = cpuMs(t.proc.pid!);
  const lat = await roundTripLatencies(sessions, SECONDS);
  const cpu = cpuMs(t.proc.pid!) - cpu0;
  for (const s of sessions) s.destroy();
  const q = (p: number) => quantile(lat, p);
  return { perSec: lat.length / SECONDS, p50: q(0.5), p99: q(0.99), p999: q(0.999), cpuUsPerRt: (cpu * 1000) / lat.length };
}

/** Round trips on `concurrency` long-lived sessions to each target, all loops at once: latencies per target. */
async function roundTripsAcross(targets: Target[], concurrency: number): Promise<number[][]> {
  const sessions = await Promise.all(targets.map((t) => Promise.all(Array.from({ length: concurrency }, () => dial(t.port)))));
  const lat = await Promise.all(sessions.map((ss) => roundTripLatencies(ss, SECONDS)));
  for (const s of sessions.flat()) s.destroy();
  return lat;
}

/** One window of the sweep: parley and the pipe at once. */
async function measurePair(pair: Target[], kind: Kind, concurrency: number): Promise<PairFigures> {
  if (kind === "rt") {
    const [p, q] = await roundTripsAcross(pair, concurrency);
    return {
      parley: quantile(p!, 0.99),
      pipe: quantile(q!, 0.99),
      extra: { parley_p50_ms: quantile(p!, 0.5), pipe_p50_ms: quantile(q!, 0.5), parley_per_s: p!.length / SECONDS, pipe_per_s: q!.length / SECONDS },
    };
  }
  const [p, q] = await newSessionsAcross(pair, kind === "resumed", concurrency);
  return { parley: p!.cpuUsPerSession, pipe: q!.cpuUsPerSession, extra: { parley_per_s: p!.perSec, pipe_per_s: q!.perSec } };
}

/** One session, BULK_MIB each way at once; MB/s, server CPU per GiB and (traced) Mark-Compacts per GiB. */
interface BulkFigures {
  readonly mbPerSec: number;
  readonly cpuMsPerGiB: number;
  readonly markCompactsPerGiB: number;
  /** CPU per GiB by thread kind (main, v8, libuv, other) and user/system, e.g. `main.sys`. */
  readonly threadMsPerGiB: Record<string, number>;
}

/**
 * One session through `t` for bulk transfers in slices: each `slice(bytes)` sends that many bytes and
 * waits for their echo, adding its time and the server's CPU to the totals `figures()` reports. Slices
 * of several servers' sessions can be interleaved, so that each sees the same moments of the machine.
 */
async function bulkSession(t: Target) {
  const s = await dial(t.port);
  const send = bulkEcho(s);
  const pid = t.proc.pid!;
  let bytes = 0;
  let secs = 0;
  let cpu = 0;
  let gcs = 0;
  const threads: Record<string, number> = {};
  return {
    async slice(n: number): Promise<void> {
      const gc0 = t.gcLog ? readFileSync(t.gcLog, "utf8").length : 0;
      const cpu0 = cpuMs(pid);
      const threads0 = cpuMsByThread(processTree(pid));
      secs += await send(n);
      cpu += cpuMs(pid) - cpu0;
      for (const [k, ms] of Object.entries(cpuMsByThread(processTree(pid)))) threads[k] = (threads[k] ?? 0) + ms - (threads0[k] ?? 0);
      gcs += markCompacts(t.gcLog, gc0);
      bytes += 2 * n;
    },
    figures(): BulkFigures {
      s.destroy();
      const gib = bytes / 1024 ** 3;
      const threadMsPerGiB = Object.fromEntries(Object.entries(threads).map(([k, ms]) => [k, Math.round(ms / gib)]));
      return { mbPerSec: bytes / 1e6 / secs, cpuMsPerGiB: cpu / gib, markCompactsPerGiB: gcs / gib, threadMsPerGiB };
    },
  };
}

/** BULK_MIB each way through one session of `t`. */
async function bulk(t: Target): Promise<BulkFigures> {
  const session = await bulkSession(t);
  await session.slice(BULK_MIB * 1024 * 1024);
  return session.figures();
}

/** RSS per idle established session, IDLE sessions open at once. */
async function idleMemory(t: Target, sessions = IDLE): Promise<{ kibPerSession: number }> {
  const before = rssKiB(t.proc.pid!);
  const held = await openIdle(sessions, () => dial(t.port));
  await new Promise((r) => setTimeout(r, 500));
  const after = rssKiB(t.proc.pid!);
  for (const s of held) s.destroy();
  await new Promise((r) => setTimeout(r, 500));
  return { kibPerSession: (after - before) / sessions };
}

type Figures = Record<string, number>;
const results: Record<string, Figures[]> = { parley: [], pipe: [], nginx: [] };
const skipped = { perSec: NaN, cpuUsPerSession: NaN, p50: NaN, p99: NaN, p999: NaN, cpuUsPerRt: NaN, mbPerSec: NaN, cpuMsPerGiB: NaN, kibPerSession: NaN };
const measure = <T>(figure: string, run: () => Promise<T>): Promise<T | typeof skipped> => (FIGURES.has(figure) ? run() : Promise.resolve(skipped));
const TURN_FIGURES = ["new", "resumed", "rt", "bulk", "idle", "latency"];
for (let round = 0; round < (TURN_FIGURES.some((x) => FIGURES.has(x)) ? ROUNDS : 0); round++) {
  for (const name of (["parley", "pipe", "nginx"] as const).filter((n) => TARGETS.includes(n))) {
    const t = await start(name);
    if (!t) continue;
    console.log(`round ${round + 1}: ${name}`);
    const n = await measure("new", () => newSessions(t, false));
    const r = await measure("resumed", () => newSessions(t, true));
    const rt = await measure("rt", () => roundTrips(t));
    const b = await measure("bulk", () => bulk(t));
    const m = round === 0 ? await measure("idle", () => idleMemory(t)) : skipped;
    const lat = FIGURES.has("latency") ? await newSessionLatency(tlsOpts(t.port)) : LATENCY_SKIPPED;
    results[name]!.push({
      new_sessions_per_s: n.perSec,
      cpu_us_per_new_session: n.cpuUsPerSession,
      resumed_sessions_per_s: r.perSec,
      cpu_us_per_resumed_session: r.cpuUsPerSession,
      round_trips_per_s: rt.perSec,
      rt_p50_ms: rt.p50,
      rt_p99_ms: rt.p99,
      rt_p999_ms: rt.p999,
      cpu_us_per_round_trip: rt.cpuUsPerRt,
      bulk_mb_per_s: b.mbPerSec,
      cpu_ms_per_gib: b.cpuMsPerGiB,
      rss_kib_per_idle_session: m.kibPerSession,
      ...lat,
    });
    t.proc.kill("SIGTERM");
    await new Promise((res) => setTimeout(res, 500));
  }
}

// Interleaved: parley and the pipe served at once, connections alternating, CPU per new session in
// several windows. Turns see the machine change between them (±10 % on this one); here both see the
// same moments, so the ratio is the steadier figure of the two.
const WINDOWS = Number(process.env.BENCH_WINDOWS ?? 5);
let interleaved:
  { windows: number; parley_cpu_us_per_new_session: number; pipe_cpu_us_per_new_session: number; ratios: number[]; median_ratio: number } | undefined;
if (FIGURES.has("new") && TARGETS.includes("parley") && TARGETS.includes("pipe") && WINDOWS > 0) {
  const pair = [(await start("parley"))!, (await start("pipe"))!];
  console.log(`interleaved: parley and pipe at once, ${WINDOWS} windows`);
  const rows: { perSec: number; cpuUsPerSession: number }[][] = [];
  for (let w = 0; w < WINDOWS; w++) rows.push(await newSessionsAcross(pair, false));
  for (const t of pair) t.proc.kill("SIGTERM");
  const ratios = rows.map(([p, q]) => +(p!.cpuUsPerSession / q!.cpuUsPerSession).toFixed(3));
  interleaved = {
    windows: WINDOWS,
    parley_cpu_us_per_new_session: median(rows.map((r) => r[0]!.cpuUsPerSession)),
    pipe_cpu_us_per_new_session: median(rows.map((r) => r[1]!.cpuUsPerSession)),
    ratios,
    median_ratio: median(ratios),
  };
}

// The concurrency sweep (bench/sweep.ts): parley and the pipe at once again, at 1, 4, 16 and 64
// concurrent, full and resumed sessions, after a warm-up that is not recorded (a fresh process's first
// seconds carry its compiler's work).
let concurrencySweep: Sweep | undefined;
if (FIGURES.has("sweep") && TARGETS.includes("parley") && TARGETS.includes("pipe")) {
  const pair = [(await start("parley"))!, (await start("pipe"))!];
  console.log(`concurrency sweep: parley and pipe at once, concurrency ${SWEEP_CONCURRENCY.join(", ")}`);
  await newSessionsAcross(pair, false);
  concurrencySweep = await sweep((kind, concurrency) => measurePair(pair, kind, concurrency), SECONDS);
  for (const t of pair) t.proc.kill("SIGTERM");
}

// Bulk under limits, interleaved: the pipe and parley with a realistic rule (idle timeout, rate,
// concurrency), with the same and a bandwidth far above the link, and with no limits at all, all
// running, BENCH_BULK_ROUNDS rounds. In a round each server has one session, and the BULK_MIB each
// way of each are sent in BENCH_BULK_SLICES (32) slices, one server's slice at a time in a rotating
// order, so that every server's CPU is measured over the same stretch of the machine's weather (one
// whole transfer each in turn let the pipe's own figure move 1.5x between rounds). Each round's ratio
// is CPU per GiB against the pipe's in the same round: the targets hold in every round. A second,
// identical pipe ("pipe-again") is measured alike: its ratio to the first is the run's own noise floor.
// Then RSS per idle session (BENCH_IDLE_MIX sessions, 5,000) of parley and the pipe, each started
// afresh, alternating, BENCH_IDLE_ROUNDS rounds.
const BULK_ROUNDS = Number(process.env.BENCH_BULK_ROUNDS ?? 5);
const BULK_SLICES = Number(process.env.BENCH_BULK_SLICES ?? 32);
const BULK_VARIANTS = ["pipe", "pipe-again", "parley-limits", "parley-bandwidth", "parley-none"] as const;
type BulkRow = Record<(typeof BULK_VARIANTS)[number], BulkFigures>;
let bulkLimits: { rounds: BulkRow[]; ratios: Record<string, number[]> } | undefined;
if (FIGURES.has("bulk-limits") && BULK_ROUNDS > 0) {
  const servers = await Promise.all(BULK_VARIANTS.map(async (n) => (await start(n, true))!));
  console.log(`bulk under limits: ${BULK_VARIANTS.join(", ")}, ${BULK_ROUNDS} rounds, ${BULK_MIB} MiB each way`);
  const rounds: BulkRow[] = [];
  for (let r = 0; r < BULK_ROUNDS; r++) {
    const sessions = await Promise.all(servers.map(bulkSession));
    for (let k = 0; k < BULK_SLICES; k++)
      for (let i = 0; i < servers.length; i++) await sessions[(i + k + r) % servers.length]!.slice((BULK_MIB * 1024 * 1024) / BULK_SLICES);
    rounds.push(Object.fromEntries(servers.map((t, i) => [t.name, sessions[i]!.figures()])) as BulkRow);
  }
  for (const t of servers) t.proc.kill("SIGTERM");
  const ratios = Object.fromEntries(BULK_VARIANTS.slice(1).map((n) => [n, rounds.map((row) => +(row[n].cpuMsPerGiB / row.pipe.cpuMsPerGiB).toFixed(3))]));
  bulkLimits = { rounds, ratios };
}
const IDLE_MIX = Number(process.env.BENCH_IDLE_MIX ?? Math.min(5000, fdRoom));
const IDLE_ROUNDS = Number(process.env.BENCH_IDLE_ROUNDS ?? 3);
let idleMix: { sessions: number; parley_kib: number[]; pipe_kib: number[]; differences_kib: number[] } | undefined;
if (FIGURES.has("idle-mix") && IDLE_ROUNDS > 0) {
  console.log(`RSS per idle session: parley-limits and pipe, ${IDLE_MIX} sessions, ${IDLE_ROUNDS} rounds`);
  const kib: Record<"parley-limits" | "pipe", number[]> = { "parley-limits": [], pipe: [] };
  for (let r = 0; r < IDLE_ROUNDS; r++) {
    for (const name of r % 2 ? (["pipe", "parley-limits"] as const) : (["parley-limits", "pipe"] as const)) {
      const t = (await start(name))!;
      await bulk(t); // warm both as a served process is: code compiled, buffers once grown
      kib[name].push((await idleMemory(t, IDLE_MIX)).kibPerSession);
      t.proc.kill("SIGTERM");
      await new Promise((res) => setTimeout(res, 500));
    }
  }
  idleMix = {
    sessions: IDLE_MIX,
    parley_kib: kib["parley-limits"],
    pipe_kib: kib.pipe,
    differences_kib: kib.pipe.map((p, i) => +(kib["parley-limits"][i]! - p).toFixed(2)),
  };
}
/** Client contexts for `n` distinct SVIDs of the bench client's ID, each with its own key. */
async function distinctClients(n: number): Promise<SecureContext[]> {
  const out: SecureContext[] = [];
  for (let i = 0; i < n; i++) {
    const leaf = await ca.leaf({ uris: ["spiffe://bench.test/ns/ns7/sa/svc7"] });
    out.push(createSecureContext({ ca: ca.certPem, cert: leaf.chainPem, key: leaf.keyPem }));
  }
  return out;
}

/**
 * One new session (full handshake, 64-byte echo, close) per context per target, connections
 * alternating between targets; server CPU per session, per target.
 */
async function sessionsWith(targets: Target[], contexts: SecureContext[]): Promise<number[]> {
  const jobs = contexts.flatMap((secureContext) => targets.map((t, i) => ({ i, port: t.port, secureContext })));
  const done = targets.map(() => 0);
  const cpu0 = targets.map((t) => cpuMs(t.proc.pid!));
  let next = 0;
  const worker = async () => {
    for (let job = jobs[next++]; job; job = jobs[next++]) {
      const s = await dial(job.port, { secureContext: job.secureContext });
      await roundTrip(s, payload64);
      await endAndClose(s);
      done[job.i]!++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return targets.map((t, i) => ((cpuMs(t.proc.pid!) - cpu0[i]!) * 1000) / Math.max(1, done[i]!));
}

interface SvidFigures {
  certificates: number;
  windows: number;
  cached: { parley_cpu_us: number; pipe_cpu_us: number; ratios: number[]; median_ratio: number };
  distinct: { parley_cpu_us: number; pipe_cpu_us: number; ratios: number[]; median_ratio: number };
  loop_chain_cpu_us: number;
  budget_spent_chain_cpu_us: number;
}

/** Seven self-issued CAs with one name and key (the issue's loop), and a ring of 15 keys under one name. */
async function loopChains(): Promise<{ seven: Buffer[]; ring: Buffer[] }> {
  const first = await CertificateAuthority.root({ name: "loop" });
  const seven = [(await first.leaf({ uris: ["spiffe://bench.test/loop"] })).certPem, first.certPem];
  for (let i = 1; i < 7; i++) seven.push((await CertificateAuthority.root({ name: "loop", keyOf: first })).certPem);
  const keys: CertificateAuthority[] = [];
  for (let i = 0; i < 15; i++) keys.push(await CertificateAuthority.root({ name: "ring", keyIdentifiers: false }));
  const ring = [(await keys[0]!.leaf({ uris: ["spiffe://bench.test/ring"], keyIdentifiers: false })).certPem];
  for (let i = 0; i < 15; i++) ring.push((await keys[(i + 1) % 15]!.intermediate({ name: "ring", keyOf: keys[i]!, keyIdentifiers: false })).certPem);
  return { seven: derFromPem(seven.join(""), "seven"), ring: derFromPem(ring.join(""), "ring") };
}

/** CPU to refuse `chain` with `rule`, in this process, with a fresh verifier (nothing cached) each time. */
function refusalCpuUs(chain: Buffer[], rule: string): number {
  const bundles = new BundleSet([X509Bundle.fromPem(TrustDomain.parse("bench.test"), ca.certPem, "bench")]);
  const runs = 200;
  const t0 = process.cpuUsage();
  for (let i = 0; i < runs; i++) {
    const r = new SvidVerifier(bundles, { maxChainLength: 16 }).verify(chain, Date.now());
    if (r.ok || r.rule !== rule) throw new Error(`expected ${rule}, got ${r.ok ? "ok" : r.rule}`);
  }
  const used = process.cpuUsage(t0);
  return (used.user + used.system) / runs;
}

/** CPU per new session against the pipe, interleaved: one cached certificate, then distinct ones. */
async function svidFigures(): Promise<SvidFigures> {
  const n = Number(process.env.BENCH_SVID_CERTS ?? 1000);
  const windows = Number(process.env.BENCH_SVID_WINDOWS ?? 3);
  const pair = [(await start("parley"))!, (await start("pipe"))!];
  console.log(`first-seen certificates: ${windows} windows of ${n} sessions each way, one certificate then ${n} distinct ones`);
  const cached: number[][] = [];
  const distinct: number[][] = [];
  for (let w = 0; w < windows; w++) {
    cached.push(
      await sessionsWith(
        pair,
        Array.from({ length: n }, () => clientContext),
      ),
    );
    distinct.push(await sessionsWith(pair, await distinctClients(n)));
  }
  for (const t of pair) t.proc.kill("SIGTERM");
  const summary = (rows: number[][]) => {
    const ratios = rows.map(([p, q]) => +(p! / q!).toFixed(3));
    return { parley_cpu_us: median(rows.map((r) => r[0]!)), pipe_cpu_us: median(rows.map((r) => r[1]!)), ratios, median_ratio: median(ratios) };
  };
  const loops = await loopChains();
  return {
    certificates: n,
    windows,
    cached: summary(cached),
    distinct: summary(distinct),
    loop_chain_cpu_us: refusalCpuUs(loops.seven, "chain_unverified"),
    budget_spent_chain_cpu_us: refusalCpuUs(loops.ring, "path_budget_exhausted"),
  };
}

function printSvid(s: SvidFigures): void {
  const line = (what: string, x: SvidFigures["cached"]) =>
    `  ${what}: parley ${x.parley_cpu_us.toFixed(0)} µs, pipe ${x.pipe_cpu_us.toFixed(0)} µs, parley/pipe ${x.median_ratio} (windows: ${x.ratios.join(" ")})`;
  console.log(
    `\nCPU per new session, interleaved with the pipe:\n${line("one cached certificate", s.cached)}\n${line(`${s.certificates} distinct certificates`, s.distinct)}`,
  );
  console.log(`seven self-issued CAs with one name and key: ${s.loop_chain_cpu_us.toFixed(0)} µs of CPU to refuse`);
  console.log(`a ring of 15 keys that spends the path budget: ${s.budget_spent_chain_cpu_us.toFixed(0)} µs of CPU to refuse`);
}

const svid = FIGURES.has("new") && TARGETS.includes("parley") && TARGETS.includes("pipe") ? await svidFigures() : undefined;
await echo.close();

const keys = Object.keys(Object.values(results).find((rows) => rows.length > 0)?.[0] ?? {});
const med: Record<string, Figures> = {};
for (const [name, rows] of Object.entries(results)) {
  if (rows.length === 0) continue;
  med[name] = Object.fromEntries(keys.map((k) => [k, median(rows.map((r) => r[k]!).filter((v) => !Number.isNaN(v)))]));
}
const ratio = (a: string, b: string) => (med[a] && med[b] ? Object.fromEntries(keys.map((k) => [k, +(med[a]![k]! / med[b]![k]!).toFixed(2)])) : undefined);
const report = {
  bench: "proxy",
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, model: cpus()[0]?.model, memory_gib: Math.round(totalmem() / 1024 ** 3), node: process.version },
  settings: { seconds: SECONDS, rounds: ROUNDS, concurrency: CONCURRENCY, bulk_mib_each_way: BULK_MIB, idle_sessions: IDLE },
  medians: med,
  parley_over_pipe: ratio("parley", "pipe"),
  parley_over_nginx: ratio("parley", "nginx"),
  interleaved,
  bulk_limits: bulkLimits,
  idle_mix: idleMix,
  svid,
  sweep: concurrencySweep,
};
const subset = TARGETS.length < 3 || ALL_FIGURES.split(",").some((x) => !FIGURES.has(x));
const RESULTS = "bench/results/proxy.json";
if (!subset) {
  mkdirSync("bench/results", { recursive: true });
  writeFileSync(RESULTS, JSON.stringify(report, null, 2) + "\n");
} else if (concurrencySweep && existsSync(RESULTS)) {
  // A sweep run alone replaces the sweep of the last full run (it carries its own date), nothing else.
  const kept = JSON.parse(readFileSync(RESULTS, "utf8")) as Record<string, unknown>;
  writeFileSync(RESULTS, JSON.stringify({ ...kept, sweep: concurrencySweep }, null, 2) + "\n");
}
const fmt = (v: number | undefined) => (v === undefined ? "-" : v >= 100 ? v.toFixed(0) : v.toFixed(2));
console.log(`\n${"figure".padEnd(30)}${"parley".padStart(10)}${"pipe".padStart(10)}${"nginx".padStart(10)}${"p/pipe".padStart(9)}${"p/nginx".padStart(9)}`);
for (const k of keys) {
  console.log(
    `${k.padEnd(30)}${fmt(med.parley?.[k]).padStart(10)}${fmt(med.pipe?.[k]).padStart(10)}${fmt(med.nginx?.[k]).padStart(10)}${fmt(report.parley_over_pipe?.[k]).padStart(9)}${fmt(report.parley_over_nginx?.[k]).padStart(9)}`,
  );
}
if (interleaved)
  console.log(
    `\ninterleaved CPU per new session: parley ${interleaved.parley_cpu_us_per_new_session.toFixed(0)} µs, pipe ${interleaved.pipe_cpu_us_per_new_session.toFixed(0)} µs, parley/pipe ${interleaved.median_ratio} (windows: ${interleaved.ratios.join(" ")})`,
  );
const verdict = latencyVerdict(med.parley, med.nginx);
if (verdict) console.log(`\n${verdict}`);
if (bulkLimits) {
  const cells = (n: keyof BulkRow) => bulkLimits.rounds.map((row) => `${row[n].cpuMsPerGiB.toFixed(0)}ms/${row[n].mbPerSec.toFixed(0)}MB/s`).join(" ");
  console.log(`\nbulk under limits, CPU per GiB / MB/s by round:`);
  for (const n of BULK_VARIANTS) console.log(`  ${n.padEnd(18)}${cells(n)}`);
  for (const [n, rs] of Object.entries(bulkLimits.ratios)) console.log(`  ${n}/pipe: ${rs.join(" ")} (max ${Math.max(...rs)})`);
  console.log(`Mark-Compacts per GiB by round (V8's --trace-gc):`);
  for (const n of BULK_VARIANTS) console.log(`  ${n.padEnd(18)}${bulkLimits.rounds.map((row) => row[n].markCompactsPerGiB.toFixed(1)).join(" ")}`);
  // Where the CPU goes: Node's main thread (JS, TLS, syscalls), V8's workers (GC), libuv's pool.
  console.log(`CPU ms per GiB by thread kind, user and system time, median of the rounds:`);
  for (const n of BULK_VARIANTS) {
    const kinds = [...new Set(bulkLimits.rounds.flatMap((row) => Object.keys(row[n].threadMsPerGiB)))].sort();
    console.log(`  ${n.padEnd(18)}${kinds.map((k) => `${k} ${median(bulkLimits.rounds.map((row) => row[n].threadMsPerGiB[k] ?? 0))}`).join("  ")}`);
  }
}
if (idleMix)
  console.log(
    `\nRSS per idle session (${idleMix.sessions}): parley ${idleMix.parley_kib.map((v) => v.toFixed(1)).join(" ")} KiB, pipe ${idleMix.pipe_kib.map((v) => v.toFixed(1)).join(" ")} KiB, parley-pipe ${idleMix.differences_kib.join(" ")} KiB`,
  );
if (svid) printSvid(svid);
if (concurrencySweep) printSweep(concurrencySweep);
console.log(
  !subset ? `\nwritten to ${RESULTS}` : concurrencySweep ? `\na subset: only the sweep written to ${RESULTS}` : `\na subset: ${RESULTS} left as it was`,
);
process.exit(0);
