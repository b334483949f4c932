// What SREs use: the admin endpoints, metrics that move with traffic, the denial-log cap, log
// categories, `parley tail`, the drain on SIGTERM, and the container files.
import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml, parseAllDocuments } from "yaml";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import { operations, type Operations } from "../src/app/operations.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { configYaml, dialTls, freePort, openSession, readAll, waitFor, writeFiles, type LogRecord } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let alice: Issued;
let mallory: Issued;

beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/allowed");
  mallory = await pki.leaf(pki.a, "spiffe://a.test/mallory");
});

interface Rig {
  sidecar: Sidecar;
  ops: Operations;
  records: LogRecord[];
  port: number;
  admin: number;
  echo: EchoServer;
  configFile: string;
  close(): Promise<void>;
}
let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

async function start(opts: { write?: boolean; extra?: string } = {}): Promise<Rig> {
  const echo = await startEcho("127.0.0.1", 0);
  const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
  const configFile = join(f.dir, "parley.yaml");
  writeFileSync(
    configFile,
    configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, (echo.server.address() as { port: number }).port, {
      extra: opts.extra ?? "",
    }),
  );
  const config = loadConfig(configFile);
  const records: LogRecord[] = [];
  const ops = operations(config.log, { listen: "127.0.0.1:0", write: opts.write ?? false }, { write: (l: string) => void records.push(JSON.parse(l)) });
  const sidecar = new Sidecar(config, { log: ops.log });
  await sidecar.start();
  const admin = (await ops.serveAdmin(sidecar))!.port;
  return {
    sidecar,
    ops,
    records,
    port: sidecar.addresses()["main"]!.port,
    admin,
    echo,
    configFile,
    async close() {
      await sidecar.stop(100);
      await ops.close();
      await echo.close();
    },
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the assertions read admin JSON bodies ad hoc
async function http(port: number, path: string, method = "GET"): Promise<{ status: number; body: string; json: () => any }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  const body = await res.text();
  return { status: res.status, body, json: () => JSON.parse(body) };
}

