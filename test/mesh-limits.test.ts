// Three sidecars sharing one real redis-server, as a mesh runs them: an identity's concurrent
// sessions never exceed the shared cap across the three, its new-session rate across the three stays
// within the bound over 10 s (a shared injected clock), a sidecar killed with SIGKILL (a child
// process) frees its leases within the TTL, and Redis stopping mid-run applies the failure mode
// while admitted sessions go on, until Redis is back and the shared limits resume.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { afterEach, describe, expect, it } from "vitest";
import { until } from "../testkit/attempt.js";
import { ManualClock } from "../testkit/clock.js";
import { configYaml, limitedPolicy, waitFor, writeFiles, type Harness } from "../testkit/harness.js";
import { denials, sharedLimitsRig } from "../testkit/shared-rig.js";

const rig = sharedLimitsRig();
const { sockets } = rig;
let children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children) c.kill("SIGKILL");
  children = [];
});

const sharedSection = (prefix: string) => rig.section(prefix, "timeout: 1s, lease_ttl: 1s");

async function three(limits: string, now?: () => number): Promise<{ hs: Harness[]; prefix: string }> {
  const prefix = rig.prefix("m");
  const hs = await rig.sidecars(3, { policies: limitedPolicy(limits), extra: sharedSection(prefix), ...(now ? { now } : {}) });
  return { hs, prefix };
}

const reasons = (hs: Harness[]) => hs.flatMap((h) => denials(h).map((r) => (r as string[])[0]));

/** `parley run` in a child process with its own config; resolves with its listener's port once connected to Redis. */
async function childSidecar(limits: string, prefix: string, upstreamPort: number): Promise<{ child: ChildProcess; port: number }> {
  const f = writeFiles({ "cert.pem": rig.pki.server.chainPem, "key.pem": rig.pki.server.keyPem, "a.pem": rig.pki.a.certPem, "b.pem": rig.pki.b.certPem });
  const paths = { cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! };
  const file = writeFiles({ "c.yaml": configYaml(paths, upstreamPort, { policies: limitedPolicy(limits), extra: sharedSection(prefix) }) })["c.yaml"]!;
  const child = spawn(process.execPath, ["dist/cli.js", "run", "--config", file, "--no-watch"], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  let port = 0;
  let connected = false;
  await new Promise<void>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`parley run exited ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const r = JSON.parse(line) as { msg?: string; address?: string };
      if (r.msg === "listener ready") port = Number(r.address!.split(":").pop());
      if (r.msg === "shared limits backend connected") connected = true;
      if (port && connected) resolve();
    });
  });
  return { child, port };
}

describe("three sidecars, one Redis", () => {
  it("never admits more of an identity's sessions than the shared cap; Redis gone denies new ones, admitted ones go on; back, the cap resumes", async () => {
    const { hs, prefix } = await three("{ max_sessions: { max: 3, scope: shared } }");
    // Nine at once, three on each sidecar: exactly three admitted in all.
    const results = await Promise.all(Array.from({ length: 9 }, (_, i) => rig.attempt(hs[i % 3]!.port, rig.alice)));
    expect(reasons(hs)).toEqual(Array.from({ length: 6 }, () => "concurrency_limited"));
    expect(results.filter(Boolean)).toHaveLength(3);
    expect(await rig.inspect.zCard(`${prefix}sessions:spiffe://a.test/alice`)).toBe(3);
    const live = sockets.filter((_, i) => results[i]);
    // Redis dies: every sidecar refuses new sessions (deny), the admitted ones still carry bytes.
    await rig.redis.stop();
    await Promise.all(hs.map((h) => h.logs.next("warning", (r) => r.msg === "shared limits backend lost")));
    for (const h of hs) expect(await rig.attempt(h.port, rig.alice)).toBe(false);
    expect(reasons(hs).filter((r) => r === "shared_limits_unavailable")).toHaveLength(3);
    for (const s of live) {
      let got = "";
      s.on("data", (c: Buffer) => (got += c.toString()));
      s.write("still");
      await waitFor(() => got.endsWith("still") || undefined, 3000, "echo on an admitted session");
    }
    // Redis back (empty): renewals put the three live leases back, and the cap holds again.
    await rig.redis.restart();
    await until(async () => (await rig.inspect.zCard(`${prefix}sessions:spiffe://a.test/alice`)) === 3, 10_000, "leases renewed into Redis");
    await until(() => Promise.resolve(hs.every((h) => h.sidecar.sharedLimitsStatus()?.state === "up")), 10_000, "all reconnected");
    expect(await rig.attempt(hs[1]!.port, rig.alice)).toBe(false);
    expect(reasons([hs[1]!]).at(-1)).toBe("concurrency_limited");
    live[0]!.destroy();
    await until(async () => (await rig.inspect.zCard(`${prefix}sessions:spiffe://a.test/alice`)) === 2, 5000, "release");
    expect(await rig.attempt(hs[2]!.port, rig.alice)).toBe(true);
  });

  it("keeps an identity's new-session rate across the three within ±10 % of the bound over 10 s", async () => {
    const clock = new ManualClock();
    const { hs } = await three("{ rate: { per_second: 2, burst: 2, scope: shared } }", clock.now);
    // One attempt every 100 ms of the shared clock, round robin over the sidecars, for 10 s.
    let admitted = 0;
    const perSidecar = [0, 0, 0];
    for (let i = 0; i < 100; i++) {
      if (await rig.attempt(hs[i % 3]!.port, rig.alice)) {
        admitted++;
        perSidecar[i % 3]!++;
      }
      sockets.pop()!.destroy();
      clock.advance(100);
    }
    const bound = 2 + 2 * 10; // the burst, then 2 a second for 10 s
    expect(admitted).toBeGreaterThanOrEqual(bound * 0.9);
    expect(admitted).toBeLessThanOrEqual(bound * 1.1);
    expect(perSidecar.every((n) => n > 0)).toBe(true);
    expect(reasons(hs).every((r) => r === "rate_limited")).toBe(true);
  });

  it("frees the leases of a sidecar killed with SIGKILL within the lease TTL", async () => {
    const { hs, prefix } = await three("{ max_sessions: { max: 2, scope: shared } }");
    const key = `${prefix}sessions:spiffe://a.test/alice`;
    const upstream = (hs[0]!.echo.server.address() as { port: number }).port;
    const { child, port } = await childSidecar("{ max_sessions: { max: 2, scope: shared } }", prefix, upstream);
    expect(await rig.attempt(port, rig.alice)).toBe(true);
    expect(await rig.attempt(port, rig.alice)).toBe(true);
    expect(await rig.attempt(hs[0]!.port, rig.alice)).toBe(false);
    const killed = (await rig.inspect.zRange(key, 0, -1)).sort();
    expect(killed).toHaveLength(2);
    child.kill("SIGKILL");
    // Nobody releases or renews them: they expire by the Redis clock, one TTL after the last renewal.
    await until(() => rig.attempt(hs[1]!.port, rig.alice), 10_000, "a first slot on another sidecar");
    await until(() => rig.attempt(hs[2]!.port, rig.alice), 10_000, "a second slot on another sidecar");
    const now = await rig.inspect.zRange(key, 0, -1);
    expect(now).toHaveLength(2);
    expect(now.filter((m) => killed.includes(m))).toEqual([]);
    expect(await rig.attempt(hs[0]!.port, rig.alice)).toBe(false);
  });
});
