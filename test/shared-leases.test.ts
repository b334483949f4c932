// Concurrent sessions per identity shared across sidecars as leases in a real redis-server: the cap
// holds across sidecars, a session's end frees its slot, live leases are renewed (and re-added after
// Redis lost them), and the circuit breaker stops sending to a stalled Redis until a probe answers.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { operations } from "../src/app/operations.js";
import { loadBootstrap, loadConfig } from "../src/config/load.js";
import { startControlPlane } from "../src/control/server/plane.js";
import { startEcho } from "../src/demo/echo.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { until } from "../testkit/attempt.js";
import { configYaml, limitedPolicy, MemoryLog, startControlled, tempDir, waitFor, writeFiles, type Harness } from "../testkit/harness.js";
import { denials, sharedLimitsRig } from "../testkit/shared-rig.js";

const rig = sharedLimitsRig();
const { sockets } = rig;

/** `n` sidecars sharing a cap of `cap` sessions per identity (a fresh key prefix per test). */
async function sidecars(n: number, cap: number, shared = "", timeout = "1s"): Promise<{ hs: Harness[]; key: string }> {
  const prefix = rig.prefix("l");
  const extra = rig.section(prefix, `timeout: ${timeout}, lease_ttl: 1s${shared}`);
  const hs = await rig.sidecars(n, { policies: limitedPolicy(`{ max_sessions: { max: ${cap}, scope: shared } }`), extra });
  return { hs, key: `${prefix}sessions:spiffe://a.test/alice` };
}

describe("shared concurrent sessions (leases)", () => {
  it("holds one identity's cap across two sidecars and frees a slot when a session ends", async () => {
    const {
      hs: [h1, h2],
      key,
    } = await sidecars(2, 2);
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(true);
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(true);
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(false);
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(false);
    expect(denials(h1!)).toEqual([["concurrency_limited"]]);
    expect(denials(h2!)).toEqual([["concurrency_limited"]]);
    expect(await rig.inspect.zCard(key)).toBe(2);
    expect(await rig.attempt(h2!.port, rig.bob)).toBe(true); // another identity, another set
    // The first session ends: its lease goes at once, and the slot is free on the other sidecar.
    sockets[0]!.destroy();
    await until(async () => (await rig.inspect.zCard(key)) === 1, 5000, "release");
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(true);
  });

  it("takes a shared rate's token and a shared lease in one script: no token spent without a slot", async () => {
    const prefix = rig.prefix("both");
    const policies = limitedPolicy("{ rate: { per_second: 0.001, burst: 2, scope: shared }, max_sessions: { max: 1, scope: shared } }");
    const [h1, h2] = await rig.sidecars(2, { policies, extra: rig.section(prefix) });
    const key = `${prefix}sessions:spiffe://a.test/alice`;
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(true);
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(false); // no slot: its token stays
    expect(Number(await rig.inspect.hGet(`${prefix}rate:spiffe://a.test/alice`, "t"))).toBeCloseTo(1, 2);
    sockets[0]!.destroy();
    await until(async () => (await rig.inspect.zCard(key)) === 0, 5000, "release");
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(true); // the second token
    sockets[sockets.length - 1]!.destroy();
    await until(async () => (await rig.inspect.zCard(key)) === 0, 5000, "release");
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(false); // a slot, no token
    expect([...denials(h1!), ...denials(h2!)]).toEqual([["rate_limited"], ["concurrency_limited"]]);
    expect(h1!.sidecar.sharedLimitsStatus()!.calls.error).toBe(0);
  });

  it("renews live leases past their TTL and re-adds them when Redis lost them", async () => {
    const {
      hs: [h1, h2],
      key,
    } = await sidecars(2, 2);
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(true);
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(true);
    const first = Math.max(...(await rig.inspect.zRangeWithScores(key, 0, -1)).map((m) => m.score));
    // Renewed by the Redis clock: a later expiry than the first, so the TTL (1 s) has passed meanwhile.
    await until(async () => (await rig.inspect.zRangeWithScores(key, 0, -1)).every((m) => m.score > first + 1000), 10_000, "renewal");
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(false);
    // Redis restarts empty: the next renewal adds the live sessions' leases back.
    await rig.redis.stop();
    await rig.redis.restart();
    await until(async () => (await rig.inspect.zCard(key)) === 2, 10_000, "leases re-added");
    await until(() => Promise.resolve(h2!.sidecar.sharedLimitsStatus()?.state === "up"), 10_000, "h2 reconnected");
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(false);
    expect(denials(h2!)).toEqual([["concurrency_limited"], ["concurrency_limited"]]);
  });

  it("opens the circuit breaker on a stalled Redis (the failure mode at once), closes it when a probe answers", async () => {
    const {
      hs: [h1],
    } = await sidecars(1, 5, ", breaker: { failures: 2, probe_interval: 100ms }", "500ms");
    const status = () => h1!.sidecar.sharedLimitsStatus()!;
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(true);
    rig.redis.pause();
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(false);
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(false);
    await h1!.logs.next("warning", (r) => r.msg === "shared limits circuit breaker open");
    expect(status().state).toBe("open");
    // Open: further admissions are refused without a call to Redis (no timeout spent on them).
    const timeouts = status().calls.timeout;
    for (let i = 0; i < 3; i++) expect(await rig.attempt(h1!.port, rig.bob)).toBe(false);
    expect(status().calls.timeout).toBe(timeouts);
    expect(status().calls.refused).toBeGreaterThanOrEqual(3);
    expect(denials(h1!)).toEqual(Array.from({ length: 5 }, () => ["shared_limits_unavailable"]));
    rig.redis.resume();
    await h1!.logs.next("lifecycle", (r) => r.msg === "shared limits circuit breaker closed");
    expect(status().state).toBe("up");
    expect(await rig.attempt(h1!.port, rig.bob)).toBe(true);
  });

  it("falls back to this sidecar's own count when Redis is gone and the mode is local", async () => {
    const {
      hs: [h1, h2],
    } = await sidecars(2, 1, ", on_unavailable: local");
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(true);
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(false);
    await rig.redis.stop();
    await h2!.logs.next("warning", (r) => r.msg === "shared limits backend lost");
    // Each sidecar now counts alone: h2 has none of alice's sessions, h1 has its one.
    expect(await rig.attempt(h2!.port, rig.alice)).toBe(true);
    expect(await rig.attempt(h1!.port, rig.alice)).toBe(false);
    expect(denials(h1!)).toEqual([["concurrency_limited"]]);
    expect(h1!.sidecar.limitCounts.get("shared_limits_fallback")).toBe(1);
  });
});