/** The value of one Prometheus sample, 0 if absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{([^}]*)\})? ([0-9.e+-]+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = Object.fromEntries([...(m[3] ?? "").matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(m[4]);
  }
  return 0;
}

describe("admin endpoints", () => {
  it("healthz, readyz, config (redacted) and an index of endpoints on 404", async () => {
    rig = await start();
    expect((await http(rig.admin, "/healthz")).body).toBe("ok\n");
    const ready = await http(rig.admin, "/readyz");
    expect([ready.status, ready.json().checks]).toEqual([
      200,
      { config_loaded: true, listeners_bound: true, own_svid_valid: true, config_fresh: true, not_draining: true },
    ]);
    const config = await http(rig.admin, "/config");
    expect(config.json()).toMatchObject({ version: rig.sidecar.config.version, identity: { id: "spiffe://a.test/sidecar", private_key: "redacted" } });
    expect(config.json().policies.main.rules[0]).toMatchObject({ name: "deny-banned", action: "deny", match: ["id spiffe://a.test/banned"] });
    expect(config.body).not.toContain("PRIVATE KEY");
    expect(config.body).not.toContain(pki.server.keyPem.split("\n")[1]!);
    expect((await http(rig.admin, "/nope")).status).toBe(404);
    expect((await http(rig.admin, "/config", "POST")).status).toBe(405);
  });

  it("sessions lists live sessions; revoking needs write enabled; a revoked session ends and is logged", async () => {
    rig = await start();
    const s = await openSession(rig.port, pki, alice);
    const list = (await http(rig.admin, "/sessions")).json().sessions;
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ peer_id: "spiffe://a.test/allowed", listener: "main", stage: "pumping", bytes_to_upstream: 4, bytes_to_client: 4 });
    expect(list[0].expires_at).toBe(new Date(Date.parse(list[0].expires_at)).toISOString());
    expect((await http(rig.admin, `/sessions/${list[0].id}/revoke`, "POST")).status).toBe(403);
    await rig.close();
    rig = await start({ write: true });
    const t = await openSession(rig.port, pki, alice);
    const id = (await http(rig.admin, "/sessions")).json().sessions[0].id;
    expect((await http(rig.admin, `/sessions/${id}/revoke`, "GET")).status).toBe(405);
    expect((await http(rig.admin, "/sessions/0123456789abcdef/revoke", "POST")).status).toBe(404);
    expect((await http(rig.admin, `/sessions/${id}/revoke`, "POST")).json()).toEqual({ revoked: id });
    await t.closed;
    await waitFor(() => rig!.records.find((r) => r.event === "session_end" && r.end_reason === "admin_revoked"), 2000, "end logged");
    expect(rig.records.some((r) => r.event === "lifecycle" && r.msg === "admin revoked a session" && r.session_id === id)).toBe(true);
    s.s.destroy();
  });
});

describe("metrics", () => {
  it("a revocation: the session it ends is counted by reason, and /config shows the entry", async () => {
    rig = await start();
    const s = await openSession(rig.port, pki, alice);
    appendFileSync(
      rig.configFile,
      "revocations:\n  incident-7: { reason: leaked key, until: 2099-01-01T00:00:00Z, match: [{ path_prefix: spiffe://a.test/allowed }] }\n",
    );
    expect(await rig.sidecar.reload()).toBe("applied");
    await s.closed;
    await waitFor(() => rig!.records.find((r) => r.event === "session_end" && r.end_reason === "revoked"), 2000, "end logged");
    const metrics = (await http(rig.admin, "/metrics")).body;
    expect(sample(metrics, "parley_revocations_total", { reason: "identity_revoked" })).toBe(1);
    expect((await http(rig.admin, "/config")).json().revocations).toEqual({
      "incident-7": { reason: "leaked key", until: "2099-01-01T00:00:00.000Z", match: ["path_prefix spiffe://a.test/allowed"] },
    });
  });

  it("move with traffic: decisions, handshakes, active sessions, bytes, ends, limits, own SVID expiry", async () => {
    rig = await start({ extra: "limits: { max_sessions: 1 }" });
    const before = (await http(rig.admin, "/metrics")).body;
    expect(sample(before, "parley_decisions_total", { decision: "allow" })).toBe(0);
    expect(sample(before, "parley_own_svid_expiry_seconds")).toBeGreaterThan(3600);
    expect(sample(before, "parley_config_info", { version: rig.sidecar.config.version })).toBe(1);
    const s = await openSession(rig.port, pki, alice);
    const during = (await http(rig.admin, "/metrics")).body;
    expect(sample(during, "parley_sessions_active", { listener: "main" })).toBe(1);
    expect(sample(during, "parley_handshake_duration_seconds_count", { listener: "main" })).toBe(1);
    const over = await dialTls(rig.port, pki, alice); // over max_sessions
    await readAll(over);
    const denied = await dialTls(rig.port, pki, mallory);
    await readAll(denied);
    s.s.end();
    await s.closed;
    await waitFor(() => rig!.records.some((r) => r.event === "session_end"), 2000, "end");
    const after = (await http(rig.admin, "/metrics")).body;
    expect(sample(after, "parley_decisions_total", { listener: "main", decision: "allow", reason: "explicit_allow" })).toBe(1);
    expect(sample(after, "parley_decisions_total", { decision: "deny", reason: "concurrency_limited" })).toBe(1);
    expect(sample(after, "parley_decisions_total", { decision: "deny", reason: "identity_not_allowed" })).toBe(1);
    expect(sample(after, "parley_decision_duration_seconds_count", { listener: "main" })).toBe(3);
    expect(sample(after, "parley_limit_hits_total", { kind: "concurrency_limited" })).toBe(1);
    expect(sample(after, "parley_sessions_active", { listener: "main" })).toBe(0);
    expect(sample(after, "parley_session_bytes_total", { direction: "to_upstream" })).toBe(4);
    expect(sample(after, "parley_session_ends_total", { reason: "completed" })).toBe(1);
  });
});

describe("decision log", () => {
  it("caps repeated identical denials and counts the suppressed ones", async () => {
    rig = await start({ extra: "log: { deny_cap: { burst: 3, window: 1s } }" });
    for (let i = 0; i < 12; i++) await readAll(await dialTls(rig.port, pki, mallory));
    const written = () => rig!.records.filter((r) => r.event === "decision" && r.peer_id === "spiffe://a.test/mallory");
    expect(written()).toHaveLength(3);
    expect(sample((await http(rig.admin, "/metrics")).body, "parley_log_suppressed_denials_total")).toBe(9);
    expect(sample((await http(rig.admin, "/metrics")).body, "parley_decisions_total", { reason: "identity_not_allowed" })).toBe(12);
    // When the window closes the count is written, so none is lost.
    const summary = await waitFor(() => rig!.records.find((r) => r.event === "denials_suppressed"), 3000, "suppressed count");
    expect(summary).toMatchObject({ peer_id: "spiffe://a.test/mallory", count: 9, source_ip: "127.0.0.1", reasons: ["identity_not_allowed", "default_deny"] });
    // Other identities' denials are not held back by mallory's flood.
    const other = await pki.leaf(pki.a, "spiffe://a.test/eve");
    await readAll(await dialTls(rig.port, pki, other));
    expect(rig.records.filter((r) => r.event === "decision" && r.peer_id === "spiffe://a.test/eve")).toHaveLength(1);
  });

  it("a category switched off writes nothing but still counts", async () => {
    rig = await start({ extra: "log: { categories: { decisions: false } }" });
    const s = await openSession(rig.port, pki, alice);
    s.s.end();
    await s.closed;
    await waitFor(() => rig!.records.some((r) => r.event === "session_end"), 2000, "session end still logged");
    expect(rig.records.filter((r) => r.event === "decision")).toHaveLength(0);
    expect(sample((await http(rig.admin, "/metrics")).body, "parley_decisions_total", { decision: "allow" })).toBe(1);
  });
});

describe("parley tail", () => {
  const tail = (...args: string[]) => spawnSync(process.execPath, ["dist/cli.js", "tail", ...args], { encoding: "utf8" });
  it("prints recorded logs as the golden view", () => {
    expect(tail("test/fixtures/decisions.log", "--no-color").stdout).toBe(readFileSync("test/fixtures/tail.golden", "utf8"));
  });
  it("summarises top denied identities and reasons (golden)", () => {
    expect(tail("test/fixtures/decisions.log", "--summary", "--no-color").stdout).toBe(readFileSync("test/fixtures/tail-summary.golden", "utf8"));
  });
  it("filters by denial, identity, reason, listener and time, and reads standard input", () => {
    const lines = (r: ReturnType<typeof tail>) => r.stdout.trim().split("\n");
    // Denials, and the count of identical ones the cap did not write one by one.
    expect(lines(tail("test/fixtures/decisions.log", "--deny", "--no-color")).map((l) => l.split(/\s+/)[1])).toEqual([
      ...Array<string>(6).fill("DENY"),
      "QUIET",
    ]);
    expect(lines(tail("test/fixtures/decisions.log", "--id", "ns/ops", "--no-color")).map((l) => l.split(/\s+/)[1])).toEqual(["ALLOW", "END", "REVOKE"]);
    expect(lines(tail("test/fixtures/decisions.log", "--reason", "invalid_svid", "--no-color"))).toHaveLength(1);
    expect(tail("test/fixtures/decisions.log", "--listener", "other", "--no-color").stdout).toBe("");
    expect(lines(tail("test/fixtures/decisions.log", "--since", "2026-11-23T19:30:00Z", "--no-color"))).toHaveLength(2);
    const stdin = spawnSync(process.execPath, ["dist/cli.js", "tail", "--deny", "--color"], {
      input: readFileSync("test/fixtures/decisions.log"),
      encoding: "utf8",
    });
    expect(stdin.stdout).toContain("\x1b[31mDENY  \x1b[0m");
    expect(tail("--since", "yesterday").status).toBe(2);
  });
});

describe("lifecycle", () => {
  it("SIGTERM drains: readiness goes false, new connections are refused, live sessions finish, the rest are closed and logged at the timeout, exit 0", async () => {
    const echo = await startEcho("127.0.0.1", 0);
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
    const admin = await freePort();
    const port = await freePort();
    const configFile = join(f.dir, "parley.yaml");
    writeFileSync(
      configFile,
      configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, (echo.server.address() as { port: number }).port)
        .replace("listen: 127.0.0.1:0", `listen: 127.0.0.1:${port}`)
        .replace('admin: { listen: "127.0.0.1:0" }', `admin: { listen: "127.0.0.1:${admin}" }\ndrain_timeout: 1500ms`),
    );
    const child = spawn(process.execPath, ["dist/cli.js", "run", "--config", configFile], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => out.includes("admin server ready"), 10_000, "start");
      const finishing = await openSession(port, pki, alice);
      const lingering = await openSession(port, pki, alice);
      child.kill("SIGTERM");
      await waitFor(() => out.includes('"msg":"draining"'), 3000, "drain");
      expect((await http(admin, "/readyz")).json()).toMatchObject({ ready: false, checks: { not_draining: false } });
      await expect(dialTls(port, pki, alice)).rejects.toThrow(/ECONNREFUSED/);
      finishing.s.write("+");
      await waitFor(() => finishing.got() === "ping+", 1000, "live session during drain");
      finishing.s.end();
      await finishing.closed;
      await lingering.closed;
      const code = await new Promise((r) => child.once("exit", r));
      expect(code).toBe(0);
      const ends = out
        .split("\n")
        .filter((l) => l.includes('"event":"session_end"'))
        .map((l) => JSON.parse(l).end_reason);
      expect(ends.sort()).toEqual(["completed", "drain_timeout"]);
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      await echo.close();
    }
  });
});

describe("container and Kubernetes files", () => {
  it("the Dockerfile is multi-stage, runs as non-root without dev dependencies, with a healthcheck", () => {
    const lines = readFileSync("Dockerfile", "utf8")
      .replace(/\\\n/g, " ")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    const froms = lines.filter((l) => l.startsWith("FROM "));
    expect(froms.length).toBeGreaterThanOrEqual(2);
    expect(froms[0]).toMatch(/ AS build$/);
    const runtime = lines.slice(lines.lastIndexOf(froms.at(-1)!));
    expect(runtime.some((l) => /^COPY --from=build /.test(l))).toBe(true);
    expect(runtime.find((l) => l.startsWith("USER "))).toMatch(/^USER (node|\d{4,})$/);
    expect(runtime.some((l) => /^RUN .*npm (ci|install)/.test(l))).toBe(false);
    expect(lines.some((l) => /npm prune --omit=dev|npm ci .*--omit=dev/.test(l))).toBe(true);
    const entry = runtime.find((l) => l.startsWith("ENTRYPOINT "))!;
    expect(JSON.parse(entry.slice("ENTRYPOINT ".length))).toEqual(["node", "/app/dist/cli.js"]);
    // The health check follows admin.listen of the file the sidecar runs on (PARLEY_CONFIG), no fixed port.
    const health = runtime.find((l) => l.startsWith("HEALTHCHECK "))!;
    expect(JSON.parse(health.slice(health.indexOf("CMD ") + 4)).slice(0, 3)).toEqual(["node", "/app/dist/cli.js", "health"]);
    expect(health).not.toMatch(/:\d{2,5}\b/);
    expect(runtime).toContain("ENV PARLEY_CONFIG=/etc/parley/parley.yaml");
    expect(JSON.parse(runtime.find((l) => l.startsWith("CMD "))!.slice(4))).toEqual(["run"]);
    expect(readFileSync(".dockerignore", "utf8")).toMatch(/node_modules/);
    // The allocator settings the bulk figures were measured with are the image's: glibc's malloc,
    // trimming only past 128 MiB and padding its top by 64 MiB; no preloaded allocator.
    const tunables = runtime
      .find((l) => l.startsWith("ENV GLIBC_TUNABLES="))!
      .slice("ENV GLIBC_TUNABLES=".length)
      .split(":");
    expect(tunables.sort()).toEqual(["glibc.malloc.top_pad=67108864", "glibc.malloc.trim_threshold=134217728"]);
    expect(runtime.some((l) => l.includes("LD_PRELOAD"))).toBe(false);
  });

  it("the Kubernetes example injects parley beside a workload that listens on loopback only", () => {
    const docs = parseAllDocuments(readFileSync("deploy/kubernetes/parley-sidecar.yaml", "utf8")).map((d) => d.toJS());
    const pod = docs.find((d) => d.kind === "Deployment")!.spec.template.spec;
    const app = pod.containers.find((c: { name: string }) => c.name === "app");
    const parley = pod.containers.find((c: { name: string }) => c.name === "parley");
    expect(app.env.find((e: { name: string }) => e.name === "LISTEN_ADDR").value).toMatch(/^127\.0\.0\.1:/);
    expect(app.ports ?? []).toHaveLength(0);
    expect(parley.args).toEqual(["run", "--config", "/etc/parley/parley.yaml"]);
    expect(parley.securityContext).toMatchObject({ runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    // Probes follow admin.listen of the mounted file (parley health), no port written twice.
    expect(parley.readinessProbe.exec.command).toEqual(["node", "/app/dist/cli.js", "health", "--ready", "--config", "/etc/parley/parley.yaml"]);
    expect(parley.livenessProbe.exec.command).toEqual(["node", "/app/dist/cli.js", "health", "--config", "/etc/parley/parley.yaml"]);
    const cm = docs.find((d) => d.kind === "ConfigMap")!;
    const config = parseYaml(cm.data["parley.yaml"]);
    expect(config.listeners[0].upstream).toMatch(/^127\.0\.0\.1:/);
    expect(config.admin.listen).toMatch(/^127\.0\.0\.1:/);
  });
});
