// The parley command as operators call it: exit codes and output of check and validate.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

const parley = (...args: string[]) => spawnSync(process.execPath, ["dist/cli.js", ...args], { encoding: "utf8", timeout: 15_000 });
const demo = ["--config", "config/demo.yaml"];

describe("parley check", () => {
  it("exits 0 on allow and explains every rule", () => {
    const r = parley("check", ...demo, "--id", "spiffe://parley.demo/ns/ops/sa/admin");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^ALLOW  spiffe:\/\/parley\.demo\/ns\/ops\/sa\/admin/);
    expect(r.stdout).toMatch(/rule {5}ops-namespace/);
    expect(r.stdout).toMatch(/allow web-frontend +identity_not_matched/);
    expect(r.stdout).toMatch(/allow partner-domain +not_reached/);
  });

  it("exits 1 on deny, with the reasons", () => {
    const r = parley("check", ...demo, "--id", "spiffe://parley.demo/ns/web/sa/legacy");
    expect([r.status, r.stdout]).toEqual([1, expect.stringMatching(/DENY .*\n.*\n {2}rule {5}retired-legacy\n {2}reasons  explicit_deny/)]);
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
  it("an unknown command exits 2 with the usage", () => {
    const r = parley("frobnicate");
    expect([r.status, r.stderr]).toEqual([2, expect.stringMatching(/unknown command frobnicate[\s\S]*usage: parley/)]);
  });
});
