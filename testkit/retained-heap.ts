// Run by test/load.test.ts as its own process, under --expose-gc: a sidecar and its clients in one
// process. SESSIONS sessions (8 at a time, resumed TLS, client certificates of distinct lifetimes, so
// that every session has an expiry of its own), four times; the heap after GC is taken after the second
// and the fourth. Two runs warm up (pools and caches filled; V8's bytecode, feedback and optimised code
// made for what the sessions run: the second run still added ~57 B a session of them, the fourth ~7),
// so what the last two add is what ended sessions retain. Run with --no-flush-bytecode: V8 otherwise
// drops unused bytecode at some collection, which moved the figure by -2.5 KB a session either way.
// Prints one JSON line: { sessions, heap_warm, heap_end, retained_per_session } (bytes; sessions is
// the number measured, SESSIONS a run).
// Usage: node --expose-gc --no-flush-bytecode --import tsx testkit/retained-heap.ts SESSIONS
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { getHeapStatistics } from "node:v8";
import { loadConfig } from "../src/config/load.js";
import { startEcho } from "../src/demo/echo.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { createLogger, DecisionLog } from "../src/telemetry/log.js";
import { configYaml, dialTls, waitFor, writeFiles } from "./harness.js";
import { makePki } from "./pki.js";

const SESSIONS = Number(process.argv[2] ?? 3000);
const CONCURRENT = 8;
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --expose-gc");

const pki = await makePki();
const hour = 3_600_000;
// Distinct expiries: each certificate's notAfter is another instant, and each session sees it from
// another moment.
const clients = await Promise.all(
  Array.from({ length: 16 }, (_, i) => pki.leaf(pki.a, "spiffe://a.test/allowed", { notAfter: new Date(Date.now() + hour + i * 60_000) })),
);
const echo = await startEcho("127.0.0.1", 0);
const files = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem, "b.pem": pki.b.certPem });
const configFile = join(files.dir, "parley.yaml");
const paths = { cert: files["cert.pem"]!, key: files["key.pem"]!, a: files["a.pem"]!, b: files["b.pem"]! };
writeFileSync(configFile, configYaml(paths, (echo.server.address() as { port: number }).port, { extra: "log: { deny_cap: false }" }));
// Log lines are made (their cost is part of a session) and dropped: a log kept in memory would grow.
const log = new DecisionLog(createLogger("info", { write: () => {} }));
const sidecar = new Sidecar(loadConfig(configFile), { log });
await sidecar.start();
const port = sidecar.addresses()["main"]!.port;

const tickets: (Buffer | undefined)[] = clients.map(() => undefined);
async function session(i: number): Promise<void> {
  const c = i % clients.length;
  const ticket = tickets[c];
  const s = await dialTls(port, pki, clients[c], ticket ? { session: ticket } : {});
  s.once("session", (t: Buffer) => (tickets[c] = t));
  await new Promise<void>((resolve, reject) => {
    s.once("data", () => s.end());
    s.once("close", () => resolve());
    s.once("error", reject);
    s.write("x");
  });
}

async function run(n: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) await session(next++);
  };
  await Promise.all(Array.from({ length: CONCURRENT }, worker));
  await waitFor(() => sidecar.registry.all().length === 0, 10_000, "every session to end");
}

async function heapAfterGc(): Promise<number> {
  // Let closed sockets' callbacks run before collecting.
  await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 4; i++) {
    gc!();
    await new Promise((r) => setImmediate(r));
  }
  return getHeapStatistics().used_heap_size;
}

for (let i = 0; i < 2; i++) await run(SESSIONS);
const heapWarm = await heapAfterGc();
for (let i = 0; i < 2; i++) await run(SESSIONS);
const heapEnd = await heapAfterGc();
const measured = 2 * SESSIONS;
process.stdout.write(
  JSON.stringify({ sessions: measured, heap_warm: heapWarm, heap_end: heapEnd, retained_per_session: (heapEnd - heapWarm) / measured }) + "\n",
);
await sidecar.stop(0);
await echo.close();
process.exit(0);
