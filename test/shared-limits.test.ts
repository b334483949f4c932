// Limits shared across sidecars in a real redis-server: one identity's new-session rate drawn by two
// sidecars from one bucket, and the failure modes when Redis is gone.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { configView } from "../src/config/view.js";
import { ConfigError } from "../src/config/source.js";
import { configYaml, dialTls, limitedPolicy, tempDir, waitFor, writeFiles, type Harness } from "../testkit/harness.js";
import { ManualClock } from "../testkit/clock.js";
import { startRedis } from "../testkit/redis.js";
import { denials, sharedLimitsRig } from "../testkit/shared-rig.js";

const rig = sharedLimitsRig();

const policy = (scope: string) => limitedPolicy(`{ rate: { per_second: 1, burst: 2${scope} } }`);

/** Two sidecars with the same shared_limits (a fresh key prefix per test) and one clock. */
async function twoSidecars(onUnavailable: "deny" | "local", clock: ManualClock): Promise<[Harness, Harness]> {
  const extra = rig.section(rig.prefix("t"), `on_unavailable: ${onUnavailable}, timeout: 1s`);
  const [h1, h2] = await rig.sidecars(2, { policies: policy(", scope: shared"), extra, now: clock.now });
  return [h1!, h2!];
}

/** Opens a session on `h` and reports whether it was admitted (echo came back) or closed. */
const attempt = (h: Harness, creds: Issued) => rig.attempt(h.port, creds);

describe("shared new-session rate", () => {
  it("draws one identity's burst from one bucket across two sidecars", async () => {
    const clock = new ManualClock();
    const [h1, h2] = await twoSidecars("deny", clock);
    expect(await attempt(h1, rig.alice)).toBe(true);
    expect(await attempt(h2, rig.alice)).toBe(true);
    // Burst 2 is spent across both: the third is refused on either sidecar.
    expect(await attempt(h1, rig.alice)).toBe(false);
    expect(await attempt(h2, rig.alice)).toBe(false);
    expect(denials(h1)).toEqual([["rate_limited"]]);
    expect(denials(h2)).toEqual([["rate_limited"]]);
    expect(h1.sidecar.limitCounts.get("rate_limited")).toBe(1);
    // Another identity has its own bucket.
    expect(await attempt(h2, rig.bob)).toBe(true);
    clock.advance(1000); // one new token, for the whole mesh
    expect(await attempt(h2, rig.alice)).toBe(true);
    expect(await attempt(h1, rig.alice)).toBe(false);
  });

  it("denies with shared_limits_unavailable when Redis is gone and the mode is deny; resumes when back", async () => {
    const clock = new ManualClock();
    const [h1] = await twoSidecars("deny", clock);
    expect(await attempt(h1, rig.alice)).toBe(true);
    await rig.redis.stop();
    await h1.logs.next("warning", (r) => r.msg === "shared limits backend lost");
    expect(await attempt(h1, rig.alice)).toBe(false);
    expect(await attempt(h1, rig.bob)).toBe(false);
    expect(denials(h1)).toEqual([["shared_limits_unavailable"], ["shared_limits_unavailable"]]);
    expect(h1.sidecar.limitCounts.get("shared_limits_unavailable")).toBe(2);
    expect(h1.logs.of("warning").filter((r) => r.msg === "shared limits backend failing: its failure mode applies")).toHaveLength(1);
    // Redis back (empty): the client reconnects and the shared bucket applies again.
    await rig.redis.restart();
    await waitFor(() => h1.logs.of("lifecycle").filter((r) => r.msg === "shared limits backend connected").length === 2, 10_000, "reconnection");
    expect(await attempt(h1, rig.alice)).toBe(true);
    expect(await attempt(h1, rig.alice)).toBe(true);
    expect(await attempt(h1, rig.alice)).toBe(false);
    expect(denials(h1).at(-1)).toEqual(["rate_limited"]);
  });

  it("falls back to each sidecar's own bucket when Redis is gone and the mode is local", async () => {
    const clock = new ManualClock();
    const [h1, h2] = await twoSidecars("local", clock);
    await rig.redis.stop();
    await Promise.all([h1, h2].map((h) => h.logs.next("warning", (r) => r.msg === "shared limits backend lost")));
    // Each sidecar now counts alone: burst 2 on each, the third on either refused by its local bucket.
    for (const h of [h1, h2]) {
      expect(await attempt(h, rig.alice)).toBe(true);
      expect(await attempt(h, rig.alice)).toBe(true);
      expect(await attempt(h, rig.alice)).toBe(false);
      expect(denials(h)).toEqual([["rate_limited"]]);
      expect(h.sidecar.limitCounts.get("shared_limits_fallback")).toBe(3);
    }
  });

  it("keeps sessions admitted before Redis went away", async () => {
    const clock = new ManualClock();
    const [h1] = await twoSidecars("deny", clock);
    const s = await dialTls(h1.port, rig.pki, rig.alice);
    rig.sockets.push(s);
    let got = "";
    s.on("data", (c: Buffer) => (got += c.toString()));
    s.write("a");
    await waitFor(() => got === "a", 3000, "echo");
    await rig.redis.stop();
    await h1.logs.next("warning", (r) => r.msg === "shared limits backend lost");
    s.write("b");
    await waitFor(() => got === "ab", 3000, "echo after Redis stopped");
  });
});

