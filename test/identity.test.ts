// The sidecar's own identity in every mode (issue 16), one describe per numbered item: the CLI's
// signals with Workload API identity, TLS settings that survive rotations of either source, the
// Workload API's error handling by the SPIFFE standards, what operators see, and the config edges.
// Everything runs over real sockets: a Workload API server on a unix socket (testkit/workloadapi.ts),
// real TLS 1.2 renegotiation attempts, the real CLI for signals.
import { spawn, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { mkdirSync } from "node:fs";
import { pino } from "pino";
import { assembleSidecar, type RunningSidecar } from "../src/app/assemble.js";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { loadBootstrap, loadConfig } from "../src/config/load.js";
import { startControlPlane } from "../src/control/server/plane.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import { workloadTarget } from "../src/workloadapi/endpoint.js";
import { dialTls, freePort, MemoryLog, openSession, readAll, startHarness, tempDir, waitFor, writeFiles, type LogRecord } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";
import { TestWorkloadApi } from "../testkit/workloadapi.js";

let pki: TestPki;
let alice: Issued;

beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/allowed");
});

const newSvid = () => pki.leaf(pki.a, "spiffe://a.test/sidecar", { dnsNames: ["localhost"] });

/** The config of a sidecar whose identity comes from the Workload API at `endpoint`. */
function workloadConfig(endpoint: string, upstream: number, extra = ""): string {
  return `identity: { workload_api: { endpoint: "${endpoint}" } }
trust_domains: {}
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:${upstream}", policy: main }
policies:
  main:
    rules:
      - { name: allowed, action: allow, match: [{ id: spiffe://a.test/allowed }, { trust_domain: b.test }] }
${extra}`;
}

/** The parts of `/readyz` and `/config` these tests read. */
interface AdminJson {
  checks: Record<string, boolean>;
  identity: Record<string, unknown>;
}

interface Rig {
  api: TestWorkloadApi;
  run: RunningSidecar;
  logs: MemoryLog;
  echo: EchoServer;
  port(): number;
  http(path: string): Promise<{ status: number; json: () => AdminJson; body: string }>;
  close(): Promise<void>;
}
let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

interface RigOptions {
  /** How the endpoint is written: `unix:/path` or `unix:///path`. */
  form?: "unix:/" | "unix:///";
  backoff?: { initialMs: number; maxMs: number };
  /** Prepares the server before the sidecar connects. */
  before?: (api: TestWorkloadApi) => void;
}

/** A sidecar assembled as `parley run` does (admin on), its identity from a Workload API server. */
async function startRig(o: RigOptions = {}): Promise<Rig> {
  const dir = tempDir();
  const socket = join(dir, "agent.sock");
  const api = new TestWorkloadApi(socket, pki.a, { svid: await newSvid(), federated: { "spiffe://b.test": pki.b } });
  o.before?.(api);
  await api.listen();
  const echo = await startEcho("127.0.0.1", 0);
  const endpoint = (o.form ?? "unix:///") === "unix:/" ? `unix:${socket}` : `unix://${socket}`;
  writeFileSync(join(dir, "parley.yaml"), workloadConfig(endpoint, (echo.server.address() as { port: number }).port));
  const logs = new MemoryLog();
  const run = await assembleSidecar(
    { kind: "file", config: loadConfig(join(dir, "parley.yaml")), watch: false },
    {
      version: "test",
      admin: { listen: "127.0.0.1:0", write: false },
      destination: logs.destination,
      workloadBackoff: o.backoff ?? { initialMs: 50, maxMs: 200 },
    },
  );
  return {
    api,
    run,
    logs,
    echo,
    port: () => run.sidecar.addresses()["main"]!.port,
    async http(path) {
      const res = await fetch(`http://127.0.0.1:${run.admin!.port}${path}`);
      const body = await res.text();
      return { status: res.status, body, json: () => JSON.parse(body) as AdminJson };
    },
    async close() {
      await run.stop(100);
      api.close();
      await echo.close();
    },
  };
}

const applied = (logs: MemoryLog, pred: (r: LogRecord) => boolean = () => true) =>
  logs.next("lifecycle", (r) => r.msg === "identity from the Workload API applied" && pred(r));

