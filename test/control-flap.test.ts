// A control plane that flaps, up 2 s and down 2 s for 32 s, with max_staleness (4 s) above the down
// time plus a reconnect (backoff.max 1 s, and a loaded machine's handshake): the sidecar reconnects in every up-window (a fresh attempt each time, backoff capped at
// backoff.max), never goes stale, and a client loop opening allowed sessions throughout sees no failure.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pino } from "pino";
import { beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadBootstrap } from "../src/config/load.js";
import { startControlPlane, type ControlPlane } from "../src/control/server/plane.js";
import { startEcho } from "../src/demo/echo.js";
import { dialTls, freePort, MemoryLog, startControlled, tempDir, waitFor } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let alice: Issued;
beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/alice");
});

/**
 * One session: the echo must come back before the connection closes. A denial (config_stale) closes
 * it without an echo; slowness on a loaded machine is not a failure, so the only timer is a generous
 * backstop.
 */
async function echoed(port: number): Promise<void> {
  const s = await dialTls(port, pki, alice);
  const done = new Promise<void>((resolve, reject) => {
    let got = "";
    const timer = setTimeout(() => reject(new Error("no echo within 30 s")), 30_000);
    s.on("data", (c: Buffer) => {
      got += c.toString();
      if (got === "ping") {
        clearTimeout(timer);
        resolve();
      }
    });
    s.on("close", () => {
      clearTimeout(timer);
      reject(new Error(`closed before the echo (got ${JSON.stringify(got)})`));
    });
    s.on("error", () => undefined);
  });
  s.write("ping");
  try {
    await done;
  } finally {
    s.end();
  }
}

const UP_MS = 2000;
const DOWN_MS = 2000;
const CYCLES = 8;

describe("a flapping control plane", () => {
  it("up 2 s / down 2 s for 32 s: the sidecar reconnects every time and no allowed session fails", async () => {
    const dir = tempDir();
    mkdirSync(join(dir, "cp"));
    const echo = await startEcho("127.0.0.1", 0);
    writeFileSync(join(dir, "cp", "a.pem"), pki.a.certPem);
    writeFileSync(
      join(dir, "cp", "shared.yaml"),
      `trust_domains: { a.test: { bundle: a.pem } }
listeners: [{ name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:${(echo.server.address() as { port: number }).port}", policy: main }]
policies: { main: { rules: [{ name: allowed, action: allow, match: [{ id: spiffe://a.test/alice }] }] } }
`,
    );
    writeFileSync(join(dir, "cert.pem"), pki.server.chainPem);
    writeFileSync(join(dir, "key.pem"), pki.server.keyPem);
    const port = await freePort();
    writeFileSync(
      join(dir, "boot.yaml"),
      `identity: { cert: cert.pem, key: key.pem }
control_plane: { address: "127.0.0.1:${port}", node_id: node-a, max_staleness: 4s, backoff: { initial: 100ms, max: 1s } }
`,
    );
    const quiet = pino({ level: "silent" });
    let cp: ControlPlane | undefined = await startControlPlane({ dir: join(dir, "cp"), listen: `127.0.0.1:${port}`, log: quiet });
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(join(dir, "boot.yaml")), logs);
    const connected = () => logs.of("lifecycle").filter((r) => r.msg === "control plane connected").length;
    const run = { on: true };
    let sessions = 0;
    const failures: string[] = [];
    try {
      await logs.next("config_applied");
      const sidecarPort = agent.sidecar.addresses()["main"]!.port;
      const traffic = (async () => {
        while (run.on) {
          try {
            await echoed(sidecarPort);
            sessions++;
          } catch (e) {
            failures.push((e as Error).message);
          }
        }
      })();
      let seen = 0;
      for (let i = 0; i < CYCLES; i++) {
        // Up: the sidecar must reconnect within the window (its backoff never exceeds 1 s).
        const upAt = Date.now();
        await waitFor(() => connected() > seen || undefined, UP_MS, `reconnect in up-window ${i}`);
        seen = connected();
        await new Promise((r) => setTimeout(r, UP_MS - (Date.now() - upAt)));
        await cp.close();
        cp = undefined;
        await new Promise((r) => setTimeout(r, DOWN_MS));
        cp = await startControlPlane({ dir: join(dir, "cp"), listen: `127.0.0.1:${port}`, log: quiet });
      }
      run.on = false;
      await traffic;
      // A failure names the decisions that refused sessions, if any did (fail closed, a re-check).
      const denied = logs
        .of("decision")
        .filter((r) => r.decision === "deny")
        .map((r) => r.reasons);
      const ended = logs
        .of("session_end")
        .filter((r) => r.end_reason !== "completed")
        .map((r) => r.end_reason);
      expect({ failures, denied, ended }).toEqual({ failures: [], denied: [], ended: [] });
      expect(sessions).toBeGreaterThan(CYCLES * 4);
      expect(logs.of("error").filter((r) => String(r.msg).includes("stale"))).toEqual([]);
      expect(connected()).toBeGreaterThanOrEqual(CYCLES);
    } finally {
      run.on = false;
      await agent.stop(50);
      await cp?.close();
      await echo.close();
    }
  }, 90_000);
});
