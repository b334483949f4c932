// The parley command as operators call it: per-command help, one-line usage errors, exit codes, and
// the output of check, validate, tail and health.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { freePort } from "../testkit/harness.js";

const parley = (...args: string[]) => spawnSync(process.execPath, ["dist/cli.js", ...args], { encoding: "utf8", timeout: 15_000 });
const demo = ["--config", "config/demo.yaml"];

describe("parley check", () => {
  it("exits 0 on allow and explains every rule", () => {
    const r = parley("check", ...demo, "--id", "spiffe://parley.demo/ns/ops/sa/admin");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^ALLOW {2}spiffe:\/\/parley\.demo\/ns\/ops\/sa\/admin/);
    expect(r.stdout).toMatch(/rule {5}ops-namespace/);
    expect(r.stdout).toMatch(/allow web-frontend +identity_not_matched/);
    expect(r.stdout).toMatch(/allow partner-domain +not_reached/);
  });

  it("exits 1 on deny, with the reasons", () => {
    const r = parley("check", ...demo, "--id", "spiffe://parley.demo/ns/web/sa/legacy");
    expect([r.status, r.stdout]).toEqual([1, expect.stringMatching(/DENY .*\n.*\n {2}rule {5}retired-legacy\n {2}reasons {2}explicit_deny/)]);
  });

  it("verifies a certificate given with --cert against the configured bundles", () => {
    const ok = parley("check", ...demo, "--cert", "certs-dev/billing.pem");
    expect(ok.status).toBe(0);
    const impostor = parley("check", ...demo, "--cert", "certs-dev/impostor.pem", "--json");
    expect(impostor.status).toBe(1);
    expect(JSON.parse(impostor.stdout)).toMatchObject({ decision: "deny", reasons: ["invalid_svid"], svidRule: "chain_unverified" });
  });

  it("exits 2 on bad input: an invalid ID, a bad time, a missing flag, an unknown listener", () => {
    const badId = parley("check", ...demo, "--id", "spiffe://Bad/x");
    expect([badId.status, badId.stderr]).toEqual([2, expect.stringMatching(/trust domain characters/)]);
    expect(parley("check", ...demo, "--id", "spiffe://parley.demo/x", "--at", "yesterday").status).toBe(2);
    expect(parley("check", "--id", "spiffe://parley.demo/x").status).toBe(2);
    expect(parley("check", ...demo, "--id", "spiffe://parley.demo/x", "--listener", "nope").status).toBe(2);
    expect(parley("check", "--config", "/nonexistent.yaml", "--id", "spiffe://parley.demo/x").status).toBe(2);
  });
});

describe("parley validate and usage", () => {
  it("validate exits 2 with file:line on a broken file", () => {
    const r = parley("validate", "/nonexistent.yaml");
    expect([r.status, r.stderr]).toEqual([2, expect.stringMatching(/\/nonexistent\.yaml: cannot read/)]);
  });
  it("parley alone prints the usage on stderr, exit 2", () => {
    const r = parley();
    expect([r.status, r.stderr]).toEqual([2, expect.stringMatching(/^usage: parley <command>[\s\S]*commands:/)]);
  });
});

const COMMANDS = ["run", "demo", "validate", "check", "certs", "connect", "tail", "control-plane", "health", "revoke"];

