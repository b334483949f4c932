// glibc's malloc tunables of a sidecar process (src/app/malloc.ts): `parley run` restarts itself in
// place (same pid) with GLIBC_TUNABLES set, keeps an operator's other tunables, and leaves an operator
// who set either malloc tunable as configured. Observed in the start record the running process logs.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { MALLOC_TUNABLES, tunables } from "../src/app/malloc.js";
import { configYaml, waitFor, writeFiles } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
beforeAll(async () => void (pki = await makePki()));

describe("tunables", () => {
  it("adds parley's settings, after the operator's other tunables", () => {
    expect(tunables(undefined)).toBe(MALLOC_TUNABLES);
    expect(tunables("")).toBe(MALLOC_TUNABLES);
    expect(tunables("glibc.malloc.arena_max=2")).toBe(`glibc.malloc.arena_max=2:${MALLOC_TUNABLES}`);
  });

  it("leaves an operator who set either malloc tunable as configured", () => {
    expect(tunables("glibc.malloc.trim_threshold=131072")).toBeUndefined();
    expect(tunables("glibc.malloc.arena_max=2:glibc.malloc.top_pad=0")).toBeUndefined();
    expect(tunables(MALLOC_TUNABLES)).toBeUndefined();
  });
});

/** `parley run` with GLIBC_TUNABLES as given: the variable its running process logs, and its pid. */
async function runningTunables(given: string | undefined): Promise<{ value: string | null; samePid: boolean }> {
  const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
  const config = join(f.dir, "parley.yaml");
  writeFileSync(config, configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, 9));
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: "" };
  delete env.GLIBC_TUNABLES;
  if (given !== undefined) env.GLIBC_TUNABLES = given;
  const child = spawn(process.execPath, ["dist/cli.js", "run", "--config", config, "--no-watch"], { stdio: ["ignore", "pipe", "inherit"], env });
  let out = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  try {
    // /proc/PID/environ would not do: glibc 2.36 cuts the variable at its first ':' in place there.
    const line = await waitFor(() => out.split("\n").find((l) => l.includes('"msg":"starting"')), 30_000, "the start record");
    const record = JSON.parse(line) as { pid: number; glibc_tunables: string | null };
    return { value: record.glibc_tunables, samePid: record.pid === child.pid };
  } finally {
    child.kill("SIGKILL");
  }
}

describe.runIf(process.platform === "linux")("parley run", () => {
  it("runs with parley's malloc tunables when none are set", async () => {
    expect(await runningTunables(undefined)).toEqual({ value: MALLOC_TUNABLES, samePid: true });
  }, 40_000);

  it("keeps the operator's other tunables beside them", async () => {
    expect((await runningTunables("glibc.malloc.arena_max=2")).value).toBe(`glibc.malloc.arena_max=2:${MALLOC_TUNABLES}`);
  }, 40_000);

  it("runs with the operator's malloc tunables untouched", async () => {
    expect((await runningTunables("glibc.malloc.trim_threshold=131072")).value).toBe("glibc.malloc.trim_threshold=131072");
  }, 40_000);
});
