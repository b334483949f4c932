// The sidecar's own identity from a SPIFFE Workload API server (testkit/workloadapi.ts):
// first PermissionDenied then an SVID, rotations, a federated domain that disappears, the required
// header, and rotation under load.
import { createHash, randomBytes, X509Certificate } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { startEcho, type EchoServer } from "../src/demo/echo.js";
import type { WorkloadApiSource } from "../src/workloadapi/client.js";
import { loadWorkloadService, readX509Message } from "../src/workloadapi/message.js";
import { TestWorkloadApi } from "../testkit/workloadapi.js";
import { derFromPem } from "../src/spiffe/x509cert.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { followWorkloadApi } from "../src/identity/workload.js";
import { dialTls, MemoryLog, openSession, readAll, tempDir, waitFor } from "../testkit/harness.js";
import type { TestPki } from "../testkit/pki.js";

let a: CertificateAuthority;
let b: CertificateAuthority;
let alice: Issued;
let carol: Issued;

beforeAll(async () => {
  a = await CertificateAuthority.root({ trustDomain: "a.test" });
  b = await CertificateAuthority.root({ trustDomain: "b.test" });
  alice = await a.leaf({ uris: ["spiffe://a.test/alice"] });
  carol = await b.leaf({ uris: ["spiffe://b.test/carol"] });
});

const svid = () => a.leaf({ uris: ["spiffe://a.test/sidecar"], dnsNames: ["localhost"] });

interface Rig {
  api: TestWorkloadApi;
  sidecar: Sidecar;
  source: WorkloadApiSource;
  logs: MemoryLog;
  echo: EchoServer;
  pki: TestPki;
  port(): number;
  close(): Promise<void>;
}
let rig: Rig | undefined;
afterEach(async () => {
  await rig?.close();
  rig = undefined;
});

async function start(denyFirst = 0): Promise<Rig> {
  const dir = tempDir();
  const api = new TestWorkloadApi(join(dir, "agent.sock"), a, { svid: await svid(), federated: { "spiffe://b.test": b } });
  api.answer("FetchX509SVID", grpc.status.PERMISSION_DENIED, "no identity issued yet", denyFirst);
  await api.listen();
  const echo = await startEcho("127.0.0.1", 0);
  writeFileSync(
    join(dir, "parley.yaml"),
    `identity: { workload_api: { endpoint: "unix://${join(dir, "agent.sock")}" } }
trust_domains: {}
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:${(echo.server.address() as { port: number }).port}", policy: main }
policies:
  main:
    rules:
      - { name: allowed, action: allow, match: [{ id: spiffe://a.test/alice }, { trust_domain: b.test }] }
admin: { listen: false }
`,
  );
  const logs = new MemoryLog();
  const config = loadConfig(join(dir, "parley.yaml"));
  const sidecar = new Sidecar(config, { log: logs.log });
  await sidecar.start();
  expect(sidecar.readiness().ready).toBe(false);
  const source = followWorkloadApi(sidecar, config.identitySource!, logs.log, { initialMs: 50, maxMs: 200 });
  // The client verifies the sidecar against a.test's CA, as a mesh peer would.
  const pki = { a, b, server: alice, leaf: async () => alice } as unknown as TestPki;
  return {
    api,
    sidecar,
    source,
    logs,
    echo,
    pki,
    port: () => sidecar.addresses()["main"]!.port,
    async close() {
      source.stop();
      await sidecar.stop(100);
      api.close();
      await echo.close();
    },
  };
}

const served = async (port: number, pki: TestPki) => {
  const s = await dialTls(port, pki, alice);
  const fp = s.getPeerX509Certificate()!.fingerprint256;
  s.destroy();
  return fp;
};
const fingerprintOf = (i: Issued) => new X509Certificate(i.certPem).fingerprint256;

