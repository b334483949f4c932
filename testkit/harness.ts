// A sidecar in front of an echo workload, on loopback, with its decision log captured in memory.
import { assembleSidecar } from "../src/app/assemble.js";
import type { Bootstrap } from "../src/config/load.js";
import type { ConfigSync } from "../src/control/agent/sync.js";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as connectTcp, createServer } from "node:net";
import { connect, type TLSSocket } from "node:tls";
import { loadBootstrap, loadConfig } from "../src/config/load.js";
import type { Issued } from "../src/certs/issue.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { createLogger, DecisionLog } from "../src/telemetry/log.js";
import type { TestPki } from "./pki.js";

export type LogRecord = Record<string, unknown> & { event?: string };

export class MemoryLog {
  readonly records: LogRecord[] = [];
  /** Where a sidecar assembled by the tests writes its log lines: into `records`. */
  readonly destination = { write: (line: string) => void this.records.push(JSON.parse(line)) };
  readonly log = new DecisionLog(createLogger("debug", this.destination));

  of(event: string): LogRecord[] {
    return this.records.filter((r) => r.event === event);
  }

  async next(event: string, pred: (r: LogRecord) => boolean = () => true, timeoutMs = 5000): Promise<LogRecord> {
    return waitFor(() => this.of(event).find(pred), timeoutMs, `log record ${event}`);
  }
}

export async function waitFor<T>(probe: () => T | undefined, timeoutMs = 5000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    // A promise is truthy: it would end the wait before the condition was ever checked.
    if (v instanceof Promise) throw new Error(`waitFor(${what}): the probe returned a promise; use until() (testkit/attempt.ts)`);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), "parley-test-"));
}

/** Writes files into a fresh temp dir and returns their paths. */
export function writeFiles(files: Record<string, string>): Record<string, string> & { dir: string } {
  const dir = tempDir();
  const out: Record<string, string> = {};
  for (const [name, text] of Object.entries(files)) {
    out[name] = join(dir, name);
    writeFileSync(out[name], text);
  }
  return { ...out, dir };
}

export interface HarnessOptions {
  /** The `policies:` block as YAML (indented under `policies:`); default allows spiffe://a.test/allowed. */
  policies?: string;
  upstreamPort?: number;
  extra?: string;
  /** More keys of the listener, e.g. `handshake_timeout: 500ms`. */
  listenerExtra?: string;
  /** The sidecar's clock (default Date.now): a ManualClock makes time the test's to move. */
  now?: () => number;
}

export interface Harness {
  port: number;
  echo: EchoServer;
  sidecar: Sidecar;
  logs: MemoryLog;
  configFile: string;
  /** Rewrites the config file (same certificates and upstream) with other options. */
  rewrite(opts: HarnessOptions): void;
  close(): Promise<void>;
}

export const DEFAULT_POLICIES = `
  main:
    default: deny
    rules:
      - name: deny-banned
        action: deny
        match: [{ id: spiffe://a.test/banned }]
      - name: allow-allowed
        action: allow
        match: [{ id: spiffe://a.test/allowed }, { trust_domain: b.test }]
`;

/** A `policies:` block whose one rule allows trust domain a.test under `limits` (a YAML flow map). */
export function limitedPolicy(limits: string): string {
  return `
  main:
    default: deny
    rules:
      - name: allowed
        action: allow
        match: [{ trust_domain: a.test }]
        limits: ${limits}
`;
}

export function configYaml(files: { cert: string; key: string; a: string; b: string }, upstreamPort: number, opts: HarnessOptions = {}): string {
  return `identity:
  cert: ${files.cert}
  key: ${files.key}
trust_domains:
  a.test: { bundle: ${files.a} }
  b.test: { bundle: ${files.b} }
listeners:
  - name: main
    listen: 127.0.0.1:0
    upstream: 127.0.0.1:${upstreamPort}
    policy: main
    connect_timeout: 1s
${opts.listenerExtra ? `    ${opts.listenerExtra}\n` : ""}policies:${opts.policies ?? DEFAULT_POLICIES}
admin: { listen: "127.0.0.1:0" }
${opts.extra ?? ""}`;
}