/** Attempts a TLS 1.2 renegotiation on an established mTLS session: "accepted" or the error code. */
function renegotiation(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host: "127.0.0.1", port, servername: "localhost", ca: pki.a.certPem, cert: alice.chainPem, key: alice.keyPem, maxVersion: "TLSv1.2" });
    s.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.once("secureConnect", () =>
      s.renegotiate({ rejectUnauthorized: false }, (e) => {
        s.destroy();
        resolve(e ? ((e as NodeJS.ErrnoException).code ?? e.message) : "accepted");
      }),
    );
  });
}

/** The fingerprint of the certificate the sidecar presents to a new handshake. */
async function served(port: number): Promise<string> {
  const s = await dialTls(port, pki, alice);
  const fp = s.getPeerX509Certificate()!.fingerprint256;
  s.destroy();
  return fp;
}
const colonHex = (hex: string) => hex.toUpperCase().replace(/(..)(?!$)/g, "$1:");
const serialOf = (i: Issued) => new X509Certificate(i.certPem).serialNumber.toLowerCase();
const fingerprintOf = (i: Issued) => new X509Certificate(i.certPem).fingerprint256;

/** Polls an asynchronous probe until it holds. */
async function eventually(probe: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("1. Workload API identity under `parley run` (watching): signals", () => {
  it("SIGHUP reloads without exiting and sessions live on; SIGTERM drains with exit 0", async () => {
    const dir = tempDir();
    const socket = join(dir, "agent.sock");
    const api = new TestWorkloadApi(socket, pki.a, { svid: await newSvid(), federated: {} });
    await api.listen();
    const echo = await startEcho("127.0.0.1", 0);
    const [port, admin] = [await freePort(), await freePort()];
    const config = join(dir, "parley.yaml");
    writeFileSync(
      config,
      workloadConfig(
        `unix://${socket}`,
        (echo.server.address() as { port: number }).port,
        `admin: { listen: "127.0.0.1:${admin}" }\ndrain_timeout: 5s\n`,
      ).replace("127.0.0.1:0", `127.0.0.1:${port}`),
    );
    const child = spawn(process.execPath, ["dist/cli.js", "run", "--config", config], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    const unchanged = () => out.split("\n").filter((l) => l.includes('"msg":"configuration unchanged"')).length;
    try {
      await waitFor(() => out.includes("identity from the Workload API applied") && out.includes("admin server ready") && unchanged() >= 1, 10_000, "start");
      const live = await openSession(port, pki, alice);
      child.kill("SIGHUP");
      await waitFor(() => unchanged() >= 2, 5000, "the reload SIGHUP asks for");
      expect(child.exitCode).toBeNull();
      live.s.write("!");
      await waitFor(() => live.got() === "ping!", 2000, "the live session after SIGHUP");
      expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(200);
      child.kill("SIGTERM");
      await waitFor(() => out.includes('"msg":"draining"'), 5000, "drain");
      live.s.end();
      await live.closed;
      expect(await new Promise((r) => child.once("exit", r))).toBe(0);
      expect(out).toContain('"end_reason":"completed"');
      expect(err).toBe("");
    } finally {
      if (child.exitCode === null) child.kill("SIGKILL");
      api.close();
      await echo.close();
    }
  });
});

describe("2. TLS settings survive identity rotations", () => {
  it("renegotiation is refused before and after a rotation from files", async () => {
    const h = await startHarness(pki);
    try {
      expect(await renegotiation(h.port)).toBe("ERR_SSL_NO_RENEGOTIATION");
      const next = await newSvid();
      const { files } = loadConfig(h.configFile);
      writeFileSync(
        files.find((f) => f.endsWith("cert.pem"))!,
        next.chainPem,
      );
      writeFileSync(
        files.find((f) => f.endsWith("key.pem"))!,
        next.keyPem,
      );
      expect(await h.sidecar.reload()).toBe("applied");
      expect(await served(h.port)).toBe(fingerprintOf(next));
      expect(await renegotiation(h.port)).toBe("ERR_SSL_NO_RENEGOTIATION");
    } finally {
      await h.close();
    }
  });

  it("renegotiation is refused after rotations from the Workload API", async () => {
    rig = await startRig();
    await applied(rig.logs);
    expect(await renegotiation(rig.port())).toBe("ERR_SSL_NO_RENEGOTIATION");
    for (let i = 0; i < 2; i++) {
      const next = await newSvid();
      rig.api.push({ svid: next, federated: { "spiffe://b.test": pki.b } });
      await eventually(async () => (await served(rig!.port())) === fingerprintOf(next), "the rotated SVID served");
      expect(await renegotiation(rig.port())).toBe("ERR_SSL_NO_RENEGOTIATION");
    }
  });
});

describe("3. the Workload API by the SPIFFE standards", () => {
  it("PermissionDenied after an SVID was issued withdraws it: fail closed, say so, readiness false; a new SVID serves again", async () => {
    rig = await startRig();
    const first = await applied(rig.logs);
    const live = await openSession(rig.port(), pki, alice);
    rig.api.answer("FetchX509SVID", grpc.status.PERMISSION_DENIED, "entry deleted", 1000);
    rig.api.end("FetchX509SVID", grpc.status.PERMISSION_DENIED, "entry deleted");
    const withdrawn = await rig.logs.next("error", (r) => String(r.msg).startsWith("own SVID withdrawn"));
    expect(withdrawn).toMatchObject({ serial: first.serial, detail: "PERMISSION_DENIED: entry deleted" });
    expect(await rig.logs.next("revoked")).toMatchObject({ cause: "own_svid_withdrawn", reasons: ["own_svid_withdrawn"] });
    await live.closed;
    const ready = await rig.http("/readyz");
    expect([ready.status, ready.json().checks.own_svid_valid, ready.json().identity.usable]).toEqual([503, false, false]);
    const denied = await dialTls(rig.port(), pki, alice);
    expect((await readAll(denied)).length).toBe(0);
    expect((await rig.logs.next("decision", (r) => r.decision === "deny")).reasons).toEqual(["own_svid_withdrawn"]);
    rig.api.answers.FetchX509SVID.length = 0;
    await rig.logs.next("lifecycle", (r) => r.msg === "a new own SVID arrived after the withdrawal: serving again");
    expect((await rig.http("/readyz")).status).toBe(200);
    expect((await openSession(rig.port(), pki, alice)).got()).toBe("ping");
  });

  it("InvalidArgument is reported naming the cause and not retried", async () => {
    rig = await startRig({
      before: (api) => {
        api.answer("FetchX509SVID", grpc.status.INVALID_ARGUMENT, "malformed request");
        api.answer("FetchJWTBundles", grpc.status.UNAVAILABLE, "warming up", 3);
      },
    });
    const given = await rig.logs.next("error", (r) => r.stream === "x509" && r.code === "INVALID_ARGUMENT");
    expect(given.msg).toMatch(/given up .*not retried/);
    expect(given.detail).toBe("malformed request");
    expect(given.retry_in_ms).toBeUndefined();
    // The JWT stream backs off three times (50, 100, 200 ms): an X.509 retry would have come by then.
    await waitFor(() => rig!.api.calls.FetchJWTBundles >= 4, 5000, "the JWT stream's retries");
    expect(rig.api.calls.FetchX509SVID).toBe(1);
    expect((await rig.http("/readyz")).json().identity).toMatchObject({ connected: false, failed: "INVALID_ARGUMENT: malformed request", id: null });
  });

  it("a stream the server ends is reopened at once, then failures back off", async () => {
    rig = await startRig({ backoff: { initialMs: 60_000, maxMs: 60_000 } });
    await applied(rig.logs);
    rig.api.end("FetchX509SVID", grpc.status.OK);
    await waitFor(() => rig!.api.calls.FetchX509SVID === 2, 5000, "an immediate reconnect after a clean end");
    rig.api.end("FetchX509SVID", grpc.status.UNAVAILABLE, "agent restarting");
    await waitFor(() => rig!.api.calls.FetchX509SVID === 3, 5000, "an immediate reconnect after UNAVAILABLE");
    rig.api.answer("FetchX509SVID", grpc.status.UNAVAILABLE, "still down");
    rig.api.end("FetchX509SVID", grpc.status.UNAVAILABLE, "agent restarting");
    const backoff = await rig.logs.next("error", (r) => r.stream === "x509" && r.detail === "still down");
    expect(backoff.retry_in_ms).toBeGreaterThanOrEqual(30_000);
    const reopen = rig.logs.of("lifecycle").filter((r) => r.msg === "Workload API stream ended: reconnecting at once" && r.stream === "x509");
    expect(reopen.map((r) => r.retry_in_ms)).toEqual([0, 0, 0]);
  });

  it("both unix:/path and unix:///path reach the server", async () => {
    expect(workloadTarget("unix:/run/agent.sock")).toBe("unix:///run/agent.sock");
    expect(workloadTarget("unix:///run/agent.sock")).toBe("unix:///run/agent.sock");
    expect(() => workloadTarget("unix://host/run/agent.sock")).toThrow(/no authority/);
    expect(() => workloadTarget("unix:run/agent.sock")).toThrow(/absolute path/);
    expect(() => workloadTarget("tcp://127.0.0.1:8000/foo")).toThrow(/nothing else/);
    rig = await startRig({ form: "unix:/" });
    await applied(rig.logs);
    expect((await openSession(rig.port(), pki, alice)).got()).toBe("ping");
  });
});

describe("4. what operators see", () => {
  it("metrics and readiness for the Workload API source; no control-plane gauge without a control plane", async () => {
    rig = await startRig();
    const first = await applied(rig.logs);
    const [serial, fingerprint] = [String(first.serial), String(first.fingerprint)];
    const metrics = (await rig.http("/metrics")).body;
    expect(metrics).toContain('parley_identity_source_connected{source="workload_api"} 1');
    expect(metrics).toMatch(/parley_identity_last_update_timestamp_seconds\{source="workload_api"\} \d+/);
    expect(metrics).toContain(`parley_own_svid_info{source="workload_api",id="spiffe://a.test/sidecar",serial="${serial}",fingerprint="${fingerprint}"} 1`);
    expect(metrics).toContain(`parley_own_svid_not_after_timestamp_seconds{source="workload_api"} ${Date.parse(String(first.not_after)) / 1000}`);
    expect(metrics).toContain('parley_identity_updates_total{source="workload_api",outcome="applied"} 1');
    expect(metrics).not.toContain("parley_control_plane_connected");
    expect((await rig.http("/readyz")).json().identity).toMatchObject({ source: "workload_api", connected: true, serial: first.serial, usable: true });
    rig.api.answer("FetchX509SVID", grpc.status.UNAVAILABLE, "down", 1000);
    rig.api.end("FetchX509SVID", grpc.status.UNAVAILABLE);
    await eventually(async () => (await rig!.http("/metrics")).body.includes('parley_identity_source_connected{source="workload_api"} 0'), "disconnected");
  });

  it("identity applied names serial and fingerprint, in the log and in /config", async () => {
    rig = await startRig();
    const next = await newSvid();
    const first = await applied(rig.logs);
    expect(first.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(colonHex(String(first.fingerprint))).toBe(await served(rig.port()));
    rig.api.push({ svid: next, federated: { "spiffe://b.test": pki.b } });
    const rotated = await applied(rig.logs, (r) => r.serial !== first.serial);
    expect(rotated.serial).toBe(serialOf(next));
    expect((await rig.http("/config")).json().identity).toMatchObject({ source: "workload_api", serial: serialOf(next), fingerprint: rotated.fingerprint });
    const h = await startHarness(pki);
    try {
      expect(await h.logs.next("lifecycle", (r) => r.msg === "identity applied")).toMatchObject({ source: "files", serial: serialOf(pki.server) });
    } finally {
      await h.close();
    }
  });

  it("revocations by a trust update say why and what changed", async () => {
    rig = await startRig();
    await applied(rig.logs);
    const carol = await pki.leaf(pki.b, "spiffe://b.test/carol");
    const c = await openSession(rig.port(), pki, carol);
    rig.api.push({ svid: rig.api.state.svid, federated: {} });
    const revoked = await rig.logs.next("revoked");
    expect(revoked).toMatchObject({
      msg: "session no longer admitted after a trust bundle changed",
      cause: "trust_bundle_changed",
      changed: { trust_domains_removed: ["b.test"], trust_domains_added: [], trust_domains_changed: [] },
    });
    await c.closed;
  });

  it("an agent without the JWT profile is reported once, as a warning, and not called again", async () => {
    rig = await startRig({ before: (api) => (api.jwtUnimplemented = true) });
    await applied(rig.logs);
    // Two X.509 reconnects later, a retried JWT stream would have been called again.
    for (let n = 2; n <= 3; n++) {
      rig.api.end("FetchX509SVID", grpc.status.UNAVAILABLE);
      await waitFor(() => rig!.api.calls.FetchX509SVID === n, 5000, "x509 reconnect");
      await waitFor(() => rig!.api.streams.get("FetchX509SVID")!.size === 1, 5000, "x509 stream open");
    }
    const jwt = rig.logs.records.filter((r) => r.stream === "jwt");
    expect(jwt.map((r) => [r.level, r.code])).toEqual([["warn", "UNIMPLEMENTED"]]);
    expect(rig.api.calls.FetchJWTBundles).toBe(1);
  });

  it("/readyz while waiting for the first push: own_svid_valid follows the bootstrap's files", async () => {
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem });
    const closed = await freePort();
    writeFileSync(
      join(f.dir, "bootstrap.yaml"),
      `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }\ncontrol_plane: { address: "127.0.0.1:${closed}", node_id: n1 }\n`,
    );
    const logs = new MemoryLog();
    const run = await assembleSidecar(
      { kind: "controlled", bootstrap: loadBootstrap(join(f.dir, "bootstrap.yaml")) },
      { version: "test", admin: { listen: "127.0.0.1:0", write: false }, destination: logs.destination },
    );
    try {
      const r = await (await fetch(`http://127.0.0.1:${run.admin!.port}/readyz`)).json();
      expect(r).toMatchObject({
        ready: false,
        checks: { config_loaded: false, own_svid_valid: true },
        identity: { source: "files", serial: serialOf(pki.server) },
      });
    } finally {
      await run.stop(0);
    }
  });
});

/** A control-plane directory for node-a: one listener to `upstream`, spiffe://a.test/allowed allowed. */
function controlPlaneDir(dir: string, upstream: number): string {
  const cpDir = join(dir, "cp");
  mkdirSync(join(cpDir, "nodes"), { recursive: true });
  writeFileSync(join(cpDir, "a.pem"), pki.a.certPem);
  writeFileSync(
    join(cpDir, "shared.yaml"),
    `trust_domains:\n  a.test: { bundle: a.pem }\npolicies:\n  main:\n    rules:\n      - { name: allowed, action: allow, match: [{ id: spiffe://a.test/allowed }] }\n`,
  );
  writeFileSync(
    join(cpDir, "nodes", "node-a.yaml"),
    `listeners:\n  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:${upstream}", policy: main }\n`,
  );
  return cpDir;
}

describe("4. what operators see: a stale configuration served by fail_open", () => {
  it("keeps /readyz at 200 while it serves sessions", async () => {
    const dir = tempDir();
    const echo = await startEcho("127.0.0.1", 0);
    const cpDir = controlPlaneDir(dir, (echo.server.address() as { port: number }).port);
    const cp = await startControlPlane({ dir: cpDir, listen: "127.0.0.1:0", log: pino({ level: "silent" }), settleMs: 50 });
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem });
    writeFileSync(
      join(f.dir, "bootstrap.yaml"),
      `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
control_plane: { address: "127.0.0.1:${cp.port}", node_id: node-a, max_staleness: 100ms, on_stale: fail_open, backoff: { initial: 50ms, max: 200ms } }
`,
    );
    const logs = new MemoryLog();
    const run = await assembleSidecar(
      { kind: "controlled", bootstrap: loadBootstrap(join(f.dir, "bootstrap.yaml")) },
      { version: "test", admin: { listen: "127.0.0.1:0", write: false }, destination: logs.destination },
    );
    try {
      await logs.next("config_applied");
      await cp.close();
      await logs.next("error", (r) => String(r.msg).startsWith("configuration stale: failing open"));
      const port = run.sidecar.addresses()["main"]!.port;
      expect((await openSession(port, pki, alice)).got()).toBe("ping");
      const ready = await fetch(`http://127.0.0.1:${run.admin!.port}/readyz`);
      expect(ready.status).toBe(200);
      expect(await (await fetch(`http://127.0.0.1:${run.admin!.port}/metrics`)).text()).toContain("parley_control_plane_connected 0");
    } finally {
      await run.stop(0);
      await echo.close();
    }
  });
});