describe("shared limits over TLS with a password (rediss://)", () => {
  it("connects with the configured CA and password; a wrong password leaves shared bounds refused", async () => {
    const dir = tempDir();
    const [cert, key] = [join(dir, "redis.pem"), join(dir, "redis.key")];
    const made = spawnSync("openssl", [
      ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=redis.test"],
      ...["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
    ]);
    expect(made.status).toBe(0);
    const tls = await startRedis({ tls: { certFile: cert, keyFile: key }, password: "s3cret" });
    try {
      expect(tls.url).toMatch(/^rediss:\/\/:s3cret@127\.0\.0\.1:\d+$/);
      const clock = new ManualClock();
      const section = (url: string) => rig.section(rig.prefix("tls"), `ca: ${cert}, timeout: 1s`, url);
      const h = await rig.start({ policies: policy(", scope: shared"), extra: section(tls.url), now: clock.now });
      await h.logs.next("lifecycle", (r) => r.msg === "shared limits backend connected");
      expect(await attempt(h, rig.alice)).toBe(true);
      expect(await attempt(h, rig.alice)).toBe(true);
      expect(await attempt(h, rig.alice)).toBe(false);
      expect(denials(h)).toEqual([["rate_limited"]]);
      // The same server, a wrong password: never connected, so shared bounds fail closed.
      const wrong = await rig.start({ policies: policy(", scope: shared"), extra: section(tls.url.replace("s3cret", "guess")), now: clock.now });
      const refused = await wrong.logs.next("warning", (r) => r.msg === "shared limits backend cannot connect", 10_000);
      expect(String(refused.error)).toMatch(/WRONGPASS/);
      expect(await attempt(wrong, rig.bob)).toBe(false);
      expect(denials(wrong)).toEqual([["shared_limits_unavailable"]]);
      expect(wrong.sidecar.sharedLimitsStatus()?.state).not.toBe("up");
    } finally {
      await tls.stop();
    }
  });
});

describe("shared_limits reloaded", () => {
  it("takes effect when a reload adds it, and a changed URL reconnects while admitted sessions go on", async () => {
    const clock = new ManualClock();
    const h = await rig.start({ policies: policy(""), now: clock.now });
    const live = await dialTls(h.port, rig.pki, rig.bob);
    rig.sockets.push(live);
    let got = "";
    live.on("data", (c: Buffer) => (got += c.toString()));
    live.write("a");
    await waitFor(() => got === "a", 3000, "echo");
    const prefix = rig.prefix("r");
    h.rewrite({ policies: policy(", scope: shared"), extra: rig.section(prefix) });
    expect(await h.sidecar.reload()).toBe("applied");
    await h.logs.next("lifecycle", (r) => r.msg === "shared limits backend connected");
    expect(await attempt(h, rig.alice)).toBe(true);
    expect(await attempt(h, rig.alice)).toBe(true);
    expect(await attempt(h, rig.alice)).toBe(false);
    expect(denials(h)).toEqual([["rate_limited"]]);
    // Another Redis: the sidecar connects to it (a fresh bucket there), the live session goes on.
    const other = await startRedis();
    try {
      h.rewrite({ policies: policy(", scope: shared"), extra: rig.section(prefix, "timeout: 1s", other.url) });
      expect(await h.sidecar.reload()).toBe("applied");
      await waitFor(() => h.logs.of("lifecycle").filter((r) => r.msg === "shared limits backend connected").length === 2, 10_000, "reconnection");
      expect(h.logs.of("lifecycle").some((r) => r.msg === "shared limits reconfigured" && r.url_changed === true)).toBe(true);
      expect(await attempt(h, rig.alice)).toBe(true);
      live.write("b");
      await waitFor(() => got === "ab", 3000, "echo on the session admitted before");
    } finally {
      await other.stop();
    }
  });
});

describe("shared_limits configuration", () => {
  const load = (extra: string, scope = ", scope: shared", limits?: string) => {
    const f = writeFiles({ "cert.pem": rig.pki.server.chainPem, "key.pem": rig.pki.server.keyPem, "a.pem": rig.pki.a.certPem, "b.pem": rig.pki.b.certPem });
    const paths = { cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! };
    const file = writeFiles({ "c.yaml": configYaml(paths, 9, { policies: limits ? limitedPolicy(limits) : policy(scope), extra }) })["c.yaml"]!;
    return loadConfig(file);
  };
  const issues = (extra: string, scope?: string, limits?: string) => {
    try {
      load(extra, scope, limits);
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
    }
    throw new Error("config was accepted");
  };

  it("defaults to fail closed, a 50 ms timeout and the parley: prefix", () => {
    expect(load(`shared_limits: { url: "rediss://u:p@redis.internal:6380/0" }\n`).sharedLimits).toEqual({
      url: "rediss://u:p@redis.internal:6380/0",
      keyPrefix: "parley:",
      onUnavailable: "deny",
      timeoutMs: 50,
      leaseTtlMs: 15_000,
      breakerFailures: 3,
      breakerProbeMs: 1000,
    });
    expect(load("", "").sharedLimits).toBeUndefined();
  });

  it("shows the backend in /config with the file's keys, durations in ms, no password and no CA", () => {
    const ca = writeFiles({ "ca.pem": rig.pki.a.certPem })["ca.pem"]!;
    const c = load(
      `shared_limits: { url: "rediss://u:secret@redis.internal:6380/0", ca: ${ca}, lease_ttl: 2s, breaker: { failures: 5, probe_interval: 3s } }\n`,
    );
    const view = configView({ ...c, identity: c.identity! }, { source: "files", connected: true, lastUpdate: undefined, svid: c.identity, usable: true });
    expect(view.shared_limits).toEqual({
      url: "rediss://u:redacted@redis.internal:6380/0",
      key_prefix: "parley:",
      on_unavailable: "deny",
      timeout_ms: 50,
      lease_ttl_ms: 2000,
      breaker: { failures: 5, probe_interval_ms: 3000 },
    });
    expect(JSON.stringify(view)).not.toContain("secret");
  });

  it("refuses shared concurrency and task bounds without a backend, and per_task without a bound", () => {
    const all = issues("", undefined, "{ max_sessions: { max: 2, scope: shared }, per_task: { max_sessions: 1, scope: shared } }").join("\n");
    expect(all).toMatch(/rules\[0\]\.limits\.max_sessions\.scope: a shared limit needs a shared_limits section/);
    expect(all).toMatch(/rules\[0\]\.limits\.per_task\.scope: a shared limit needs a shared_limits section/);
    expect(issues("", undefined, "{ per_task: { scope: local } }").join("\n")).toMatch(/per_task needs max_sessions, per_minute or both/);
    expect(issues("", undefined, "{ per_task: { max_sessions: 1, burst: 3 } }").join("\n")).toMatch(/burst is the burst of per_minute/);
    const rule = load("", "", "{ max_sessions: { max: 2 }, per_task: { per_minute: 30 } }").policies.get("main")!.rules[0]!;
    expect(rule.limits).toMatchObject({ maxSessions: 2, perTask: { rate: { perSecond: 0.5, burst: 30 } } });
    expect(rule.limits.maxSessionsShared).toBeUndefined();
  });

  it("refuses a shared rate without a backend, and a URL that is not redis:// or rediss://", () => {
    expect(issues("").join("\n")).toMatch(/policies\.main\.rules\[0\]\.limits\.rate\.scope: a shared limit needs a shared_limits section/);
    expect(issues(`shared_limits: { url: "http://redis:6379" }\n`).join("\n")).toMatch(/shared_limits\.url: expected a redis:\/\/ or rediss:\/\/ URL/);
    expect(issues(`shared_limits: { url: "redis://redis:6379/zero" }\n`).join("\n")).toMatch(/shared_limits\.url: the URL's path must be a database number/);
    expect(issues(`shared_limits: { url: "redis://x", lease_ttl: 500ms }\n`).join("\n")).toMatch(/shared_limits\.lease_ttl: lease_ttl must be at least 1s/);
    expect(issues(`shared_limits: { url: "redis://x", ca: /no/such.pem }\n`).join("\n")).toMatch(/shared_limits\.ca: a CA is for TLS: use a rediss:\/\/ URL/);
    expect(load(`shared_limits: { url: "redis://x:6379/3", lease_ttl: 2s }\n`).sharedLimits).toMatchObject({ url: "redis://x:6379/3", leaseTtlMs: 2000 });
    expect(issues(`shared_limits: { url: "redis://x", on_unavailable: open }\n`).join("\n")).toMatch(/shared_limits\.on_unavailable/);
  });
});