describe("Workload API identity", () => {
  it("retries after PermissionDenied, then serves with the SVID it streams (readiness false until then)", async () => {
    rig = await start(1);
    await rig.logs.next("error", (r) => r.code === "PERMISSION_DENIED");
    await rig.logs.next("lifecycle", (r) => r.msg === "identity from the Workload API applied");
    expect(rig.sidecar.readiness().ready).toBe(true);
    expect(await served(rig.port(), rig.pki)).toBe(fingerprintOf(rig.api.state.svid));
    expect((await openSession(rig.port(), rig.pki, alice)).got()).toBe("ping");
    expect((await openSession(rig.port(), rig.pki, carol)).got()).toBe("ping"); // b.test, federated
  });

  it("takes JWT authorities from FetchJWTBundles into the trust domain's bundle", async () => {
    const { generateKeyPair, exportJWK } = await import("jose");
    const k = await generateKeyPair("ES256");
    rig = await start();
    rig.api.jwks = JSON.stringify({ keys: [{ use: "jwt-svid", kid: "k9", ...(await exportJWK(k.publicKey)) }] });
    // A new stream picks the new JWKS up: break the current ones.
    rig.api.end("FetchX509SVID", grpc.status.UNAVAILABLE);
    rig.api.end("FetchJWTBundles", grpc.status.UNAVAILABLE);
    const deadline = Date.now() + 5000;
    while (
      !rig.sidecar.configured ||
      rig.sidecar.config.bundles
        .all()
        .find((x) => x.trustDomain.name === "a.test")
        ?.jwtKey("k9") === undefined
    ) {
      if (Date.now() > deadline) throw new Error("JWT authority never arrived");
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  it("chooses the SVID whose hint is configured, else the first", async () => {
    const first = await svid();
    const internal = await a.leaf({ uris: ["spiffe://a.test/internal"] });
    const der = (pem: string) => Buffer.concat(derFromPem(pem, "pem"));
    const key = (i: Issued) => Buffer.from(i.keyPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    const msg = {
      svids: [
        { spiffe_id: "spiffe://a.test/sidecar", x509_svid: der(first.chainPem), x509_svid_key: key(first), bundle: der(a.certPem), hint: "external" },
        { spiffe_id: "spiffe://a.test/internal", x509_svid: der(internal.chainPem), x509_svid_key: key(internal), bundle: der(a.certPem), hint: "internal" },
      ],
      federated_bundles: {},
    };
    expect(readX509Message(msg, undefined, Date.now()).svid.id.toString()).toBe("spiffe://a.test/sidecar");
    expect(readX509Message(msg, "internal", Date.now()).svid.id.toString()).toBe("spiffe://a.test/internal");
    expect(() => readX509Message(msg, "nope", Date.now())).toThrow(/no SVID with hint nope/);
    expect(() => readX509Message({ svids: [], federated_bundles: {} }, undefined, Date.now())).toThrow(/no SVID/);
    const mismatched = { ...msg, svids: [{ ...msg.svids[0]!, x509_svid_key: key(internal) }] };
    expect(() => readX509Message(mismatched, undefined, Date.now())).toThrow(/does not match/);
  });

  it("rotations swap the SVID for new handshakes while live sessions continue", async () => {
    rig = await start();
    await rig.logs.next("lifecycle", (r) => r.msg === "identity from the Workload API applied");
    const live = await openSession(rig.port(), rig.pki, alice);
    const next = await svid();
    rig.api.push({ svid: next, federated: { "spiffe://b.test": b } });
    const deadline = Date.now() + 3000;
    while ((await served(rig.port(), rig.pki)) !== fingerprintOf(next)) {
      if (Date.now() > deadline) throw new Error("the rotated SVID was never served");
      await new Promise((r) => setTimeout(r, 20));
    }
    live.s.write("!");
    await waitFor(() => live.got() === "ping!", 2000, "live session after rotation");
    expect(rig.logs.of("revoked")).toHaveLength(0);
  });

  it("a federated trust domain that disappears is dropped and its sessions revoked", async () => {
    rig = await start();
    await rig.logs.next("lifecycle", (r) => r.msg === "identity from the Workload API applied");
    const c = await openSession(rig.port(), rig.pki, carol);
    const al = await openSession(rig.port(), rig.pki, alice);
    rig.api.push({ svid: rig.api.state.svid, federated: {} });
    const revoked = await rig.logs.next("revoked");
    expect(revoked).toMatchObject({ peer_id: "spiffe://b.test/carol", svid_rule: "untrusted_domain" });
    await c.closed;
    const again = await dialTls(rig.port(), rig.pki, carol);
    await readAll(again);
    expect((await rig.logs.next("decision", (r) => r.peer_id === "spiffe://b.test/carol" && r.decision === "deny")).reasons).toEqual(["untrusted_domain"]);
    al.s.write("!");
    await waitFor(() => al.got() === "ping!", 2000, "a.test session untouched");
  });

  it("a call without the workload.spiffe.io header is refused with InvalidArgument", async () => {
    const dir = tempDir();
    const api = new TestWorkloadApi(join(dir, "agent.sock"), a, { svid: await svid(), federated: {} });
    await api.listen();
    const Client = loadWorkloadService();
    const client = new Client(`unix://${join(dir, "agent.sock")}`, grpc.credentials.createInsecure()) as unknown as {
      FetchX509SVID(req: object): grpc.ClientReadableStream<unknown>;
      close(): void;
    };
    const code = await new Promise((resolve) => client.FetchX509SVID({}).on("error", (e: grpc.ServiceError) => resolve(e.code)));
    expect(code).toBe(grpc.status.INVALID_ARGUMENT);
    client.close();
    api.close();
  });

  it("under load: 20 long-lived sessions and a stream of new handshakes survive 5 rotations intact", async () => {
    rig = await start();
    await rig.logs.next("lifecycle", (r) => r.msg === "identity from the Workload API applied");
    const sessions = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const s = await dialTls(rig!.port(), rig!.pki, alice);
        const sent = createHash("sha256");
        const got = createHash("sha256");
        let n = 0;
        s.on("data", (c: Buffer) => {
          got.update(c);
          n += c.length;
        });
        return { s, sent, got, bytes: () => n, total: 0 };
      }),
    );
    let handshakes = 0;
    let failures = 0;
    let stop = false;
    const churn = (async () => {
      while (!stop) {
        try {
          const s = await dialTls(rig.port(), rig.pki, alice);
          const echoed = readAll(s);
          s.end("hello");
          if ((await echoed).toString() === "hello") handshakes++;
          else failures++;
        } catch {
          failures++;
        }
      }
    })();
    for (let r = 0; r < 5; r++) {
      for (const x of sessions) {
        const chunk = randomBytes(4096);
        x.sent.update(chunk);
        x.total += chunk.length;
        x.s.write(chunk);
      }
      rig.api.push({ svid: await svid(), federated: { "spiffe://b.test": b } });
      await new Promise((res) => setTimeout(res, 150));
    }
    await waitFor(() => sessions.every((x) => x.bytes() === x.total), 5000, "all echoes back");
    stop = true;
    await churn;
    expect(sessions.map((x) => x.got.digest("hex"))).toEqual(sessions.map((x) => x.sent.digest("hex")));
    expect(failures).toBe(0);
    expect(handshakes).toBeGreaterThan(5);
    expect(rig.logs.of("session_end").filter((e) => e.end_reason !== "completed")).toHaveLength(0);
    expect(rig.logs.of("lifecycle").filter((r) => r.msg === "identity from the Workload API applied").length).toBeGreaterThanOrEqual(6);
    for (const x of sessions) x.s.destroy();
  }, 30_000);
});
