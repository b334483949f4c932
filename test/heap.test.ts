// The V8 heap tuning of a sidecar process (src/app/heap.ts), observed in child Node processes through
// V8's own trace: the new space stays at its initial size under survivor-heavy allocation, the old
// generation's limit is 3x what survived, an operator's own flags win, and `parley run` is tuned.
import { spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { tuneHeap } from "../src/app/heap.js";
import { freePort, waitFor, writeFiles } from "../testkit/harness.js";
import { makePki } from "../testkit/pki.js";

const HEAP_MODULE = pathToFileURL(resolve("dist/app/heap.js")).href;

// Retains ~2 million small objects (survivors: V8 grows the new space for them by default), then
// reports the flags set and the new space's size.
const SCRIPT = `
import { getHeapSpaceStatistics } from "node:v8";
const { tuneHeap } = await import(${JSON.stringify(HEAP_MODULE)});
const set = tuneHeap();
const kept = [];
for (let i = 0; i < 2e6; i++) kept.push({ i, s: "x" + i });
const newSpace = getHeapSpaceStatistics().find((s) => s.space_name === "new_space").space_size;
console.log("RESULT " + JSON.stringify({ set, newSpace, kept: kept.length }));
`;

function run(nodeFlags: string[]): { set: string[]; newSpace: number; factors: string[] } {
  const r = spawnSync(process.execPath, ["--trace-gc-verbose", ...nodeFlags, "--input-type=module", "-e", SCRIPT], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, NODE_OPTIONS: "" },
  });
  expect(r.status, r.stderr).toBe(0);
  const result = /^RESULT (.*)$/m.exec(r.stdout);
  expect(result, r.stdout.slice(-2000)).not.toBeNull();
  const factors = [...r.stdout.matchAll(/\[HeapController\] factor ([\d.]+)/g)].map((m) => m[1]!);
  return { ...(JSON.parse(result![1]!) as { set: string[]; newSpace: number }), factors };
}

describe("tuneHeap", () => {
  it("keeps the new space at its initial size and the old generation's limit at 3x what survived", () => {
    const tuned = run([]);
    expect(tuned.set).toEqual(["--semi-space-growth-factor=1", "--heap-growing-percent=200"]);
    expect(tuned.newSpace).toBeLessThanOrEqual(2 * 1024 * 1024);
    expect(tuned.factors.length).toBeGreaterThan(0);
    expect(new Set(tuned.factors)).toEqual(new Set(["3.0"]));
  });

  it("leaves the young generation and the growing factor to an operator who set them", () => {
    const own = run(["--semi-space-growth-factor=2", "--heap-growing-percent=50"]);
    expect(own.set).toEqual([]);
    expect(own.newSpace).toBeGreaterThan(2 * 1024 * 1024);
    expect(new Set(own.factors)).toEqual(new Set(["1.5"]));
  });

  it("reads the operator's flags from NODE_OPTIONS as well", () => {
    // Nothing is set in this process: both flags are named by the operator.
    expect(tuneHeap([], "--max-semi-space-size=8 --heap_growing_percent=100")).toEqual([]);
    expect(tuneHeap(["--max-old-space-size=512"], "--min-semi-space-size=2 --heap-growing-percent=100")).toEqual([]);
  });

  it("is in force in parley run: a 1,000-rule configuration loads with a 1 MiB new space and factor 3", async () => {
    const pki = await makePki();
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem });
    const rules = Array.from({ length: 1000 }, (_, i) => `      - { name: r${i}, action: allow, match: [{ id: spiffe://a.test/ns/n${i % 100}/sa/s${i} }] }`);
    const config = join(f.dir, "parley.yaml");
    writeFileSync(
      config,
      `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
listeners:
  - { name: main, listen: "127.0.0.1:${await freePort()}", upstream: "127.0.0.1:${await freePort()}", policy: main }
policies:
  main:
    rules:
${rules.join("\n")}
admin: { listen: false }
`,
    );
    const child = spawn(process.execPath, ["--trace-gc-verbose", "dist/cli.js", "run", "--config", config, "--no-watch"], {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, NODE_OPTIONS: "" },
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => out.includes("listener ready") && /\[HeapController\] factor/.test(out), 50_000, "a tuned start");
      const factors = [...out.matchAll(/\[HeapController\] factor ([\d.]+)/g)].map((m) => m[1]);
      expect(new Set(factors)).toEqual(new Set(["3.0"]));
      const newSpace = [...out.matchAll(/New space, .*committed:\s+(\d+) KB/g)].map((m) => Number(m[1]));
      expect(newSpace.length).toBeGreaterThan(0);
      expect(Math.max(...newSpace)).toBeLessThanOrEqual(2048);
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);
});
