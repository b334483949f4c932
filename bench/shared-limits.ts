// npm run bench:shared-limits — what shared limits cost, against a redis-server started here (loopback):
// 1. Added decision latency: a shared rate take (one EVALSHA), a shared lease (acquire, then its
//    release) and both in one script, next to the local bucket's take, interleaved in rounds in one process, sequential, over
//    1,000 identities; p50/p99 per round and their medians.
// 2. CPU per new session: two `parley run` child processes, one with the rule's rate and max_sessions
//    shared (Redis), one with the same limits local; full mTLS sessions (handshake, decision, admission,
//    dial, one echoed byte, close) sent to each in turn, round after round, and each process's CPU
//    (utime + stime from /proc) per session; Redis's own CPU per shared session beside it.
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { startEcho } from "../src/demo/echo.js";
import { KeyedBuckets } from "../src/limits/keyed.js";
import { LimitCounts } from "../src/limits/events.js";
import { SharedLimits } from "../src/limits/shared.js";
import { attempt } from "../testkit/attempt.js";
import { configYaml, limitedPolicy, writeFiles } from "../testkit/harness.js";
import { makePki } from "../testkit/pki.js";
import { startRedis, type RedisServer } from "../testkit/redis.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CALLS = Number(process.env.BENCH_CALLS ?? 5000);
const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 300);
const IDENTITIES = 1000;
const rate = { perSecond: 1e6, burst: 1e6 };

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const median = (xs: number[]) => pct(xs, 50);
const us = (t: number) => (performance.now() - t) * 1000;

async function latency(redis: RedisServer): Promise<void> {
  const shared = new SharedLimits({ now: Date.now, counts: new LimitCounts(), onEvent: () => undefined });
  await shared.configure({
    url: redis.url,
    keyPrefix: "bench:",
    onUnavailable: "deny",
    timeoutMs: 1000,
    leaseTtlMs: 15_000,
    breakerFailures: 3,
    breakerProbeMs: 1000,
  });
  while (shared.status()?.state !== "up") await new Promise((r) => setTimeout(r, 10));
  const local = new KeyedBuckets(100_000);
  const rows: Record<"rateP50" | "rateP99" | "leaseP50" | "leaseP99" | "bothP50" | "bothP99" | "localP50" | "localP99", number>[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const [s, l, q, b]: [number[], number[], number[], number[]] = [[], [], [], []];
    for (let i = 0; i < CALLS; i++) {
      const id = `spiffe://bench.test/agent${i % IDENTITIES}`;
      let t = performance.now();
      local.take(id, rate, Date.now());
      l.push(us(t));
      t = performance.now();
      const v = await shared.take(`rate:${id}`, rate);
      s.push(us(t));
      t = performance.now();
      const lease = await shared.acquire(`sessions:${id}`, 1e6);
      q.push(us(t));
      if (v === "local" || !v.ok || lease === "local" || !lease.ok) throw new Error(`unexpected verdict ${JSON.stringify([v, lease])}`);
      lease.value.release();
      t = performance.now();
      const both = await shared.admit(`rate:${id}`, rate, `sessions:${id}`, 1e6);
      b.push(us(t));
      if (typeof both === "string" || !both.ok) throw new Error(`unexpected verdict ${JSON.stringify(both)}`);
      both.value.release();
    }
    rows.push({
      rateP50: pct(s, 50),
      rateP99: pct(s, 99),
      leaseP50: pct(q, 50),
      leaseP99: pct(q, 99),
      bothP50: pct(b, 50),
      bothP99: pct(b, 99),
      localP50: pct(l, 50),
      localP99: pct(l, 99),
    });
  }
  await shared.close();
  const m = (k: keyof (typeof rows)[0]) => median(rows.map((x) => x[k])).toFixed(1);
  console.log(`shared rate (Redis, loopback): p50 ${m("rateP50")} µs, p99 ${m("rateP99")} µs per admission`);
  console.log(`shared lease (acquire):        p50 ${m("leaseP50")} µs, p99 ${m("leaseP99")} µs per admission`);
  console.log(`rate + lease (one script):     p50 ${m("bothP50")} µs, p99 ${m("bothP99")} µs per admission`);
  console.log(`local bucket:                  p50 ${m("localP50")} µs, p99 ${m("localP99")} µs per admission`);
  console.log(`(${ROUNDS} rounds of ${CALLS} calls over ${IDENTITIES} identities; medians of the rounds)`);
}