describe("the bootstrap's identity from the Workload API", () => {
  it("serves pushed configuration with the streamed SVID; the control-plane client presents each new one", async () => {
    const a2 = await CertificateAuthority.root({ trustDomain: "a.test" });
    const dir = tempDir();
    const socket = join(dir, "agent.sock");
    const api = new TestWorkloadApi(socket, pki.a, { svid: await newSvid(), federated: {} });
    api.extraRoots = [a2.certPem];
    await api.listen();
    const echo = await startEcho("127.0.0.1", 0);
    const cpDir = controlPlaneDir(dir, (echo.server.address() as { port: number }).port);
    const cpCert = await pki.a.leaf({ uris: ["spiffe://a.test/control-plane"], dnsNames: ["control.a.test"] });
    /** A control plane that admits client certificates chained to `roots` only. */
    const plane = (roots: string, listen: string) =>
      startControlPlane({
        dir: cpDir,
        listen,
        credentials: grpc.ServerCredentials.createSsl(
          Buffer.from(roots),
          [{ cert_chain: Buffer.from(cpCert.chainPem), private_key: Buffer.from(cpCert.keyPem) }],
          true,
        ),
        log: pino({ level: "silent" }),
        settleMs: 50,
      });
    let cp = await plane(pki.a.certPem + a2.certPem, "127.0.0.1:0");
    const cpPort = cp.port;
    writeFileSync(join(dir, "ca.pem"), pki.a.certPem);
    writeFileSync(
      join(dir, "bootstrap.yaml"),
      `identity: { workload_api: { endpoint: "unix:${socket}" } }
control_plane:
  address: 127.0.0.1:${cpPort}
  node_id: node-a
  tls: { ca: ca.pem, server_name: control.a.test, mtls: true }
  backoff: { initial: 50ms, max: 200ms }
`,
    );
    const logs = new MemoryLog();
    const run = await assembleSidecar(
      { kind: "controlled", bootstrap: loadBootstrap(join(dir, "bootstrap.yaml")) },
      { version: "test", admin: { listen: false, write: false }, destination: logs.destination, workloadBackoff: { initialMs: 50, maxMs: 200 } },
    );
    const connected = () => logs.of("lifecycle").filter((r) => r.msg === "control plane connected").length;
    try {
      await logs.next("config_applied");
      const port = run.sidecar.addresses()["main"]!.port;
      expect((await openSession(port, pki, alice)).got()).toBe("ping");
      expect(await served(port)).toBe(fingerprintOf(api.state.svid));
      // Rotate to an SVID of the second root; then only that root is admitted by the control plane.
      const next = await a2.leaf({ uris: ["spiffe://a.test/sidecar"], dnsNames: ["localhost"] });
      api.push({ svid: next, federated: {} });
      await waitFor(() => connected() >= 2, 5000, "the reconnect presenting the new SVID");
      await cp.close();
      cp = await plane(a2.certPem, `127.0.0.1:${cpPort}`);
      await waitFor(() => connected() >= 3, 5000, "a control plane that admits only the new SVID's root");
      expect(run.sidecar.readiness().ready).toBe(true);
    } finally {
      await run.stop(0);
      await cp.close();
      api.close();
      await echo.close();
    }
  });
});

