import { spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config/load.js";
import { ConfigError } from "../src/config/source.js";
import { configYaml, freePort, writeFiles } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let files: Record<string, string> & { dir: string };

beforeAll(async () => {
  pki = await makePki();
  files = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
});

const good = () => configYaml({ cert: files["cert.pem"]!, key: files["key.pem"]!, a: files["a.pem"]!, b: files["b.pem"]! }, 9);

function issuesOf(yaml: string): string[] {
  const f = writeFiles({ "c.yaml": yaml })["c.yaml"]!;
  try {
    loadConfig(f);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).issues.map((i) => `${i.line}: ${i.path}: ${i.message}`);
  }
  throw new Error("config was accepted");
}

describe("loadConfig", () => {
  it("loads a good file: listeners, bundles, identity, compiled policy and a content version", () => {
    const f = writeFiles({ "c.yaml": good() })["c.yaml"]!;
    const c = loadConfig(f);
    expect(c.listeners[0]!.name).toBe("main");
    expect(c.listeners[0]!.upstream).toEqual({ host: "127.0.0.1", port: 9 });
    expect(c.listeners[0]!.connectTimeoutMs).toBe(1000);
    expect(c.listeners[0]!.handshakeTimeoutMs).toBe(5000);
    expect(c.bundles.trustDomains().sort()).toEqual(["a.test", "b.test"]);
    expect(c.identity!.id.toString()).toBe("spiffe://a.test/sidecar");
    expect(c.listeners[0]!.policy.rules.map((r) => r.name)).toEqual(["deny-banned", "allow-allowed"]);
    expect(c.version).toMatch(/^[0-9a-f]{16}$/);
    expect(c.listeners[0]!.policy.version).toBe(c.version);
  });

  it("names file, line and key for an unknown key", () => {
    const yaml = good().replace("    connect_timeout: 1s", "    connect_timeout: 1s\n    upstream_tls: true");
    const line = yaml.split("\n").findIndex((l) => l.includes("upstream_tls")) + 1;
    expect(issuesOf(yaml)).toEqual([`${line}: listeners[0].upstream_tls: unknown key`]);
  });

  it("reports every bad value with its line", () => {
    const yaml = good().replace("upstream: 127.0.0.1:9", "upstream: nowhere").replace("connect_timeout: 1s", "connect_timeout: soon");
    const issues = issuesOf(yaml);
    expect(issues).toHaveLength(2);
    expect(issues[0]).toMatch(/^\d+: listeners\[0\]\.upstream: expected host:port/);
    expect(issues[1]).toMatch(/^\d+: listeners\[0\]\.connect_timeout: expected a duration/);
  });

  it("rejects an unknown policy reference", () => {
    expect(issuesOf(good().replace("    policy: main", "    policy: mian"))[0]).toMatch(/listeners\[0\]\.policy: unknown policy mian; defined: main/);
  });

  it("rejects an invalid SPIFFE ID in a matcher, naming the rule", () => {
    expect(issuesOf(good().replace("spiffe://a.test/banned", "spiffe://a.test/Bad Path"))[0]).toMatch(
      /policies\.main\.rules\[0\]\.match\[0\]: .*path segment characters.*\(rule path_chars\)/,
    );
  });

  it("rejects a matcher with two kinds at once", () => {
    expect(issuesOf(good().replace("{ id: spiffe://a.test/banned }", "{ id: spiffe://a.test/banned, trust_domain: a.test }"))[0]).toMatch(/exactly one of/);
  });

  it("rejects duplicate rule names", () => {
    expect(issuesOf(good().replace("name: allow-allowed", "name: deny-banned"))[0]).toMatch(/duplicate rule name deny-banned/);
  });

  it("rejects a bad trust domain name", () => {
    expect(issuesOf(good().replace("  b.test: {", "  B.test: {"))[0]).toMatch(/trust_domains\.B\.test: .*lowercase/);
  });

  it("rejects a missing bundle file", () => {
    expect(issuesOf(good().replace(files["b.pem"]!, "/nonexistent/b.pem"))[0]).toMatch(/trust_domains\.b\.test\.bundle: cannot read .*ENOENT/);
  });

  it("rejects a key that does not match the certificate", async () => {
    const other = await pki.a.leaf({ uris: ["spiffe://a.test/other"] });
    const k = writeFiles({ "k.pem": other.keyPem })["k.pem"]!;
    expect(issuesOf(good().replace(files["key.pem"]!, k))[0]).toMatch(/identity\.key: private key does not match/);
  });

  it("rejects an own certificate that is not an SVID", async () => {
    const notSvid = await pki.a.leaf({ dnsNames: ["localhost"] });
    const f = writeFiles({ "c.pem": notSvid.chainPem, "k.pem": notSvid.keyPem });
    expect(issuesOf(good().replace(files["cert.pem"]!, f["c.pem"]!).replace(files["key.pem"]!, f["k.pem"]!))[0]).toMatch(
      /identity\.cert: not a usable X509-SVID.*uri_san_count/,
    );
  });

  it("rejects an expired own certificate", async () => {
    const old = await pki.a.leaf({
      uris: ["spiffe://a.test/sidecar"],
      notBefore: new Date(Date.now() - 2 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    const f = writeFiles({ "c.pem": old.chainPem, "k.pem": old.keyPem });
    expect(issuesOf(good().replace(files["cert.pem"]!, f["c.pem"]!).replace(files["key.pem"]!, f["k.pem"]!))[0]).toMatch(/identity\.cert: .*expired/);
  });

  it("rejects YAML syntax errors and duplicate keys with a line", () => {
    expect(issuesOf("identity: [unclosed\n")[0]).toMatch(/^\d+: : YAML:/);
    expect(issuesOf(good() + "\ndrain_timeout: 1s\ndrain_timeout: 2s\n")[0]).toMatch(/YAML: .*unique/i);
  });

  it("rejects a YAML alias bomb without expanding it", () => {
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 10; i++)
      bomb.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10)
          .fill("*" + String.fromCharCode(96 + i))
          .join(", ")}]`,
      );
    expect(issuesOf(bomb.join("\n"))[0]).toMatch(/YAML: .*alias/i);
  });
});

describe("parley run with a bad config", () => {
  it("exits 2, prints file:line, and binds nothing", async () => {
    const port = await freePort();
    const yaml = good().replace("listen: 127.0.0.1:0", `listen: 127.0.0.1:${port}`).replace("  b.test: { bundle", "  b.test: { bundel");
    const f = writeFiles({ "bad.yaml": yaml })["bad.yaml"]!;
    const r = spawnSync(process.execPath, ["dist/cli.js", "run", "--config", f], { encoding: "utf8", timeout: 10_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${f}:`);
    expect(r.stderr).toMatch(/trust_domains\.b\.test\.bundel: unknown key/);
    expect(r.stdout).not.toMatch(/listener ready/);
    // The port is still free: nothing was bound.
    await new Promise<void>((resolve, reject) => {
      const s = createServer()
        .once("error", reject)
        .listen(port, "127.0.0.1", () => s.close(() => resolve()));
    });
  });

  it("validate says valid for a good file and exits 0", () => {
    const f = writeFiles({ "ok.yaml": good() })["ok.yaml"]!;
    const r = spawnSync(process.execPath, ["dist/cli.js", "validate", f], { encoding: "utf8" });
    expect([r.status, r.stdout]).toEqual([0, expect.stringMatching(/valid \(version [0-9a-f]{16}, 1 listener/)]);
  });
});
