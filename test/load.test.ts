// Under load: what ended sessions leave behind, and what a log reader that stops reading costs.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { once, type EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import YAML from "yaml";
import { configSchema } from "../src/config/schema.js";
import { bufferedDestination, createLogger, DecisionLog, LOG_FLUSH_MS } from "../src/telemetry/log.js";
import { Metrics } from "../src/telemetry/metrics.js";
import { tempDir, waitFor } from "../testkit/harness.js";

describe("memory after sessions end", () => {
  // Each session's expiry (its certificate's notAfter) is a distinct duration; one Node timer per
  // expiry used to retain ~160 B per ended session until the certificate expired.
  it("retains under 64 B of heap per ended session (heap after GC, in a process of its own)", () => {
    const r = spawnSync(process.execPath, ["--expose-gc", "--no-flush-bytecode", "--import", "tsx", "testkit/retained-heap.ts", "1000"], {
      encoding: "utf8",
      timeout: 170_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as { sessions: number; retained_per_session: number };
    expect(out.sessions).toBe(2000);
    expect(out.retained_per_session).toBeLessThan(64);
  }, 180_000);
});

describe("a decision-log reader that stops reading", () => {
  // stdout stands in as a FIFO whose reader (cat) is stopped with SIGSTOP, then resumed.
  it("holds at most log.buffer, counts what it drops, and logs the count once the writer drains", async () => {
    const dir = tempDir();
    const fifo = join(dir, "log.fifo");
    const out = join(dir, "out.log");
    execFileSync("mkfifo", [fifo]);
    const reader = spawn("sh", ["-c", `exec cat "${fifo}" > "${out}"`], { stdio: "ignore" });
    try {
      const bufferBytes = 256 * 1024;
      const destination = bufferedDestination(bufferBytes, fifo);
      const metrics = new Metrics({
        sessionsByListener: () => ({}),
        ownSvidSecondsLeft: () => undefined,
        identity: () => undefined,
        configVersion: () => undefined,
      });
      const log = new DecisionLog(createLogger("info", destination), { metrics });
      await once(destination as unknown as EventEmitter, "ready");
      process.kill(reader.pid!, "SIGSTOP");
      const records = 20_000;
      const pad = "p".repeat(160);
      for (let i = 0; i < records; i++) log.lifecycle("load", { i, pad });
      const dropped = (await metrics.registry.getSingleMetric("parley_log_records_dropped_total")!.get()).values[0]!.value;
      expect(dropped).toBeGreaterThan(records / 2);

      process.kill(reader.pid!, "SIGCONT");
      const text = await waitFor(
        () => {
          const t = readFileSync(out, "utf8");
          return t.includes('"log_records_dropped"') ? t : undefined;
        },
        10_000,
        "the dropped-records record",
      );
      const lines = text
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { event: string; count?: number; i?: number });
      const report = lines.find((l) => l.event === "log_records_dropped")!;
      expect(report.count).toBe(dropped);
      const written = lines.filter((l) => l.event === "lifecycle");
      expect(written.length + dropped).toBe(records);
      // What got through while the reader was stopped: the buffer, plus what the pipe (64 KiB) and
      // cat's own read buffer held; the rest was dropped instead of held.
      const through = Buffer.byteLength(text.slice(0, text.indexOf('"log_records_dropped"')));
      expect(through).toBeLessThan(bufferBytes + 512 * 1024);
      expect(written.map((l) => l.i)).toEqual([...written.map((l) => l.i)].sort((a, b) => a! - b!));
    } finally {
      reader.kill("SIGKILL");
    }
  });

  // Only the flush timer is faked: the file and sonic-boom's writes are real.
  it("flushes a lone record within the flush period, and writes nothing while idle", async () => {
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    try {
      const file = join(tempDir(), "log.jsonl");
      const destination = bufferedDestination(64 * 1024, file);
      const stream = destination as unknown as EventEmitter & { flush(): void };
      await once(stream, "ready");
      const writes: number[] = [];
      stream.on("write", (n: number) => writes.push(n));
      const flush = vi.spyOn(stream, "flush");
      vi.advanceTimersByTime(10 * LOG_FLUSH_MS);
      expect(flush).not.toHaveBeenCalled();

      createLogger("info", destination).info({ event: "lone" }, "one record");
      expect(readFileSync(file, "utf8")).toBe(""); // held: under the batch size
      vi.advanceTimersByTime(LOG_FLUSH_MS);
      expect(flush).toHaveBeenCalledTimes(1);
      await waitFor(() => writes.length > 0 || undefined, 5000, "sonic-boom's write");
      expect(readFileSync(file, "utf8")).toContain('"event":"lone"');
      vi.advanceTimersByTime(10 * LOG_FLUSH_MS);
      expect(flush).toHaveBeenCalledTimes(1);
      expect(writes.filter((n) => n === 0)).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });

  it("log.buffer is a size of at least 64KiB, 4 MiB by default", () => {
    const base = "identity: { cert: c.pem, key: k.pem }\ntrust_domains: {}\npolicies: {}\n";
    expect(configSchema.parse(YAML.parse(base)).log.buffer).toBe(4 * 1024 * 1024);
    expect(configSchema.parse(YAML.parse(base + "log: { buffer: 1MiB }")).log.buffer).toBe(1024 * 1024);
    expect(configSchema.safeParse(YAML.parse(base + "log: { buffer: 1KiB }")).success).toBe(false);
  });
});
