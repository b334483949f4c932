// The demo as a new user runs it: `npm start`'s entry point, real ports, the committed dev certificates.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../testkit/harness.js";

const pkg = JSON.parse(readFileSync("package.json", "utf8"));
let child: ChildProcess;
let stdout = "";
let stderr = "";
let port = 0;

beforeAll(async () => {
  // npm start runs `node dist/cli.js demo`; the same entry point, on ephemeral ports.
  expect(pkg.scripts.start).toBe("node dist/cli.js demo");
  child = spawn(process.execPath, ["dist/cli.js", "demo", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:0", "--admin", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
  port = Number(await waitFor(() => /sidecar listening on 127\.0\.0\.1:(\d+)/.exec(stderr)?.[1], 15_000, "demo banner"));
}, 20_000);

afterAll(async () => {
  if (child.exitCode === null) {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
});

function talk(name: string, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({
      port,
      host: "127.0.0.1",
      servername: "localhost",
      ca: readFileSync("certs-dev/parley.demo.bundle.pem"),
      cert: readFileSync(`certs-dev/${name}.pem`),
      key: readFileSync(`certs-dev/${name}.key`),
    });
    let got = "";
    s.on("data", (c: Buffer) => (got += c.toString()));
    s.once("secureConnect", () => s.write(payload));
    s.once("error", reject);
    s.once("close", () => resolve(got));
    setTimeout(() => s.end(), 300);
  });
}

const ALLOWED = new Set(["frontend", "ops", "billing"]);

/** Runs a printed command line as typed (its words; none needs a shell) and collects its output. */
function run(line: string): Promise<{ code: number | null; out: string }> {
  const [cmd, ...args] = line.split(/\s+/);
  const p = spawn(cmd!, args, { stdio: ["ignore", "pipe", "ignore"] });
  let out = "";
  p.stdout.on("data", (c: Buffer) => (out += c.toString()));
  return new Promise((resolve) => p.once("close", (code) => resolve({ code, out })));
}

/**
 * An `openssl s_client` line, with `line` typed in: "echoed" when the workload sends it back, "closed"
 * when the connection ends without it (s_client -quiet stays up until the server closes).
 */
async function sClient(line: string, payload: string): Promise<"echoed" | "closed"> {
  const [cmd, ...args] = line.split(/\s+/);
  const p = spawn(cmd!, args, { stdio: ["pipe", "pipe", "ignore"] });
  let out = "";
  const state = { exited: false };
  p.stdout.on("data", (c: Buffer) => (out += c.toString()));
  p.once("close", () => (state.exited = true));
  p.stdin.write(payload + "\n");
  const seen = await waitFor(() => (out.includes(payload) ? "echoed" : state.exited ? "closed" : undefined), 15_000, `${cmd} to echo or close`);
  if (!state.exited) {
    p.kill();
    await new Promise((r) => p.once("close", r));
  }
  return seen;
}

describe("npm start (the demo)", () => {
  it("prints how to try it with openssl s_client and curl", () => {
    expect(stderr).toMatch(/openssl s_client -connect 127\.0\.0\.1:\d+ -cert certs-dev\/frontend\.pem/);
    expect(stderr).toMatch(/curl --cacert certs-dev\/parley\.demo\.bundle\.pem --cert certs-dev\/frontend\.pem/);
  });

  it("echoes for allowed identities and closes on denied ones, logging each decision as JSON", async () => {
    expect(await talk("frontend", "hi from frontend")).toBe("hi from frontend");
    expect(await talk("ops", "hi from ops")).toBe("hi from ops");
    expect(await talk("billing", "hi from billing")).toBe("hi from billing");
    expect(await talk("reporter", "let me in")).toBe("");
    expect(await talk("legacy", "let me in")).toBe("");
    expect(await talk("impostor", "let me in")).toBe("");
    const decisions = await waitFor(() => {
      const d = stdout
        .split("\n")
        .filter((l) => l.includes('"event":"decision"'))
        .map((l) => JSON.parse(l));
      return d.length >= 6 ? d : undefined;
    });
    expect(decisions.map((d) => [d.peer_id, d.decision, d.reasons[0]])).toEqual([
      ["spiffe://parley.demo/ns/web/sa/frontend", "allow", "explicit_allow"],
      ["spiffe://parley.demo/ns/ops/sa/admin", "allow", "explicit_allow"],
      ["spiffe://partner.demo/billing", "allow", "explicit_allow"],
      ["spiffe://parley.demo/ns/batch/sa/reporter", "deny", "identity_not_allowed"],
      ["spiffe://parley.demo/ns/web/sa/legacy", "deny", "explicit_deny"],
      ["spiffe://partner.demo/billing", "deny", "invalid_svid"],
    ]);
  });

  it("every command line the banner prints works when pasted: allowed ones echo, denied ones are closed", async () => {
    const lines = stderr
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => /^(openssl|curl) /.test(l));
    const sClients = lines.filter((l) => l.startsWith("openssl "));
    expect(sClients.map((l) => /certs-dev\/(\w+)\.pem/.exec(l)?.[1])).toEqual(["frontend", "billing", "reporter"]);
    // "any name above in place of frontend": every identity, through the first line.
    for (const name of ["frontend", "ops", "billing", "reporter", "legacy", "impostor"]) {
      const line = sClients[0]!.replaceAll("frontend", name);
      expect([name, await sClient(line, `hello from ${name}`)]).toEqual([name, ALLOWED.has(name) ? "echoed" : "closed"]);
    }
    for (const line of sClients.slice(1)) {
      const name = /certs-dev\/(\w+)\.pem/.exec(line)![1]!;
      expect([name, await sClient(line, `again from ${name}`)]).toEqual([name, ALLOWED.has(name) ? "echoed" : "closed"]);
    }
    const curls = lines.filter((l) => l.startsWith("curl "));
    expect(curls).toHaveLength(3);
    for (const line of curls) {
      const r = await run(line);
      if (line.includes("/metrics")) expect([r.code, r.out]).toEqual([0, expect.stringContaining("parley_decisions_total")]);
      else if (line.includes("frontend")) expect([r.code, r.out]).toEqual([0, expect.stringContaining("your request reached me through the sidecar")]);
      else expect([line, r.code === 0, r.out]).toEqual([line, false, ""]);
    }
  }, 60_000);

  it("parley health finds the admin server from the configuration's admin.listen (as the container's check does)", () => {
    const admin = /curl http:\/\/(127\.0\.0\.1:\d+)\/metrics/.exec(stderr)![1]!;
    const dir = mkdtempSync(join(tmpdir(), "parley-demo-"));
    const file = join(dir, "parley.yaml");
    writeFileSync(file, readFileSync("config/demo.yaml", "utf8") + `admin: { listen: "${admin}" }\n`);
    const viaEnv = spawnSync(process.execPath, ["dist/cli.js", "health"], { encoding: "utf8", env: { ...process.env, PARLEY_CONFIG: file } });
    expect([viaEnv.status, viaEnv.stdout]).toEqual([0, `healthy: http://${admin}/healthz\n`]);
    const wildcard = file.replace(".yaml", "-any.yaml");
    writeFileSync(wildcard, readFileSync("config/demo.yaml", "utf8") + `admin: { listen: "0.0.0.0:${admin.split(":")[1]}" }\n`);
    expect(spawnSync(process.execPath, ["dist/cli.js", "health", "--config", wildcard], { encoding: "utf8" }).status).toBe(0);
    const ready = spawnSync(process.execPath, ["dist/cli.js", "health", "--ready", "--admin", admin], { encoding: "utf8" });
    expect([ready.status, ready.stdout]).toEqual([0, `ready: http://${admin}/readyz\n`]);
  });

  it("answers an HTTP request (what curl sends) through the sidecar", async () => {
    const answer = await talk("frontend", "GET / HTTP/1.1\r\nhost: localhost\r\n\r\n");
    expect(answer).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(answer).toContain("your request reached me through the sidecar");
  });

  it("drains and exits 0 on SIGTERM", async () => {
    child.kill("SIGTERM");
    const code = await new Promise((r) => child.once("exit", r));
    expect(code).toBe(0);
    expect(stdout).toMatch(/"msg":"stopped"/);
  });
});
