// Running short of resources: file descriptors, an upstream that never answers, and many sessions in
// a row without growing.
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { connect as tcpConnect, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { startEcho } from "../src/demo/echo.js";
import { configYaml, dialTls, freePort, openSession, readAll, startHarness, waitFor, writeFiles } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let allowed: Issued;
beforeAll(async () => {
  pki = await makePki();
  allowed = await pki.leaf(pki.a, "spiffe://a.test/allowed");
});

describe("resources", () => {
  it("out of file descriptors: accept errors are survived, and service resumes when descriptors free up", async () => {
    const echo = await startEcho("127.0.0.1", 0);
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
    const port = await freePort();
    const config = join(f.dir, "parley.yaml");
    writeFileSync(
      config,
      // Handshake caps far above the descriptor limit, so only the limit sheds connections.
      configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, (echo.server.address() as { port: number }).port, {
        extra: "limits: { max_handshakes: 5000, max_handshakes_per_source: 5000 }",
      })
        .replace("listen: 127.0.0.1:0", `listen: 127.0.0.1:${port}`)
        .replace('admin: { listen: "127.0.0.1:0" }', "admin: { listen: false }"),
    );
    // A tight descriptor limit for the sidecar process only.
    const child = spawn("bash", ["-c", `ulimit -n 256 && exec "${process.execPath}" dist/cli.js run --config "${config}" --no-watch`], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    try {
      await waitFor(() => out.includes("listener ready"), 10_000, "start");
      const held: Socket[] = [];
      let shedByServer = 0;
      for (let i = 0; i < 400; i++) {
        const s = tcpConnect({ host: "127.0.0.1", port });
        s.on("error", () => {});
        s.on("close", () => shedByServer++);
        held.push(s);
      }
      // With 256 descriptors, connections past the limit could not be kept: accept failed (EMFILE)
      // and they were shed, while the process went on.
      await waitFor(() => shedByServer > 0, 10_000, "connections shed by the server");
      expect(child.exitCode).toBeNull(); // still running
      for (const s of held) s.destroy();
      // Service resumes once the descriptors are back (the sidecar first sees those peers close).
      const deadline = Date.now() + 8000;
      for (;;) {
        try {
          const session = await openSession(port, pki, allowed);
          expect(session.got()).toBe("ping");
          session.s.end();
          await session.closed;
          break;
        } catch (e) {
          if (Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      expect(child.exitCode).toBeNull();
    } finally {
      child.kill("SIGKILL");
      await echo.close();
    }
  }, 30_000);

  it("an upstream that accepts and never answers: the client waits, nothing breaks, the idle timeout ends it", async () => {
    const silent = createServer((s) => s.on("error", () => {}));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const policies = `
  main:
    rules:
      - name: allowed
        action: allow
        match: [{ id: spiffe://a.test/allowed }]
        limits: { idle_timeout: 300ms }
`;
    const h = await startHarness(pki, { upstreamPort: (silent.address() as { port: number }).port, policies });
    try {
      const s = await dialTls(h.port, pki, allowed);
      const got = readAll(s);
      s.write("hello?");
      expect((await got).length).toBe(0);
      expect((await h.logs.next("session_end")).end_reason).toBe("idle_timeout");
    } finally {
      await h.close();
      silent.close();
    }
  });

  it("3,000 sessions in a row leave no live state behind and the heap does not grow past a small bound", async () => {
    const h = await startHarness(pki);
    try {
      const run = async (n: number) => {
        for (let i = 0; i < n; i++) {
          const s = await dialTls(h.port, pki, allowed);
          const got = readAll(s);
          s.end("x");
          await got;
        }
      };
      await run(300); // warm up: JIT, caches, pools
      global.gc?.();
      const before = process.memoryUsage().heapUsed;
      await run(3000);
      await waitFor(() => h.sidecar.registry.size === 0, 3000, "sessions gone");
      global.gc?.();
      const grown = process.memoryUsage().heapUsed - before;
      expect(h.sidecar.registry.size).toBe(0);
      expect(h.sidecar.admission.active).toBe(0);
      expect(h.sidecar.admission.trackedIdentities).toBe(0);
      // The test process holds the clients too; 3,000 leaked sessions would be far more than this.
      expect(grown).toBeLessThan(24 * 1024 * 1024);
    } finally {
      await h.close();
    }
  }, 120_000);
});
