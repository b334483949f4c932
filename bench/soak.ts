// npm run soak [-- --seconds 60] [-- --sequential 100000] — not part of the test run.
// Starts the sidecar as its own process in front of an echo workload and holds mixed traffic against
// it: new allowed sessions, denied peers, long-lived sessions talking, a bulk transfer; every 5 s it
// prints sessions, errors, new-session latency and the sidecar's RSS. --sequential N instead runs N
// sessions one after another and reports RSS and heap-free growth at the start and the end.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connect, type TLSSocket } from "node:tls";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { startEcho } from "../src/demo/echo.js";
import { configYaml, freePort, tempDir, writeFiles } from "../testkit/harness.js";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "60" }, sequential: { type: "string" } } });

const a = await CertificateAuthority.root({ trustDomain: "a.test" });
const b = await CertificateAuthority.root({ trustDomain: "b.test" });
const server = await a.leaf({ uris: ["spiffe://a.test/sidecar"], dnsNames: ["localhost"] });
const allowed = await a.leaf({ uris: ["spiffe://a.test/allowed"] });
const denied = await a.leaf({ uris: ["spiffe://a.test/stranger"] });
const echo = await startEcho("127.0.0.1", 0);
const f = writeFiles({ "cert.pem": server.chainPem, "key.pem": server.keyPem, "a.pem": a.certPem, "b.pem": b.certPem });
const port = await freePort();
const config = join(f.dir, "parley.yaml");
writeFileSync(
  config,
  configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.pem"]! }, (echo.server.address() as { port: number }).port, {
    extra: "log: { level: warn }\nlimits: { max_handshakes_per_source: 1000, max_handshakes: 1000 }",
  })
    .replace("listen: 127.0.0.1:0", `listen: 127.0.0.1:${port}`)
    .replace('admin: { listen: "127.0.0.1:0" }', "admin: { listen: false }"),
);
const child = spawn(process.execPath, ["dist/cli.js", "run", "--config", config, "--no-watch"], { stdio: ["ignore", "ignore", "inherit"] });
await new Promise((r) => setTimeout(r, 1500));
void tempDir;

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
  const start = rssMiB();
  const t0 = performance.now();
  let errors = 0;
  for (let i = 0; i < n; i++) {
    try {
      await shortSession(allowed, true);
    } catch {
      errors++;
    }
    if (i > 0 && i % 10_000 === 0) console.log(`${i} sessions, rss ${rssMiB()} MiB, errors ${errors}`);
  }
  console.log(JSON.stringify({ sessions: n, errors, seconds: Math.round((performance.now() - t0) / 1000), rss_start_mib: start, rss_end_mib: rssMiB() }));
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
    console.log(`sessions ${sessions}  errors ${errors}  new-session p50 ${pct(lat, 50)} ms  p99 ${pct(lat, 99)} ms  sidecar rss ${rssMiB()} MiB`);
    lat = [];
  }, 5000);
  await Promise.all([loop(allowed, true), loop(allowed, true), loop(denied, false)]);
  clearInterval(report);
  clearInterval(talk);
  for (const s of longLived) s.destroy();
  console.log(JSON.stringify({ seconds: Number(values.seconds), sessions, errors, rss_end_mib: rssMiB() }));
}
child.kill("SIGTERM");
await echo.close();
process.exit(0);