describe("help, usage errors, runtime errors", () => {
  it.each(COMMANDS)("parley %s --help prints that command's usage alone, exit 0 (and parley help %s the same)", (name) => {
    const r = parley(name, "--help");
    expect([r.status, r.stderr]).toEqual([0, ""]);
    expect(r.stdout).toMatch(new RegExp(`^usage: parley ${name}( |\\n)`));
    expect(r.stdout).not.toMatch(/^commands:/m);
    expect(parley("help", name).stdout).toBe(r.stdout);
  });

  it("parley --version prints the package's version", () => {
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as { version: string };
    expect([parley("--version").status, parley("--version").stdout]).toEqual([0, `${pkg.version}\n`]);
  });

  it.each([
    [["frobnicate"], "parley: unknown command frobnicate", "parley"],
    [["tail", "--bogus"], "parley tail: Unknown option '--bogus'", "parley tail"],
    [["connect"], "parley connect: HOST:PORT --cert F --key F --ca F are required", "parley connect"],
    [["check", "--config", "config/demo.yaml"], "parley check: --id SPIFFE-ID or --cert PEM is required", "parley check"],
    [["validate", "a.yaml", "b.yaml"], "parley validate: exactly one FILE", "parley validate"],
  ])("a usage error is one line naming it, then where to look, exit 2: %j", (args, first, who) => {
    const r = parley(...args);
    expect(r.status).toBe(2);
    expect(r.stderr.split("\n")).toEqual([expect.stringContaining(first), `see ${who} --help`, ""]);
  });

  it("a runtime error or bad input that is not about usage prints no usage", () => {
    const r = parley("check", ...demo, "--id", "spiffe://parley.demo/x", "--listener", "nope");
    expect([r.status, r.stderr]).toEqual([2, "parley check: unknown listener nope; defined: echo\n"]);
  });
});

describe("exit codes for bad paths and files", () => {
  it("validate on a directory: 2, saying it is a directory", () => {
    const r = parley("validate", "/tmp");
    expect([r.status, r.stderr]).toEqual([2, expect.stringContaining("/tmp: is a directory, not a YAML file")]);
  });

  it("connect with an unreadable --ca: 2 naming the flag, before any connection is tried", () => {
    const r = parley("connect", "127.0.0.1:1", "--cert", "certs-dev/frontend.pem", "--key", "certs-dev/frontend.key", "--ca", "/nonexistent");
    expect([r.status, r.stderr.split("\n")[0]]).toEqual([2, "parley connect: --ca /nonexistent: no such file or directory"]);
  });

  it("control-plane --dir on a missing directory: 2, no such directory", () => {
    const r = parley("control-plane", "--dir", "/nope");
    expect([r.status, r.stderr.split("\n")[0]]).toEqual([2, "parley control-plane: --dir /nope: no such directory"]);
    expect(parley("control-plane", "--dir", "package.json").stderr).toMatch(/--dir package\.json: not a directory/);
  });

  it("tail on a missing file: 2", () => {
    expect([parley("tail", "/nonexistent.log").status, parley("tail", "/nonexistent.log").stderr]).toEqual([
      2,
      expect.stringMatching(/FILE \/nonexistent\.log: no such file/),
    ]);
  });

  it("validate checks a bootstrap file (told by its control_plane key), and refuses a broken one", () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-cli-"));
    const file = join(dir, "bootstrap.yaml");
    const certs = resolve("certs-dev");
    const text = `identity: { cert: ${certs}/sidecar.pem, key: ${certs}/sidecar.key }\ncontrol_plane: { address: 127.0.0.1:18000, node_id: web-1 }\n`;
    writeFileSync(file, text);
    const ok = parley("validate", file);
    expect([ok.status, ok.stdout]).toEqual([0, `${file}: valid bootstrap (node web-1, control plane 127.0.0.1:18000, plaintext; waits for the first push)\n`]);
    writeFileSync(file, text.replace("node_id: web-1", "node_id: web-1, colour: blue"));
    const bad = parley("validate", file);
    expect([bad.status, bad.stderr]).toEqual([2, expect.stringMatching(/bootstrap\.yaml:2:\d+: control_plane\.colour: unknown key/)]);
    expect(parley("validate", "config/demo.yaml").stdout).toMatch(/^config\/demo\.yaml: valid \(version \w+, 1 listener\(s\)\)\n$/);
  });

  it("a bootstrap's node id follows the control plane's rule: up to 256 bytes", () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-cli-"));
    const file = join(dir, "bootstrap.yaml");
    const certs = resolve("certs-dev");
    const withId = (id: string) =>
      `identity: { cert: ${certs}/sidecar.pem, key: ${certs}/sidecar.key }\ncontrol_plane: { address: 127.0.0.1:18000, node_id: ${id} }\n`;
    writeFileSync(file, withId("n".repeat(256)));
    expect(parley("validate", file).status).toBe(0);
    writeFileSync(file, withId("n".repeat(257)));
    const over = parley("validate", file);
    expect([over.status, over.stderr]).toEqual([2, expect.stringMatching(/control_plane\.node_id: expected a node id .*at most 256/)]);
  });
});

