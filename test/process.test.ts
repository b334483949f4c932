// The sidecar process as `parley run` starts it: glibc's malloc tunables (src/app/malloc.ts) — it
// restarts itself in place (same pid) with GLIBC_TUNABLES set, keeps an operator's other tunables and
// leaves an operator who set either malloc tunable as configured — and the libraries it loads only
// when configured (gRPC for a control plane or the Workload API, the Redis client for shared limits).
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { MALLOC_TUNABLES, restartEnv, tunables } from "../src/app/malloc.js";
import { configYaml, freePort, limitedPolicy, waitFor, writeFiles } from "../testkit/harness.js";
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

describe("restartEnv", () => {
  it("restarts once: the restarted process carries a marker and never restarts again", () => {
    const next = restartEnv({ PATH: "/bin" }, []);
    expect(next).toEqual({ PATH: "/bin", GLIBC_TUNABLES: MALLOC_TUNABLES, PARLEY_MALLOC_RESTARTED: "1" });
    // Even if the variable did not survive (glibc strips it in secure mode), no second restart.
    expect(restartEnv({ ...next, GLIBC_TUNABLES: undefined }, [])).toBeUndefined();
  });

  it("leaves glibc's older variables, and a process with the inspector, as they are", () => {
    expect(restartEnv({ MALLOC_TRIM_THRESHOLD_: "131072" }, [])).toBeUndefined();
    expect(restartEnv({ MALLOC_TOP_PAD_: "0" }, [])).toBeUndefined();
    expect(restartEnv({}, ["--inspect-brk=0"])).toBeUndefined();
    expect(restartEnv({ NODE_OPTIONS: "--inspect" }, [])).toBeUndefined();
  });

  it("under Node's permission model without child processes, the sidecar runs untuned rather than not at all", () => {
    const malloc = pathToFileURL(resolve("dist/app/malloc.js")).href;
    const script = `import { tuneMalloc } from ${JSON.stringify(malloc)}; tuneMalloc({}); console.log("still running");`;
    const r = spawnSync(process.execPath, ["--permission", "--allow-fs-read=*", "--input-type=module", "-e", script], {
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "" },
    });
    expect([r.status, r.stdout, r.stderr.includes("ERR_ACCESS_DENIED")]).toEqual([0, "still running\n", false]);
  });
});

// Reports on stderr every bare package specifier the process resolves (node:module registerHooks).
const RESOLVE_HOOK = `import { registerHooks } from "node:module";
registerHooks({ resolve(specifier, context, next) {
  if (!/^(node:|[.\\/]|file:)/.test(specifier)) process.stderr.write("RESOLVED " + specifier + "\\n");
  return next(specifier, context);
} });
`;

interface Started {
  /** The start record (`msg: "starting"`) of the process that serves. */
  readonly start: { pid: number; glibc_tunables: string | null };
  readonly childPid: number;
  /** Bare specifiers resolved until then. */
  readonly packages: Set<string>;
}

/** `parley run` on the harness configuration (plus `extra`), GLIBC_TUNABLES as given, until it logs `until` (default: its listener is ready). */
async function startRun(opts: { tunables?: string; extra?: string; policies?: string; until?: string } = {}): Promise<Started> {
  const f = writeFiles({
    "cert.pem": pki.server.chainPem,
    "key.pem": pki.server.keyPem,
    "a.pem": pki.a.certPem,
    "b.pem": pki.b.certPem,
    "hook.mjs": RESOLVE_HOOK,
  });
  const config = join(f.dir, "parley.yaml");
  const yaml = configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, 9, {
    ...(opts.extra !== undefined ? { extra: opts.extra } : {}),
    ...(opts.policies !== undefined ? { policies: opts.policies } : {}),
  });
  writeFileSync(config, yaml);
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: "" };
  delete env.GLIBC_TUNABLES;
  if (opts.tunables !== undefined) env.GLIBC_TUNABLES = opts.tunables;
  const args = ["--import", pathToFileURL(f["hook.mjs"]!).href, "dist/cli.js", "run", "--config", config, "--no-watch"];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  try {
    const until = opts.until ?? "listener ready";
    await waitFor(() => out.includes(until) || undefined, 30_000, `${until} (stderr: ${err.slice(-500)})`);
    // /proc/PID/environ would not do: glibc 2.36 cuts the variable at its first ':' in place there.
    const start = JSON.parse(out.split("\n").find((l) => l.includes('"msg":"starting"'))!) as Started["start"];
    const packages = new Set([...err.matchAll(/^RESOLVED (\S+)$/gm)].map((m) => m[1]!));
    return { start, childPid: child.pid!, packages };
  } finally {
    child.kill("SIGKILL");
  }
}

describe.runIf(process.platform === "linux")("parley run's malloc tunables", () => {
  it("are parley's when none are set, in the same process", async () => {
    const run = await startRun();
    expect(run.start).toMatchObject({ glibc_tunables: MALLOC_TUNABLES, pid: run.childPid });
  }, 40_000);

  it("are added to the operator's other tunables", async () => {
    expect((await startRun({ tunables: "glibc.malloc.arena_max=2" })).start.glibc_tunables).toBe(`glibc.malloc.arena_max=2:${MALLOC_TUNABLES}`);
  }, 40_000);

  it("are the operator's when either malloc tunable is set", async () => {
    expect((await startRun({ tunables: "glibc.malloc.trim_threshold=131072" })).start.glibc_tunables).toBe("glibc.malloc.trim_threshold=131072");
  }, 40_000);
});

describe("what parley run loads", () => {
  it("leaves gRPC and the Redis client unloaded on a file configuration without them", async () => {
    const { packages } = await startRun();
    expect(packages.has("pino")).toBe(true); // the hook sees the packages that are loaded
    expect([...packages].filter((p) => p.startsWith("@grpc/") || p === "redis")).toEqual([]);
  }, 40_000);

  it("loads the Redis client once shared limits are configured", async () => {
    const shared = `shared_limits: { url: "redis://127.0.0.1:${await freePort()}" }\n`;
    const policies = limitedPolicy("{ rate: { per_second: 5, burst: 10, scope: shared } }");
    // Nothing listens on that port: the client, once loaded, says it cannot connect.
    const { packages } = await startRun({ extra: shared, policies, until: "shared limits backend cannot connect" });
    expect(packages.has("redis")).toBe(true);
  }, 40_000);
});