describe("the backend in /readyz, /config and /metrics", () => {
  it("shows state, latency, calls and settings; Redis down is shown but does not make the sidecar unready", async () => {
    const echo = await startEcho("127.0.0.1", 0);
    const f = writeFiles({ "cert.pem": rig.pki.server.chainPem, "key.pem": rig.pki.server.keyPem, "a.pem": rig.pki.a.certPem, "b.pem": rig.pki.b.certPem });
    const file = join(f.dir, "parley.yaml");
    const upstream = (echo.server.address() as { port: number }).port;
    const prefix = rig.prefix("ops");
    writeFileSync(
      file,
      configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, upstream, {
        policies: limitedPolicy("{ max_sessions: { max: 5, scope: shared } }"),
        extra: rig.section(prefix),
      }),
    );
    const config = loadConfig(file);
    const ops = operations(config.log, { listen: "127.0.0.1:0", write: false }, { write: () => undefined });
    const sidecar = new Sidecar(config, { log: ops.log });
    await sidecar.start();
    const admin = (await ops.serveAdmin(sidecar))!.port;
    const get = async (path: string) => (await fetch(`http://127.0.0.1:${admin}${path}`)).text();
    try {
      await until(async () => (JSON.parse(await get("/readyz")) as { shared_limits?: { state: string } }).shared_limits?.state === "up", 5000, "up");
      expect(await rig.attempt(sidecar.addresses()["main"]!.port, rig.alice)).toBe(true);
      const ready = JSON.parse(await get("/readyz")) as { ready: boolean; shared_limits: Record<string, unknown> };
      expect(ready.ready).toBe(true);
      expect(ready.shared_limits).toMatchObject({ state: "up", consecutive_failures: 0, leases: 1, calls: { ok: 1, timeout: 0, refused: 0 } });
      expect(ready.shared_limits.last_latency_ms).toBeGreaterThan(0);
      // The settings in force, in /config's snake_case: the file's keys, durations in ms.
      expect((JSON.parse(await get("/config")) as { shared_limits: unknown }).shared_limits).toEqual({
        url: new URL(rig.redis.url).toString(),
        key_prefix: prefix,
        on_unavailable: "deny",
        timeout_ms: 1000,
        lease_ttl_ms: 15_000,
        breaker: { failures: 3, probe_interval_ms: 1000 },
      });
      const metrics = await get("/metrics");
      expect(metrics).toMatch(/^parley_shared_limits_backend_state\{state="up"\} 1$/m);
      expect(metrics).toMatch(/^parley_shared_limits_backend_state\{state="down"\} 0$/m);
      expect(metrics).toMatch(/^parley_shared_limits_call_duration_seconds_count\{op="lease",outcome="ok"\} 1$/m);
      await rig.redis.stop();
      await until(async () => (JSON.parse(await get("/readyz")) as { shared_limits: { state: string } }).shared_limits.state === "down", 5000, "down");
      expect((JSON.parse(await get("/readyz")) as { ready: boolean }).ready).toBe(true);
      expect(await rig.attempt(sidecar.addresses()["main"]!.port, rig.alice)).toBe(false);
      const after = await get("/metrics");
      expect(after).toMatch(/^parley_shared_limits_backend_state\{state="down"\} 1$/m);
      expect(after).toMatch(/^parley_shared_limits_call_duration_seconds_count\{op="lease",outcome="refused"\} 1$/m);
      expect(after).toMatch(/^parley_limit_hits_total\{kind="shared_limits_unavailable"\} 1$/m);
    } finally {
      await sidecar.stop(100);
      await ops.close();
      await echo.close();
    }
  });
});