describe("5. configuration edges", () => {
  /** `parley validate` on `identity` + an empty resource set, SPIFFE_ENDPOINT_SOCKET as given. */
  const validate = (identity: string, env: Record<string, string> = {}) => {
    const rest = `trust_domains: {}\nlisteners: [{ name: m, listen: "127.0.0.1:0", upstream: "127.0.0.1:1", policy: p }]\npolicies: { p: { rules: [] } }\n`;
    const f = writeFiles({ "parley.yaml": identity + rest });
    const inherited = { ...process.env };
    delete inherited.SPIFFE_ENDPOINT_SOCKET;
    return spawnSync(process.execPath, ["dist/cli.js", "validate", f["parley.yaml"]!], { encoding: "utf8", env: { ...inherited, ...env }, timeout: 10_000 });
  };

  it("`workload_api:` with nothing under it takes SPIFFE_ENDPOINT_SOCKET", () => {
    const r = validate("identity:\n  workload_api:\n", { SPIFFE_ENDPOINT_SOCKET: "unix:/run/spire/agent.sock" });
    expect([r.status, r.stderr]).toEqual([0, ""]);
  });

  it("a missing or malformed endpoint is a configuration error (exit 2) naming it", () => {
    const missing = validate("identity: { workload_api: {} }\n");
    expect(missing.status).toBe(2);
    expect(missing.stderr).toContain("identity.workload_api.endpoint: no Workload API endpoint");
    const env = validate("identity: { workload_api: {} }\n", { SPIFFE_ENDPOINT_SOCKET: "unix://host/agent.sock" });
    expect(env.status).toBe(2);
    expect(env.stderr).toContain("SPIFFE_ENDPOINT_SOCKET: endpoint unix://host/agent.sock");
    const field = validate('identity: { workload_api: { endpoint: "tcp://localhost:80" } }\n');
    expect(field.status).toBe(2);
    expect(field.stderr).toContain("must name an IP address");
  });
});