/** CPU seconds (user + system) a process has used, from /proc/PID/stat. */
function cpuOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

/** `parley run` on `yaml`; resolves once its listener is ready (and its shared limits connected, if any). */
async function sidecar(yaml: string): Promise<{ child: ChildProcess; port: number }> {
  let connected = !yaml.includes("shared_limits:");
  let ready = 0;
  const file = writeFiles({ "c.yaml": yaml })["c.yaml"]!;
  const child = spawn(process.execPath, ["dist/cli.js", "run", "--config", file, "--no-watch"], { stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`parley run exited ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const r = JSON.parse(line) as { msg?: string; address?: string };
      if (r.msg === "listener ready") ready = Number(r.address!.split(":").pop());
      if (r.msg === "shared limits backend connected") connected = true;
      if (ready && connected) resolve(ready);
    });
  });
  return { child, port };
}

async function cpu(redis: RedisServer, redisPid: number): Promise<void> {
  const pki = await makePki();
  const agent = await pki.leaf(pki.a, "spiffe://a.test/agent");
  const echo = await startEcho("127.0.0.1", 0);
  const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
  const paths = { cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! };
  const upstream = (echo.server.address() as { port: number }).port;
  const yaml = (scope: string, extra: string) =>
    configYaml(paths, upstream, {
      policies: limitedPolicy(`{ rate: { per_second: 1000000, burst: 1000000${scope} }, max_sessions: { max: 1000000${scope} } }`),
      extra,
    });
  // BENCH_CONTROL=1: both sidecars local (an A/A run: the ratio the harness alone shows).
  const control = process.env.BENCH_CONTROL === "1";
  const shared = await sidecar(
    control ? yaml("", "") : yaml(", scope: shared", `shared_limits: { url: "${redis.url}", key_prefix: "cpu:", timeout: 250ms }\n`),
  );
  const local = await sidecar(yaml("", ""));
  let refused = 0;
  const run = async (port: number) => {
    const open: import("node:tls").TLSSocket[] = [];
    for (let i = 0; i < SESSIONS; i++) {
      if (!(await attempt(port, pki, agent, open))) refused++;
      open.pop()!.destroy();
    }
  };
  await run(shared.port); // warm up both
  await run(local.port);
  const ratios: number[] = [];
  const rows: { shared: number; local: number; redis: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const rc = cpuOf(redisPid);
    let c = cpuOf(shared.child.pid!);
    await run(shared.port);
    const s = (cpuOf(shared.child.pid!) - c) / SESSIONS;
    const redisPer = (cpuOf(redisPid) - rc) / SESSIONS;
    c = cpuOf(local.child.pid!);
    await run(local.port);
    const l = (cpuOf(local.child.pid!) - c) / SESSIONS;
    rows.push({ shared: s, local: l, redis: redisPer });
    ratios.push(s / l);
  }
  shared.child.kill();
  local.child.kill();
  await echo.close();
  const m = (k: keyof (typeof rows)[0]) => (median(rows.map((x) => x[k])) * 1e6).toFixed(0);
  console.log(`CPU per new session, sidecar with shared limits: ${m("shared")} µs; with local limits: ${m("local")} µs`);
  console.log(`ratio shared/local per round: ${ratios.map((x) => x.toFixed(2)).join(" ")}; median ${median(ratios).toFixed(2)}`);
  console.log(`redis-server CPU per shared session: ${m("redis")} µs; sessions refused (Redis later than the timeout): ${refused}`);
  console.log(`(${ROUNDS} interleaved rounds of ${SESSIONS} sequential mTLS sessions per sidecar; /proc ticks are 10 ms)`);
}

async function main(): Promise<void> {
  const redis = await startRedis();
  await latency(redis);
  await cpu(redis, redis.pid);
  await redis.stop();
}

await main();
