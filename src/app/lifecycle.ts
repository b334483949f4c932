// The process around a running sidecar or control plane: signal handlers installed before anything
// can fail, SIGTERM/SIGINT drain (a second signal exits at once with 1), SIGHUP reloads.
import type { DecisionLog } from "../telemetry/log.js";

const FLUSH_WAIT_MS = 2000;

export interface Stoppable {
  readonly log?: DecisionLog;
  reload(): void;
  stop(): Promise<void>;
}

/**
 * Installs the handlers, then starts. A signal that arrives while starting waits for the start to end,
 * then stops what started. Resolves once the process is running; rejects when the start fails.
 */
export async function runUntilSignalled(start: () => Promise<Stoppable>): Promise<void> {
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    void running.then(async (r) => {
      if (!r) return process.exit(0);
      r.log?.lifecycle("signal received", { signal });
      try {
        await r.stop();
      } catch (e) {
        r.log?.error("stop failed", { detail: (e as Error).message });
        return process.exit(1);
      }
      if (!r.log) return process.exit(0);
      // A reader of stdout that never drains must not hold the exit: the flush gets a bounded wait.
      setTimeout(() => process.exit(0), FLUSH_WAIT_MS).unref();
      r.log.logger.flush(() => process.exit(0));
    });
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("SIGHUP", () => void running.then((r) => r?.reload()));
  // Handlers run on a later turn of the event loop, when `running` is set.
  const started = start();
  const running: Promise<Stoppable | undefined> = started.catch(() => undefined);
  await started;
}