describe("parley check as a live peer would be decided", () => {
  it("--at decides the connection at that time without checking the sidecar's own SVID then (the README's example)", () => {
    // Long before the development certificates were issued: only the connection is at that time.
    const r = parley("check", ...demo, "--id", "spiffe://parley.demo/ns/web/sa/frontend", "--at", "2026-11-23T10:00:00Z");
    expect([r.status, r.stderr, r.stdout]).toEqual([0, "", expect.stringMatching(/^ALLOW /)]);
  });

  it("an ID of a trust domain without a bundle is untrusted_domain, as for a live peer", () => {
    const r = parley("check", ...demo, "--id", "spiffe://unknown.td/x", "--json");
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ decision: "deny", reasons: ["untrusted_domain"], svidRule: "untrusted_domain" });
  });
});

describe("parley tail as a pipe", () => {
  it("parley tail FILE | head: ends quietly when the reader goes away (no EPIPE trace), exit 0", async () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-cli-"));
    const big = join(dir, "big.log");
    writeFileSync(big, readFileSync("test/fixtures/decisions.log", "utf8").repeat(5000));
    const child = spawn(process.execPath, ["dist/cli.js", "tail", big, "--no-color"], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    await new Promise((r) => child.stdout.once("data", r));
    child.stdout.destroy(); // what head does after its lines
    const code = await new Promise((r) => child.once("exit", r));
    expect([code, stderr]).toEqual([0, ""]);
  });

  it("--deny --summary counts every decision before the filter, and what the filter matched", () => {
    const r = parley("tail", "test/fixtures/decisions.log", "--deny", "--summary", "--no-color");
    expect(r.stdout.split("\n").slice(0, 2)).toEqual(["decisions: 49, denied: 46", "matching the filter: 46 decisions, 46 denied"]);
    const ops = parley("tail", "test/fixtures/decisions.log", "--id", "ns/ops", "--summary", "--no-color");
    expect(ops.stdout.split("\n").slice(0, 2)).toEqual(["decisions: 49, denied: 46", "matching the filter: 1 decisions, 0 denied"]);
  });

  it("a JSON line without an event passes through as it is, not as a blank row", () => {
    const r = spawnSync(process.execPath, ["dist/cli.js", "tail", "--no-color"], {
      input: '{"level":30,"msg":"from elsewhere"}\n{"event":"custom"}\n',
      encoding: "utf8",
    });
    expect(r.stdout).toBe('{"level":30,"msg":"from elsewhere"}\n' + `${"".padEnd(24)} custom {"event":"custom"}\n`);
  });
});

describe("parley health", () => {
  it("bad usage is 2: no address at all, or an admin server switched off", () => {
    const env = { ...process.env, PARLEY_CONFIG: "" };
    expect(spawnSync(process.execPath, ["dist/cli.js", "health"], { encoding: "utf8", env }).status).toBe(2);
    const dir = mkdtempSync(join(tmpdir(), "parley-cli-"));
    const file = join(dir, "parley.yaml");
    writeFileSync(file, readFileSync("config/demo.yaml", "utf8") + "admin: { listen: false }\n");
    const r = parley("health", "--config", file);
    expect([r.status, r.stderr]).toEqual([2, expect.stringContaining("has no admin server (admin.listen: false)")]);
  });

  it("a sidecar that does not answer is unhealthy: 1", async () => {
    const port = await freePort();
    const r = parley("health", "--admin", `127.0.0.1:${port}`);
    expect([r.status, r.stderr]).toEqual([1, expect.stringContaining(`unhealthy: http://127.0.0.1:${port}/healthz`)]);
  });
});
