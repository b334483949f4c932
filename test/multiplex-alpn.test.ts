// An outbound `transport: multiplexed` route with `negotiate` never hands its parley-request (its
// tokens) to a remote's workload. A remote listener without `multiplex` may select `h2` (the client's
// first choice) and pump the pool's HTTP/2 bytes to its workload, which may even speak h2c and answer
// 200; only a remote that selected parley-mux/1 (a listener that reads the streams itself) is sent a
// request. Found by review: the request went out before any such proof.
import { createServer as h2cServer, type IncomingHttpHeaders } from "node:http2";
import type { AddressInfo } from "node:net";
import { connect as tcpConnect } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { MemoryLog, startHarness, waitFor, writeFiles, type Harness } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let agent: Issued;
let remote: Harness;
const seen: IncomingHttpHeaders[] = [];
const workload = h2cServer();

beforeAll(async () => {
  pki = await makePki();
  agent = await pki.leaf(pki.a, "spiffe://a.test/agent");
  workload.on("stream", (stream, headers) => {
    seen.push(headers);
    stream.on("error", () => {});
    stream.respond({ ":status": 200 });
  });
  await new Promise<void>((resolve) => workload.listen(0, "127.0.0.1", resolve));
  // A plain (not multiplexed) remote listener whose workload happens to speak h2c.
  remote = await startHarness(pki, {
    upstreamPort: (workload.address() as AddressInfo).port,
    policies: "\n  main: { rules: [ { name: all, action: allow, match: [{ trust_domain: a.test }] } ] }\n",
  });
});
afterAll(async () => {
  await remote.close();
  workload.close();
});

it("a negotiating multiplexed route sends its tokens to no workload of a remote without multiplex", async () => {
  const f = writeFiles({ "cert.pem": agent.chainPem, "key.pem": agent.keyPem, "a.pem": pki.a.certPem, "t.jwt": "SECRET.APPROVAL.TOKEN" });
  const cfg = writeFiles({
    "out.yaml": `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
outbound:
  - { name: to-main, listen: "127.0.0.1:0", remote: "127.0.0.1:${remote.port}", expect_id: spiffe://a.test/sidecar, transport: multiplexed, target: "orders.test:8080", negotiate: { roles: [reader], approval_token: ${f["t.jwt"]} } }
policies: {}
admin: { listen: false }
`,
  })["out.yaml"]!;
  const logs = new MemoryLog();
  const out = new Sidecar(loadConfig(cfg), { log: logs.log });
  await out.start();
  try {
    const s = tcpConnect({ host: "127.0.0.1", port: out.outboundAddresses()["to-main"]!.port });
    s.on("error", () => {});
    s.resume();
    expect(await logs.next("outbound")).toMatchObject({ decision: "deny", reason: "remote_not_negotiating", transport: "multiplexed" });
    s.destroy();
    // Wait for the remote to have pumped whatever it was given, then look at what the workload read.
    await waitFor(() => remote.logs.of("decision").length > 0);
    const leaked = seen.map((h) => h["parley-request"]).filter((v) => v !== undefined);
    expect(leaked.map((v) => Buffer.from(String(v), "base64url").toString())).toEqual([]);
  } finally {
    await out.stop(50);
  }
});