export async function startHarness(pki: TestPki, opts: HarnessOptions = {}): Promise<Harness> {
  const echo = await startEcho("127.0.0.1", 0);
  const upstreamPort = opts.upstreamPort ?? (echo.server.address() as { port: number }).port;
  const files = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
  const configFile = join(files.dir, "parley.yaml");
  const paths = { cert: files["cert.pem"]!, key: files["key.pem"]!, a: files["a.pem"]!, b: files["b.pem"]! };
  writeFileSync(configFile, configYaml(paths, upstreamPort, opts));
  const logs = new MemoryLog();
  const sidecar = new Sidecar(loadConfig(configFile), { log: logs.log, ...(opts.now ? { now: opts.now } : {}) });
  await sidecar.start();
  return {
    port: sidecar.addresses()["main"]!.port,
    echo,
    sidecar,
    logs,
    configFile,
    rewrite: (o) => writeFileSync(configFile, configYaml(paths, upstreamPort, o)),
    async close() {
      await sidecar.stop(200);
      await echo.close();
    },
  };
}

/** An mTLS client. `creds` undefined = no client certificate. Resolves once the handshake is done. */
export function dialTls(port: number, pki: TestPki, creds: Issued | undefined, extra: Record<string, unknown> = {}): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: pki.a.certPem,
      ...(creds ? { cert: creds.chainPem, key: creds.keyPem } : {}),
      ...extra,
    });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

/** Collects everything a socket receives until the peer ends; then ends our side too. */
export function readAll(s: TLSSocket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("error", () => {});
    s.once("end", () => s.end());
    s.once("close", () => resolve(Buffer.concat(chunks)));
    s.resume(); // a socket handed over paused (as by the negotiation client) flows again
  });
}

/** A loopback port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

/** Opens a session, checks that the echo workload answers through it, and leaves it open. */
export async function openSession(port: number, pki: TestPki, creds: Issued) {
  const s = await dialTls(port, pki, creds);
  let got = "";
  s.on("data", (c: Buffer) => (got += c.toString()));
  const closed = readAll(s);
  s.write("ping");
  await waitFor(() => got === "ping", 3000, "echo");
  return { s, closed, got: () => got };
}

/** A sidecar driven by a control plane, assembled as `parley run --bootstrap` does (admin off). */
export interface Controlled {
  readonly sidecar: Sidecar;
  readonly sync: ConfigSync;
  stop(drainTimeoutMs?: number): Promise<void>;
}

export async function startControlled(bootstrap: Bootstrap, logs: MemoryLog): Promise<Controlled> {
  const r = await assembleSidecar(
    { kind: "controlled", bootstrap },
    { version: "test", admin: { ...bootstrap.admin, listen: false }, destination: logs.destination },
  );
  return { sidecar: r.sidecar, sync: r.agent!.sync, stop: (ms) => r.stop(ms) };
}

/**
 * A sidecar of node `node-a` presenting `creds`, bootstrapped (files written in `dir`) to the control
 * plane at `cpPort` with short backoffs, and its log.
 */
export async function startBootstrapped(
  dir: string,
  cpPort: number,
  creds: { chainPem: string; keyPem: string },
): Promise<{ agent: Controlled; logs: MemoryLog }> {
  writeFileSync(join(dir, "cert.pem"), creds.chainPem);
  writeFileSync(join(dir, "key.pem"), creds.keyPem);
  writeFileSync(
    join(dir, "bootstrap.yaml"),
    `identity: { cert: cert.pem, key: key.pem }
control_plane: { address: "127.0.0.1:${cpPort}", node_id: node-a, max_staleness: 1h, backoff: { initial: 20ms, max: 100ms } }
`,
  );
  const logs = new MemoryLog();
  const agent = await startControlled(loadBootstrap(join(dir, "bootstrap.yaml")), logs);
  return { agent, logs };
}

/** A legacy client's plaintext exchange with `port`: sends `payload`, half-closes, resolves with all it read until the close. */
export function plaintextExchange(port: number, payload: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connectTcp({ host: "127.0.0.1", port }, () => s.end(payload));
    let got = "";
    s.on("data", (c: Buffer) => (got += c.toString()));
    s.on("error", () => {});
    s.on("close", () => resolve(got));
  });
}

/** A legacy client's plaintext connection to `port` that has had `text` echoed once (or was closed first). */
export async function plaintextEcho(port: number, text: string) {
  const s = connectTcp({ host: "127.0.0.1", port });
  let got = "";
  s.on("data", (c: Buffer) => (got += c.toString()));
  s.on("error", () => {});
  const closed = new Promise<void>((resolve) => s.once("close", () => resolve()));
  s.write(text);
  await waitFor(() => got === text || s.destroyed || undefined, 5000, `echo of ${text}`);
  return { s, got: () => got, closed };
}
