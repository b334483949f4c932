// The README as a new user pastes it: the parley command is written as it can be run right after
// `npm ci` (npx runs the package's own bin), and the examples that need no running sidecar work.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const readme = readFileSync("README.md", "utf8");

/** Every command line of the README's sh blocks: continuations joined, comments cut. */
function shellLines(): string[] {
  const blocks = [...readme.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
  return blocks
    .flatMap((b) => b.replace(/\\\n\s*/g, "").split("\n"))
    .map((l) => l.replace(/\s+#.*$/, "").trim())
    .filter(Boolean);
}

describe("README commands", () => {
  it("writes parley as npx parley wherever a shell would run it (npm ci puts no parley on the PATH)", () => {
    const lines = shellLines();
    expect(lines.length).toBeGreaterThan(5);
    const bare = lines.flatMap((l) => l.split(/\||&&|;/)).filter((cmd) => /^\s*parley\b/.test(cmd));
    expect(bare).toEqual([]);
  });

  it("npx parley runs the package's own bin in the project directory", () => {
    const pkg = JSON.parse(readFileSync("package.json", "utf8")) as { version: string; bin: Record<string, string> };
    expect(pkg.bin["parley"]).toBe("dist/cli.js");
    const r = spawnSync("npx", ["--no-install", "parley", "--version"], { encoding: "utf8", timeout: 60_000 });
    expect([r.status, r.stdout]).toEqual([0, `${pkg.version}\n`]);
  }, 60_000); // npx's own start-up takes seconds on a loaded machine

  it("its offline examples (check, tail on the recorded log) run as written", () => {
    const offline = shellLines().filter((l) => /^npx parley (check|tail test\/)/.test(l));
    expect(offline.length).toBeGreaterThanOrEqual(3);
    for (const line of offline) {
      const [, , ...args] = line.split(/\s+/);
      const r = spawnSync(process.execPath, ["dist/cli.js", ...args], { encoding: "utf8", timeout: 15_000 });
      expect([line, r.status === 0 || r.status === 1, r.stderr]).toEqual([line, true, ""]);
      expect(r.stdout).not.toBe("");
    }
  }, 60_000);
});
