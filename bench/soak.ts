// npm run soak [-- --seconds 60] [-- --sequential 100000] [-- --port P --echo-port Q] — not part of
// the test run. Starts the sidecar as its own process in front of an echo workload and holds mixed
// traffic against it: new allowed sessions, denied peers, long-lived sessions talking; every 5 s it
// prints sessions, errors, new-session latency and the sidecar's RSS and heap after GC. --sequential N
// instead runs N sessions one after another and reports the sidecar's heap after GC (and RSS) at the
// start, every 10,000 sessions and at the end. --port and --echo-port fix the sidecar's listener and
// the echo workload's ports (default: free ones). The heap is read over the inspector protocol of the
// sidecar (node --inspect on a loopback port of its choosing): HeapProfiler.collectGarbage, then
// Runtime.getHeapUsage.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connect as netConnect } from "node:net";
import { connect, type TLSSocket } from "node:tls";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { startEcho } from "../src/demo/echo.js";
import { configYaml, freePort, writeFiles } from "../testkit/harness.js";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "60" }, sequential: { type: "string" }, port: { type: "string" }, "echo-port": { type: "string" } },
});

const a = await CertificateAuthority.root({ trustDomain: "a.test" });
const b = await CertificateAuthority.root({ trustDomain: "b.test" });
const server = await a.leaf({ uris: ["spiffe://a.test/sidecar"], dnsNames: ["localhost"] });
const allowed = await a.leaf({ uris: ["spiffe://a.test/allowed"] });
const denied = await a.leaf({ uris: ["spiffe://a.test/stranger"] });
const echo = await startEcho("127.0.0.1", Number(values["echo-port"] ?? 0));
const f = writeFiles({ "cert.pem": server.chainPem, "key.pem": server.keyPem, "a.pem": a.certPem, "b.pem": b.certPem });
const port = values.port ? Number(values.port) : await freePort();
const config = join(f.dir, "parley.yaml");
writeFileSync(
  config,
  configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, (echo.server.address() as { port: number }).port, {
    extra: "log: { level: warn }\nlimits: { max_handshakes_per_source: 1000, max_handshakes: 1000 }",
  })
    .replace("listen: 127.0.0.1:0", `listen: 127.0.0.1:${port}`)
    .replace('admin: { listen: "127.0.0.1:0" }', "admin: { listen: false }"),
);
const child = spawn(process.execPath, ["--inspect=127.0.0.1:0", "dist/cli.js", "run", "--config", config, "--no-watch"], {
  stdio: ["ignore", "ignore", "pipe"],
});
const inspector = await new Promise<string>((resolve) => {
  let text = "";
  child.stderr.on("data", (c: Buffer) => {
    const line = c.toString();
    if (!/^(Debugger listening|Debugger attached|For help, see)/m.test(line)) process.stderr.write(line);
    text += line;
    const m = /ws:\/\/\S+/.exec(text);
    if (m) resolve(m[0]);
  });
});
const heap = await heapProbe(inspector);
await listening(port);

/** The sidecar's heap after a full GC (MiB), over its inspector. */
async function heapProbe(url: string): Promise<() => Promise<number>> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let id = 0;
  const pending = new Map<number, (result: Record<string, number>) => void>();
  ws.onmessage = (m) => {
    const msg = JSON.parse(String(m.data)) as { id?: number; result?: Record<string, number> };
    if (msg.id !== undefined) pending.get(msg.id)?.(msg.result ?? {});
  };
  const call = (method: string) =>
    new Promise<Record<string, number>>((resolve) => {
      pending.set(++id, resolve);
      ws.send(JSON.stringify({ id, method }));
    });
  return async () => {
    await call("HeapProfiler.collectGarbage");
    await call("HeapProfiler.collectGarbage");
    return Math.round((await call("Runtime.getHeapUsage")).usedSize! / 1024 / 102.4) / 10;
  };
}

async function listening(p: number): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = netConnect(p, "127.0.0.1", () => resolve(true)).on("error", () => resolve(false));
      s.on("connect", () => s.destroy());
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const rssMiB = () => Math.round(Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))![1]) / 102.4) / 10;

function dial(creds: Issued): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: "127.0.0.1", port, servername: "localhost", ca: a.certPem, cert: creds.chainPem, key: creds.keyPem });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

/** One short session: connect, echo 64 bytes, close; resolves with its latency (ms) or throws. */
async function shortSession(creds: Issued, expectEcho: boolean): Promise<number> {
  const t0 = performance.now();
  const s = await dial(creds);
  const got = await new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    s.on("data", (c: Buffer) => chunks.push(c));
    s.on("error", () => {});
    s.once("close", () => resolve(Buffer.concat(chunks)));
    s.end(Buffer.alloc(64, 7));
  });
  if (expectEcho && got.length !== 64) throw new Error(`echo of ${got.length} bytes`);
  if (!expectEcho && got.length !== 0) throw new Error("a denied peer got bytes back");
  return performance.now() - t0;
}

const pct = (xs: number[], p: number) => (xs.length ? xs.sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!.toFixed(2) : "-");

if (values.sequential) {
  const n = Number(values.sequential);
  const start = { heap: await heap(), rss: rssMiB() };
  console.log(`start: heap after GC ${start.heap} MiB, rss ${start.rss} MiB`);
  const t0 = performance.now();
  let errors = 0;
  for (let i = 0; i < n; i++) {
    try {
      await shortSession(allowed, true);
    } catch {
      errors++;
    }
    if (i > 0 && i % 10_000 === 0) console.log(`${i} sessions: heap after GC ${await heap()} MiB, rss ${rssMiB()} MiB, errors ${errors}`);
  }
  const end = { heap: await heap(), rss: rssMiB() };
  console.log(
    JSON.stringify({
      sessions: n,
      errors,
      seconds: Math.round((performance.now() - t0) / 1000),
      heap_after_gc_start_mib: start.heap,
      heap_after_gc_end_mib: end.heap,
      heap_growth_mib: Math.round((end.heap - start.heap) * 10) / 10,
      rss_start_mib: start.rss,
      rss_end_mib: end.rss,
    }),
  );
} else {
  const until = Date.now() + Number(values.seconds) * 1000;
  let sessions = 0;
  let errors = 0;
  let lat: number[] = [];
  const longLived = await Promise.all(Array.from({ length: 20 }, () => dial(allowed)));
  for (const s of longLived) s.on("data", () => {}).on("error", () => errors++);
  const talk = setInterval(() => longLived.forEach((s) => s.write("tick")), 200);
  const loop = async (creds: Issued, ok: boolean) => {
    while (Date.now() < until) {
      try {
        lat.push(await shortSession(creds, ok));
        sessions++;
      } catch {
        errors++;
      }
    }
  };
  const report = setInterval(() => {
    void heap().then((h) => {
      console.log(
        `sessions ${sessions}  errors ${errors}  new-session p50 ${pct(lat, 50)} ms  p99 ${pct(lat, 99)} ms  sidecar rss ${rssMiB()} MiB, heap after GC ${h} MiB`,
      );
      lat = [];
    });
  }, 5000);
  await Promise.all([loop(allowed, true), loop(allowed, true), loop(denied, false)]);
  clearInterval(report);
  clearInterval(talk);
  for (const s of longLived) s.destroy();
  console.log(JSON.stringify({ seconds: Number(values.seconds), sessions, errors, rss_end_mib: rssMiB(), heap_after_gc_end_mib: await heap() }));
}
child.kill("SIGTERM");
await echo.close();
process.exit(0);