describe("shared limits pushed by the control plane", () => {
  it("a pushed shared_limits and shared max_sessions are enforced; a push without them removes the backend", async () => {
    const echo = await startEcho("127.0.0.1", 0);
    const dir = tempDir();
    mkdirSync(join(dir, "cp", "nodes"), { recursive: true });
    const prefix = rig.prefix("cp");
    const node = (shared: boolean) =>
      JSON.stringify({
        listeners: [{ name: "main", listen: "127.0.0.1:0", upstream: `127.0.0.1:${(echo.server.address() as { port: number }).port}`, policy: "main" }],
        trust_domains: { "a.test": { bundle_pem: rig.pki.a.certPem } },
        policies: {
          main: {
            rules: [
              { name: "agents", action: "allow", match: [{ trust_domain: "a.test" }], limits: { max_sessions: shared ? { max: 1, scope: "shared" } : 1 } },
            ],
          },
        },
        ...(shared ? { shared_limits: { url: rig.redis.url, key_prefix: prefix, timeout: "1s", lease_ttl: "2s", breaker: { failures: 2 } } } : {}),
      });
    writeFileSync(join(dir, "cp", "nodes", "node-a.yaml"), node(true));
    const cp = await startControlPlane({ dir: join(dir, "cp"), listen: "127.0.0.1:0", log: pino({ level: "silent" }) });
    writeFileSync(join(dir, "cert.pem"), rig.pki.server.chainPem);
    writeFileSync(join(dir, "key.pem"), rig.pki.server.keyPem);
    writeFileSync(
      join(dir, "boot.yaml"),
      `identity: { cert: cert.pem, key: key.pem }\ncontrol_plane: { address: "127.0.0.1:${cp.port}", node_id: node-a, backoff: { initial: 20ms, max: 100ms } }\n`,
    );
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(join(dir, "boot.yaml")), logs);
    try {
      await logs.next("lifecycle", (r) => r.msg === "shared limits backend connected");
      const port = agent.sidecar.addresses()["main"]!.port;
      expect(await rig.attempt(port, rig.alice)).toBe(true);
      expect(await rig.attempt(port, rig.alice)).toBe(false);
      expect(await rig.inspect.zCard(`${prefix}sessions:spiffe://a.test/alice`)).toBe(1);
      expect(agent.sidecar.sharedLimitsStatus()).toMatchObject({ state: "up", leases: 1 });
      // The next push has no shared_limits (and a local cap): the backend goes, the live session stays.
      writeFileSync(join(dir, "cp", "nodes", "node-a.yaml"), node(false));
      cp.reload();
      await waitFor(() => (agent.sidecar.sharedLimitsStatus() === undefined ? true : undefined), 10_000, "backend removed");
      expect(agent.sidecar.registry.all()).toHaveLength(1);
      expect(await rig.attempt(port, rig.alice)).toBe(false);
      expect(
        logs
          .of("decision")
          .filter((d) => d.decision === "deny")
          .map((d) => d.reasons),
      ).toEqual([["concurrency_limited"], ["concurrency_limited"]]);
    } finally {
      await agent.stop(50);
      await cp.close();
      await echo.close();
    }
  });
});
