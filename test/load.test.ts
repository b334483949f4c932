// Under load: what ended sessions leave behind, and what a log reader that stops reading costs.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

describe("memory after sessions end", () => {
  // Each session's expiry (its certificate's notAfter) is a distinct duration; one Node timer per
  // expiry used to retain ~160 B per ended session until the certificate expired.
  it("retains under 64 B of heap per ended session (heap after GC, in a process of its own)", () => {
    const r = spawnSync(process.execPath, ["--expose-gc", "--import", "tsx", "testkit/retained-heap.ts", "1000"], { encoding: "utf8", timeout: 170_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as { sessions: number; retained_per_session: number };
    expect(out.sessions).toBe(1000);
    expect(out.retained_per_session).toBeLessThan(64);
  }, 180_000);
});
