// Start-up is one transaction (src/app/assemble.ts): when any bind fails, `parley run` exits 1 having
// bound nothing, and says why on stderr and in its log. Run as operators run it: dist/cli.js.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { configYaml, freePort, writeFiles } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
beforeAll(async () => void (pki = await makePki()));

/** A port held by another process's listener (here, the test's). */
function hold(): Promise<{ port: number; server: Server }> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => resolve({ port: (server.address() as { port: number }).port, server }));
  });
}

/** Whether a port can be bound again: nothing of parley's is left on it. */
function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
      .once("error", () => resolve(false))
      .listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** `parley run` on a config; resolves once it exits (or after 15 s, killed: status null). */
function run(extra: (ports: { listener: number }) => string): Promise<{ status: number | null; stdout: string; stderr: string; listener: number }> {
  return freePort().then((listener) => {
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
    const config = join(f.dir, "parley.yaml");
    const yaml = configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, 9, { extra: extra({ listener }) })
      .replace("listen: 127.0.0.1:0", `listen: 127.0.0.1:${listener}`)
      .replace('admin: { listen: "127.0.0.1:0" }\n', "");
    writeFileSync(config, yaml);
    const child = spawn(process.execPath, ["dist/cli.js", "run", "--config", config, "--no-watch"], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    return new Promise((resolve) =>
      child.once("close", (status) => {
        clearTimeout(killer);
        resolve({ status, stdout, stderr, listener });
      }),
    );
  });
}

const records = (stdout: string) =>
  stdout
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe("parley run with a port already taken", () => {
  const held: Server[] = [];
  afterAll(() => held.forEach((s) => s.close()));

  it("the admin port: exits 1 naming it, its listener released, nothing decided", async () => {
    const admin = await hold();
    held.push(admin.server);
    const r = await run(() => `admin: { listen: "127.0.0.1:${admin.port}" }`);
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`admin server: cannot listen: .*EADDRINUSE.*127\\.0\\.0\\.1:${admin.port}`));
    const log = records(r.stdout);
    expect(log.find((x) => x.msg === "listener ready")).toBeDefined(); // it had bound, and let go:
    expect(await free(r.listener)).toBe(true);
    expect(log.find((x) => x.event === "error" && String(x.detail).includes("admin server: cannot listen"))).toBeDefined();
    expect(log.filter((x) => x.event === "decision")).toEqual([]);
  });

  it("an outbound port: exits 1 naming the route, the inbound listener and admin port released", async () => {
    const out = await hold();
    held.push(out.server);
    const adminPort = await freePort();
    const r = await run(
      () => `admin: { listen: "127.0.0.1:${adminPort}" }
outbound:
  - { name: to-b, listen: "127.0.0.1:${out.port}", remote: "127.0.0.1:9", expect_id: "spiffe://b.test/api" }`,
    );
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`outbound to-b: cannot listen: .*EADDRINUSE.*127\\.0\\.0\\.1:${out.port}`));
    expect(await free(r.listener)).toBe(true);
    expect(await free(adminPort)).toBe(true);
    const log = records(r.stdout);
    expect(log.find((x) => x.event === "error" && String(x.detail).includes("outbound to-b: cannot listen"))).toBeDefined();
    expect(log.filter((x) => x.event === "decision")).toEqual([]);
  });
});
