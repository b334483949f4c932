// npm run bench:mesh — a mesh hop, two server processes per hop, one machine: the caller (this
// process, plaintext) → an outbound proxy → mTLS → an inbound proxy → the echo workload (this
// process). Three hops, same load, same certificates, all running at once and measured in a rotating
// order each round (interleaved, so each sees the machine's moments alike):
//   multiplexed  parley → parley, `transport: multiplexed` (HTTP/2 CONNECT streams over pooled mTLS)
//   tls          parley → parley, one mTLS connection a session (`transport: tls`)
//   nginx        nginx stream `proxy_ssl` with a client certificate → nginx stream mTLS terminator
//                (nginx's defaults: the outbound side resumes TLS sessions, proxy_ssl_session_reuse on)
//   nginx-full   the same with proxy_ssl_session_reuse off: a full handshake a session, as parley's tls
// Figures: new sessions/s (connect, 64-byte echo, close) at BENCH_CONCURRENCY (16) and the summed CPU
// of both servers per new session; round trips on long-lived sessions (p50/p99); one bulk transfer
// (BENCH_BULK_MIB, 256, each way) in MB/s; RSS of both servers per idle session (BENCH_IDLE, 2000).
// Each hop is warmed up first (BENCH_WARMUP, 3 s of new sessions, not recorded).
// BENCH_SECONDS (5) a measurement, BENCH_ROUNDS (3), BENCH_HOPS (multiplexed,tls,nginx) a subset;
// BENCH_PARLEY_NODE_OPTIONS goes to parley's node (e.g. --cpu-prof). Runs dist/: `npx tsc -p tsconfig.json`.
// nginx: `apt-get install nginx libnginx-mod-stream`; skipped with a notice when absent.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { CertificateAuthority } from "../src/certs/issue.js";
import { startEcho } from "../src/demo/echo.js";
import { freePort, tempDir } from "../testkit/harness.js";
import { bulkTransfer, median, newSessionLoad, openIdle, quantile, roundTripLatencies } from "./load.js";
import { cpuMsOf, processTree, rssKiBOf } from "./procstat.js";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const BULK_MIB = Number(process.env.BENCH_BULK_MIB ?? 256);
const IDLE = Number(process.env.BENCH_IDLE ?? 2000);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 3);

const dir = tempDir();
const ca = await CertificateAuthority.root({ trustDomain: "bench.test" });
const inboundId = await ca.leaf({ uris: ["spiffe://bench.test/sidecar"], dnsNames: ["localhost"] });
const outboundId = await ca.leaf({ uris: ["spiffe://bench.test/ns/ns7/sa/svc7"] });
const f = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};
const files = {
  inCert: f("in-cert.pem", inboundId.chainPem),
  inKey: f("in-key.pem", inboundId.keyPem),
  outCert: f("out-cert.pem", outboundId.chainPem),
  outKey: f("out-key.pem", outboundId.keyPem),
  ca: f("ca.pem", ca.certPem),
};
const echo = await startEcho("127.0.0.1", 0);
const upstream = (echo.server.address() as { port: number }).port;

/** The inbound parley: one listener, a rule with realistic limits for the outbound's SVID. */
function inboundYaml(port: number): string {
  return `identity: { cert: ${files.inCert}, key: ${files.inKey} }
trust_domains: { bench.test: { bundle: ${files.ca} } }
listeners:
  - { name: main, listen: "127.0.0.1:${port}", upstream: "127.0.0.1:${upstream}", policy: main, max_sessions: 100000, multiplex: { max_streams: 1000 } }
policies:
  main:
    rules:
      - { name: mesh, action: allow, match: [{ id: spiffe://bench.test/ns/ns7/sa/svc7 }], limits: { idle_timeout: 5m, rate: { per_second: 100000, burst: 100000 } } }
limits: { max_sessions: 100000, max_handshakes: 4096, max_handshakes_per_source: 4096 }
log: { deny_cap: false }
admin: { listen: false }
`;
}

function outboundYaml(port: number, remote: number, transport: "tls" | "multiplexed"): string {
  return `identity: { cert: ${files.outCert}, key: ${files.outKey} }
trust_domains: { bench.test: { bundle: ${files.ca} } }
outbound:
  - { name: hop, listen: "127.0.0.1:${port}", remote: "127.0.0.1:${remote}", expect_id: spiffe://bench.test/sidecar, transport: ${transport}${transport === "multiplexed" ? ", multiplex: { max_streams: 100 }" : ""} }
policies: {}
admin: { listen: false }
`;
}

const NGINX_MODULE = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"].find(existsSync);
const NGINX = ["/usr/sbin/nginx", "/usr/bin/nginx"].find(existsSync);

function nginxYaml(name: string, server: string): string {
  return `${NGINX_MODULE ? `load_module ${NGINX_MODULE};\n` : ""}worker_processes 1;
daemon off;
pid ${dir}/${name}/nginx.pid;
error_log ${dir}/${name}/error.log;
events { worker_connections 20000; }
stream {
  server {
${server}
  }
}
`;
}

interface Hop {
  readonly name: "multiplexed" | "tls" | "nginx" | "nginx-full";
  /** Where the caller connects (plaintext). */
  readonly port: number;
  readonly procs: ChildProcess[];
}

function parley(name: string, yaml: string): ChildProcess {
  const cfg = f(`${name}.yaml`, yaml);
  const log = f(`${name}.log`, "");
  return spawn(
    "bash",
    ["-c", `exec "${process.execPath}" ${process.env.BENCH_PARLEY_NODE_OPTIONS ?? ""} dist/cli.js run --config "${cfg}" --no-watch > "${log}"`],
    { stdio: "ignore" },
  );
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: "127.0.0.1", port });
      s.on("error", () => resolve(false));
      s.on("connect", () => {
        s.destroy();
        resolve(true);
      });
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listening on ${port}`);
}

async function startHop(name: Hop["name"]): Promise<Hop | undefined> {
  const [front, back] = [await freePort(), await freePort()];
  let procs: ChildProcess[];
  if (name.startsWith("nginx")) {
    if (!NGINX) return void console.log("nginx is not installed: skipping it (apt-get install nginx libnginx-mod-stream)");
    const [inDir, outDir] = [`${name}-in`, `${name}-out`];
    for (const d of [inDir, outDir]) mkdirSync(join(dir, d), { recursive: true });
    const inbound = `    listen 127.0.0.1:${back} ssl;
    ssl_certificate ${files.inCert};
    ssl_certificate_key ${files.inKey};
    ssl_client_certificate ${files.ca};
    ssl_verify_client on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    proxy_pass 127.0.0.1:${upstream};`;
    const outbound = `    listen 127.0.0.1:${front};
    proxy_pass 127.0.0.1:${back};
    proxy_ssl on;
    proxy_ssl_certificate ${files.outCert};
    proxy_ssl_certificate_key ${files.outKey};
    proxy_ssl_trusted_certificate ${files.ca};
    proxy_ssl_verify on;
    proxy_ssl_name localhost;
    proxy_ssl_protocols TLSv1.2 TLSv1.3;
    proxy_ssl_session_reuse ${name === "nginx" ? "on" : "off"};`;
    procs = [inDir, outDir].map((d, i) =>
      spawn(NGINX, ["-c", f(`${d}.conf`, nginxYaml(d, i === 0 ? inbound : outbound)), "-p", join(dir, d)], { stdio: "ignore" }),
    );
  } else {
    const transport = name as "multiplexed" | "tls";
    procs = [parley(`${name}-in`, inboundYaml(back)), parley(`${name}-out`, outboundYaml(front, back, transport))];
  }
  await waitPort(back);
  await waitPort(front);
  return { name, port: front, procs };
}

/** Every pid of the hop's processes and their children (nginx's workers, the shell parley runs under). */
const pids = (hop: Hop): number[] => hop.procs.flatMap((p) => processTree(p.pid!));
const cpuMs = (hop: Hop): number => cpuMsOf(pids(hop));
const rssKiB = (hop: Hop): number => rssKiBOf(pids(hop));

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, noDelay: true });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

async function newSessions(hop: Hop, seconds = SECONDS): Promise<{ perSec: number; cpuUsPerSession: number; errors: number }> {
  const cpu0 = cpuMs(hop);
  const { done, errors } = await newSessionLoad({ targets: 1, concurrency: CONCURRENCY, seconds, opener: () => () => dial(hop.port) });
  return { perSec: done[0]! / seconds, cpuUsPerSession: ((cpuMs(hop) - cpu0) * 1000) / Math.max(1, done[0]!), errors };
}

async function roundTrips(hop: Hop): Promise<{ p50: number; p99: number }> {
  const sessions = await Promise.all(Array.from({ length: CONCURRENCY }, () => dial(hop.port)));
  const lat = await roundTripLatencies(sessions, SECONDS);
  for (const s of sessions) s.destroy();
  return { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99) };
}

async function bulk(hop: Hop): Promise<number> {
  const s = await dial(hop.port);
  const secs = await bulkTransfer(s, BULK_MIB);
  s.destroy();
  return (2 * BULK_MIB * 1024 * 1024) / 1e6 / secs;
}

async function idleMemory(hop: Hop): Promise<number> {
  const before = rssKiB(hop);
  const held = await openIdle(IDLE, () => dial(hop.port));
  await new Promise((r) => setTimeout(r, 500));
  const after = rssKiB(hop);
  for (const s of held) s.destroy();
  await new Promise((r) => setTimeout(r, 1000));
  return (after - before) / IDLE;
}

const HOPS = (process.env.BENCH_HOPS ?? "multiplexed,tls,nginx,nginx-full").split(",");
const hops = (await Promise.all((["multiplexed", "tls", "nginx", "nginx-full"] as const).filter((n) => HOPS.includes(n)).map(startHop))).filter(
  (h) => h !== undefined,
);
type Row = Record<string, number>;
const rows: Record<string, Row[]> = Object.fromEntries(hops.map((h) => [h.name, []]));
// Warm-up, not recorded: Node's compiler and the pool's first connection settle (a served process is warm).
for (const hop of hops) await newSessions(hop, WARMUP);
for (let round = 0; round < ROUNDS; round++) {
  for (let i = 0; i < hops.length; i++) {
    const hop = hops[(i + round) % hops.length]!;
    console.log(`round ${round + 1}: ${hop.name}`);
    const n = await newSessions(hop);
    if (n.errors > 0) console.log(`  ${n.errors} errors in new sessions`);
    const rt = await roundTrips(hop);
    const mbs = await bulk(hop);
    rows[hop.name]!.push({
      new_sessions_per_s: n.perSec,
      cpu_us_per_new_session: n.cpuUsPerSession,
      sessions_per_cpu_s: 1e6 / n.cpuUsPerSession,
      rt_p50_ms: rt.p50,
      rt_p99_ms: rt.p99,
      bulk_mb_per_s: mbs,
    });
  }
}
// Idle memory once per hop, last: it leaves the most behind.
for (const hop of hops) rows[hop.name]![0]!.rss_kib_per_idle_session = await idleMemory(hop);
for (const hop of hops) for (const p of hop.procs) p.kill("SIGTERM");
await echo.close();

const keys = Object.keys(rows[hops[0]!.name]![0]!);
const med: Record<string, Row> = Object.fromEntries(
  Object.entries(rows).map(([name, rs]) => [
    name,
    Object.fromEntries(keys.map((k) => [k, median(rs.map((r) => r[k]).filter((v): v is number => v !== undefined))])),
  ]),
);
const ratio = (a: string, b: string) => {
  const [x, y] = [med[a], med[b]];
  return x && y ? Object.fromEntries(keys.map((k) => [k, +(x[k]! / y[k]!).toFixed(3)])) : undefined;
};
const report = {
  date: new Date().toISOString(),
  node: process.version,
  settings: { seconds: SECONDS, rounds: ROUNDS, concurrency: CONCURRENCY, bulk_mib: BULK_MIB, idle: IDLE },
  rounds: rows,
  medians: med,
  multiplexed_over_tls: ratio("multiplexed", "tls"),
  multiplexed_over_nginx: ratio("multiplexed", "nginx"),
  multiplexed_over_nginx_full: ratio("multiplexed", "nginx-full"),
};
const fmt = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? "-" : v >= 100 ? v.toFixed(0) : v.toFixed(2));
const columns = ["multiplexed", "tls", "nginx", "nginx-full", "mux/tls", "mux/nginx", "mux/ngx-full"];
console.log(`\n${"figure".padEnd(26)}${columns.map((c) => c.padStart(13)).join("")}`);
for (const k of keys) {
  const cells = [
    med.multiplexed?.[k],
    med.tls?.[k],
    med.nginx?.[k],
    med["nginx-full"]?.[k],
    report.multiplexed_over_tls?.[k],
    report.multiplexed_over_nginx?.[k],
    report.multiplexed_over_nginx_full?.[k],
  ];
  console.log(`${k.padEnd(26)}${cells.map((v) => fmt(v).padStart(13)).join("")}`);
}
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/mesh.json", JSON.stringify(report, null, 2) + "\n");
console.log("\nwritten to bench/results/mesh.json");
process.exit(0);
