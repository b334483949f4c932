// PROXY protocol v2 to the workload, on real sockets: a parser written here from HAProxy's
// proxy-protocol.txt (§2.2) checks every byte parley writes; HAProxy (`accept-proxy`) and nginx
// (stream `listen … proxy_protocol`) accept the header as independent receivers; a denied peer never
// gets an upstream connection; the admin lookup answers only while the session lives.
import { spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync, randomBytes, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect as tcpConnect, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { operations, type Operations } from "../src/app/operations.js";
import type { Issued } from "../src/certs/issue.js";
import { loadBootstrap, loadConfig } from "../src/config/load.js";
import { ConfigError } from "../src/config/source.js";
import { startControlPlane } from "../src/control/server/plane.js";
import { connect as negotiate } from "../src/negotiation/client.js";
import { encodeProxyV2, ProxyHeaderError, type CallerInfo, type ProxyHeader } from "../src/proxy/proxyv2.js";
import { startEcho } from "../src/demo/echo.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { freePort, MemoryLog, readAll, startControlled, tempDir, waitFor, writeFiles } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

// ---------- a receiver written from the specification, independent of src/proxy/proxyv2.ts ----------

interface Tlv {
  type: number;
  value: Buffer;
}
interface Parsed {
  total: number;
  family: number;
  src: Buffer;
  dst: Buffer;
  srcPort: number;
  dstPort: number;
  tlvs: Tlv[];
}

/** §2.2: 12-byte signature, version 2 + PROXY, TCP4/TCP6, length, addresses, TLVs to the exact end. */
function parse(b: Buffer): Parsed {
  const sig = [0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a];
  sig.forEach((v, i) => expect(b[i], `signature byte ${i}`).toBe(v));
  expect(b[12], "version 2, command PROXY").toBe(0x21);
  const family = b[13]!;
  expect([0x11, 0x21], "TCP over IPv4 or IPv6").toContain(family);
  const len = (b[14]! << 8) | b[15]!;
  const total = 16 + len;
  expect(b.length).toBeGreaterThanOrEqual(total);
  const alen = family === 0x11 ? 4 : 16;
  let at = 16;
  const src = b.subarray(at, (at += alen));
  const dst = b.subarray(at, (at += alen));
  const srcPort = (b[at]! << 8) | b[at + 1]!;
  const dstPort = (b[at + 2]! << 8) | b[at + 3]!;
  at += 4;
  return { total, family, src, dst, srcPort, dstPort, tlvs: tlvWalk(b.subarray(at, total)) };
}

/** §2.2 pp2_tlv: type, length_hi, length_lo, value; the walk must end exactly at the end. */
function tlvWalk(b: Buffer): Tlv[] {
  const out: Tlv[] = [];
  let at = 0;
  while (at < b.length) {
    expect(at + 3, "TLV head inside the block").toBeLessThanOrEqual(b.length);
    const l = b[at + 1]! * 256 + b[at + 2]!;
    expect(at + 3 + l, "TLV value inside the block").toBeLessThanOrEqual(b.length);
    out.push({ type: b[at]!, value: b.subarray(at + 3, at + 3 + l) });
    at += 3 + l;
  }
  expect(at).toBe(b.length);
  return out;
}

/** §2.2.6 pp2_tlv_ssl: client (1 byte), verify (4 bytes), sub-TLVs. */
function ssl(v: Buffer): { client: number; verify: number; subs: Tlv[] } {
  return { client: v[0]!, verify: ((v[1]! << 24) | (v[2]! << 16) | (v[3]! << 8) | v[4]!) >>> 0, subs: tlvWalk(v.subarray(5)) };
}

/** RFC 4960 Appendix B CRC32c, bit by bit (reflected polynomial 0x82F63B78). */
function crc32cBitwise(b: Buffer): number {
  let c = 0xffffffff;
  for (const byte of b) {
    c ^= byte;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** §2.2.3: the receiver zeroes the checksum field, recomputes over the whole header, compares. */
function crcHolds(header: Buffer, tlvs: Tlv[]): boolean {
  const crc = tlvs.find((t) => t.type === 0x03)!;
  expect(crc.value.length).toBe(4);
  const copy = Buffer.from(header);
  const off = crc.value.byteOffset - header.byteOffset;
  copy.fill(0, off, off + 4);
  return crc32cBitwise(copy) === crc.value.readUInt32BE(0);
}

const ascii = (s: string) => Buffer.from(s, "ascii");
const ipv4 = (a: string) => Buffer.from(a.split(".").map(Number));

// ---------- a workload that records what it receives ----------

interface Received {
  socket: Socket;
  chunks: Buffer[];
  all(): Buffer;
}

async function capture(host: string): Promise<{ server: Server; port: number; conns: Received[] }> {
  const conns: Received[] = [];
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    const r: Received = { socket, chunks: [], all: () => Buffer.concat(r.chunks) };
    conns.push(r);
    socket.on("data", (c: Buffer) => r.chunks.push(c));
    socket.on("error", () => {});
    socket.once("end", () => socket.end());
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return { server, port: (server.address() as { port: number }).port, conns };
}

// ---------- a sidecar in front of it, with its admin server ----------

let pki: TestPki;
let alice: Issued;
let banned: Issued;
let grantKeyFile: string;

interface Rig {
  port: number;
  admin: number;
  logs: MemoryLog;
  sidecar: Sidecar;
  /** The own SVID's files (a rotation rewrites them, then reloads). */
  certFile: string;
  keyFile: string;
  close(): Promise<void>;
}

const bracket = (h: string) => (h.includes(":") ? `[${h}]` : h);

async function rig(o: { host: string; upstream: string; proxyProtocol?: string; negotiation?: boolean }): Promise<Rig> {
  const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem });
  const file = join(f.dir, "parley.yaml");
  writeFileSync(
    file,
    `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains:
  a.test: { bundle: ${f["a.pem"]} }
listeners:
  - name: main
    listen: "${bracket(o.host)}:0"
    upstream: "${o.upstream}"
    policy: main
    connect_timeout: 2s
${o.proxyProtocol ? `    proxy_protocol: ${o.proxyProtocol}\n` : ""}roles:
  reader: [{ trust_domain: a.test }]
policies:
  main:
    rules:
      - { name: no-banned, action: deny, match: [{ id: spiffe://a.test/banned }] }
      - { name: domain-a, action: allow, match: [{ trust_domain: a.test }] }
${o.negotiation ? `negotiation: { grant_key: ${grantKeyFile}, grant_ttl: 1h }\n` : ""}`,
  );
  const config = loadConfig(file);
  const logs = new MemoryLog();
  const ops: Operations = operations(config.log, { listen: "127.0.0.1:0", write: false }, logs.destination);
  const sidecar = new Sidecar(config, { log: ops.log });
  await sidecar.start();
  const admin = (await ops.serveAdmin(sidecar))!.port;
  return {
    port: sidecar.addresses()["main"]!.port,
    admin,
    logs,
    sidecar,
    certFile: f["cert.pem"]!,
    keyFile: f["key.pem"]!,
    async close() {
      await sidecar.stop(100);
      await ops.close();
    },
  };
}

function dial(host: string, port: number, creds: Issued, extra: Record<string, unknown> = {}): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host, port, servername: "localhost", ca: pki.a.certPem, cert: creds.chainPem, key: creds.keyPem, ...extra });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

async function lookup(admin: number, port: number): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`http://127.0.0.1:${admin}/connections/${port}`);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/alice");
  banned = await pki.leaf(pki.a, "spiffe://a.test/banned");
  const k = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  grantKeyFile = writeFiles({ "grant.pem": k.privateKey.export({ type: "pkcs8", format: "pem" }) as string })["grant.pem"]!;
});

/** What the spec's SSL TLV must hold for parley's own P-256 certificate and the client's session. */
function expectSsl(tlv: Tlv, client: TLSSocket, cn: string | undefined, verified = true) {
  const own = new X509Certificate(pki.server.certPem);
  expect(own.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
  const s = ssl(tlv.value);
  expect(s.client).toBe(0x01 | 0x02 | 0x04); // PP2_CLIENT_SSL | CERT_CONN | CERT_SESS
  expect(s.verify).toBe(verified ? 0 : 1);
  const expected: Tlv[] = [{ type: 0x21, value: ascii(client.getProtocol()!) }];
  if (cn !== undefined) expected.push({ type: 0x22, value: Buffer.from(cn, "utf8") });
  expected.push(
    { type: 0x23, value: ascii(client.getCipher().name) },
    { type: 0x24, value: ascii("ecdsa-with-SHA256") },
    { type: 0x25, value: ascii("EC256") },
  );
  expect(s.subs.map((t) => [t.type, t.value.toString("latin1")])).toEqual(expected.map((t) => [t.type, t.value.toString("latin1")]));
}

describe("the header, byte by byte", () => {
  let cap: Awaited<ReturnType<typeof capture>>;
  let r: Rig;
  beforeAll(async () => {
    cap = await capture("127.0.0.1");
    r = await rig({ host: "127.0.0.1", upstream: `127.0.0.1:${cap.port}`, proxyProtocol: "{ version: v2, crc32c: true }", negotiation: true });
  });
  afterAll(async () => {
    await r.close();
    cap.server.close();
  });

  it("TCP4: first, in one read, before the client's early bytes; every TLV as the spec says; CRC32C holds", async () => {
    const before = cap.conns.length;
    const s = await dial("127.0.0.1", r.port, alice, { ALPNProtocols: ["http/1.1"] });
    s.write("early"); // sent before the session is even decided
    const got = readAll(s);
    await waitFor(() => cap.conns[before]?.all().includes("early"), 3000, "bytes at the workload");
    const w = cap.conns[before]!;
    const p = parse(w.chunks[0]!);
    expect(w.chunks[0]!.length, "the whole header in the first read").toBeGreaterThanOrEqual(p.total);
    expect(w.all().subarray(p.total).toString()).toBe("early");
    expect(p.family).toBe(0x11);
    expect(p.src).toEqual(ipv4("127.0.0.1"));
    expect(p.dst).toEqual(ipv4("127.0.0.1"));
    expect(p.srcPort).toBe(s.localPort);
    expect(p.dstPort).toBe(r.port);
    const d = await r.logs.next("decision", (x) => x.source === `127.0.0.1:${s.localPort}`);
    expect(p.tlvs.map((t) => t.type)).toEqual([0x01, 0x02, 0x05, 0x20, 0xe0, 0x03]);
    expect(p.tlvs[0]!.value.toString()).toBe("http/1.1");
    expect(p.tlvs[1]!.value.toString()).toBe("localhost");
    expect(p.tlvs[2]!.value.toString()).toBe(d.session_id);
    expectSsl(p.tlvs[3]!, s, new X509Certificate(alice.certPem).subject.replace(/^CN=/, "")); // the test CA puts the URI there
    expect(p.tlvs[4]!.value.toString()).toBe("spiffe://a.test/alice");
    expect(crcHolds(w.chunks[0]!.subarray(0, p.total), p.tlvs)).toBe(true);
    // A flipped bit anywhere in the header breaks it (the parser's check can fail).
    const bad = Buffer.from(w.chunks[0]!.subarray(0, p.total));
    bad[20]! ^= 1;
    expect(
      crcHolds(
        bad,
        p.tlvs.map((t) => ({
          type: t.type,
          value: bad.subarray(t.value.byteOffset - w.chunks[0]!.byteOffset, t.value.byteOffset - w.chunks[0]!.byteOffset + t.value.length),
        })),
      ),
    ).toBe(false);
    s.end();
    await got;
    // The header is parley's, not the client's: it counts toward neither bytes_to_upstream nor the budget.
    const e = await r.logs.next("session_end", (x) => x.session_id === d.session_id);
    expect(e.bytes_to_upstream).toBe(5);
  });

  it("a negotiated session adds the grant: id, roles, expiry", async () => {
    const before = cap.conns.length;
    const { socket, grant } = await negotiate({
      host: "127.0.0.1",
      port: r.port,
      cert: alice.chainPem,
      key: alice.keyPem,
      ca: pki.a.certPem,
      roles: ["reader"],
    });
    socket.write("after the grant");
    await waitFor(() => cap.conns[before]?.all().includes("after the grant"), 3000, "bytes at the workload");
    const w = cap.conns[before]!;
    const p = parse(w.chunks[0]!);
    expect(w.all().subarray(p.total).toString()).toBe("after the grant");
    expect(p.tlvs.map((t) => t.type)).toEqual([0x01, 0x02, 0x05, 0x20, 0xe0, 0xe1, 0xe2, 0xe3, 0x03]);
    expect(p.tlvs[0]!.value.toString()).toBe("parley/1");
    expect(p.tlvs[5]!.value.toString()).toBe(grant.grant_id);
    expect(p.tlvs[6]!.value).toEqual(Buffer.concat([Buffer.from([6]), ascii("reader")]));
    expect(p.tlvs[7]!.value.toString()).toBe(new Date(Date.parse(grant.expires_at)).toISOString());
    expect(crcHolds(w.chunks[0]!.subarray(0, p.total), p.tlvs)).toBe(true);
    socket.destroy();
  });

  it("a denied peer never gets an upstream connection, so never a header", async () => {
    const before = cap.conns.length;
    const s = await dial("127.0.0.1", r.port, banned);
    const source = `127.0.0.1:${s.localPort}`;
    const got = readAll(s);
    s.write("must never arrive");
    expect((await got).length).toBe(0);
    await r.logs.next("decision", (x) => x.source === source && x.decision === "deny");
    expect(cap.conns.length).toBe(before);
  });

  it("the lookup: the workload's peer port → who called, while the session lives; 404 once it ended", async () => {
    const before = cap.conns.length;
    const s = await dial("127.0.0.1", r.port, alice);
    const got = readAll(s);
    s.write("x");
    await waitFor(() => cap.conns[before]?.all().includes("x"), 3000, "bytes at the workload");
    const port = cap.conns[before]!.socket.remotePort!;
    const live = await lookup(r.admin, port);
    expect(live.status).toBe(200);
    const d = await r.logs.next("decision", (x) => x.source === `127.0.0.1:${s.localPort}`);
    expect(live.body).toMatchObject({
      session_id: d.session_id,
      listener: "main",
      peer_id: "spiffe://a.test/alice",
      source: `127.0.0.1:${s.localPort}`,
      upstream: `127.0.0.1:${cap.port}`,
      upstream_local: `127.0.0.1:${port}`,
      grant: null,
    });
    expect(typeof live.body.expires_at).toBe("string"); // the certificate's end bounds the session
    s.end();
    await got;
    await r.logs.next("session_end", (x) => x.session_id === d.session_id);
    const ended = await lookup(r.admin, port);
    expect(ended.status).toBe(404);
    expect(ended.body.error).toMatch(/no live session/);
    expect((await lookup(r.admin, 0)).status).toBe(400);
  });
});

describe("TCP6, the longest SPIFFE ID, the peer certificate", () => {
  it("one read, under 64 KiB, every byte as the spec says", async () => {
    const id = "spiffe://a.test/" + "x".repeat(2048 - "spiffe://a.test/".length);
    expect(Buffer.byteLength(id)).toBe(2048);
    const longId = await pki.leaf(pki.a, id, { name: "long" });
    const cap = await capture("::1");
    const r = await rig({ host: "::1", upstream: `[::1]:${cap.port}`, proxyProtocol: "{ version: v2, peer_certificate: true }" });
    try {
      const s = await dial("::1", r.port, longId);
      s.write("six");
      await waitFor(() => cap.conns[0]?.all().includes("six"), 3000, "bytes at the workload");
      const w = cap.conns[0]!;
      const p = parse(w.chunks[0]!);
      expect(w.chunks[0]!.length).toBeGreaterThanOrEqual(p.total);
      expect(p.total).toBeLessThan(65536);
      expect(p.family).toBe(0x21);
      expect(p.src).toEqual(Buffer.from("00000000000000000000000000000001", "hex"));
      expect(p.dst).toEqual(Buffer.from("00000000000000000000000000000001", "hex"));
      expect([p.srcPort, p.dstPort]).toEqual([s.localPort, r.port]);
      expect(p.tlvs.map((t) => t.type)).toEqual([0x02, 0x05, 0x20, 0xe0, 0xe4]);
      expectSsl(p.tlvs[2]!, s, "long");
      expect(p.tlvs[3]!.value.toString()).toBe(id);
      expect(p.tlvs[4]!.value).toEqual(new X509Certificate(longId.certPem).raw);
      s.destroy();
    } finally {
      await r.close();
      cap.server.close();
    }
  });

  it("off by default: the workload gets exactly the client's bytes", async () => {
    const cap = await capture("127.0.0.1");
    const r = await rig({ host: "127.0.0.1", upstream: `127.0.0.1:${cap.port}` });
    try {
      const s = await dial("127.0.0.1", r.port, alice);
      const got = readAll(s);
      s.end("plain");
      await got;
      await waitFor(() => cap.conns[0]?.socket.readableEnded, 3000, "workload end");
      expect(cap.conns[0]!.all().toString()).toBe("plain");
    } finally {
      await r.close();
      cap.server.close();
    }
  });
});

describe("the own SVID rotated", () => {
  it("the SSL TLV tells the certificate presented after the rotation, not the one read at start", async () => {
    const cap = await capture("127.0.0.1");
    const r = await rig({ host: "127.0.0.1", upstream: `127.0.0.1:${cap.port}`, proxyProtocol: "v2" });
    /** One session: the serial of the certificate the client was shown, and the header's SIG_ALG and KEY_ALG. */
    const presented = async () => {
      const before = cap.conns.length;
      const s = await dial("127.0.0.1", r.port, alice);
      s.write("x");
      await waitFor(() => cap.conns[before]?.all().includes("x"), 3000, "bytes at the workload");
      const p = parse(cap.conns[before]!.chunks[0]!);
      const subs = ssl(p.tlvs.find((t) => t.type === 0x20)!.value).subs;
      const serial = s.getPeerX509Certificate()!.serialNumber;
      s.destroy();
      return { serial, sigAlg: subs.find((t) => t.type === 0x24)?.value.toString(), keyAlg: subs.find((t) => t.type === 0x25)?.value.toString() };
    };
    try {
      const serial = (i: Issued) => new X509Certificate(i.certPem).serialNumber;
      expect(await presented()).toEqual({ serial: serial(pki.server), sigAlg: "ecdsa-with-SHA256", keyAlg: "EC256" });
      const rotated = await pki.a.leaf({ uris: ["spiffe://a.test/sidecar"], dnsNames: ["localhost"], keyType: "rsa-2048" });
      writeFileSync(r.certFile, rotated.chainPem);
      writeFileSync(r.keyFile, rotated.keyPem);
      expect(await r.sidecar.reload()).toBe("applied");
      expect(await presented()).toEqual({ serial: serial(rotated), sigAlg: "ecdsa-with-SHA256", keyAlg: "RSA2048" });
    } finally {
      await r.close();
      cap.server.close();
    }
  });
});

describe("the encoder against the parser", () => {
  const info: CallerInfo = {
    tls: { version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256", verified: true, certOnConnection: true, certInSession: true },
    uniqueId: "00",
  };
  const base: ProxyHeader = { source: { address: "10.0.0.1", port: 1 }, destination: { address: "10.0.0.2", port: 2 }, info };

  it("random facts round-trip; CRC32C always holds", () => {
    const hex = (n: number) => randomBytes(n).toString("hex");
    for (let i = 0; i < 200; i++) {
      const v6 = i % 2 === 1;
      const h: ProxyHeader = {
        ...base,
        source: { address: v6 ? `2001:db8::${hex(2)}` : `10.${i % 256}.0.1`, port: (i * 7919) % 65536 },
        destination: { address: v6 ? `fe80::${hex(2)}:1` : "192.168.1.1", port: 65535 - i },
        info: {
          tls: { ...info.tls, verified: i % 3 !== 0, ...(i % 4 === 0 ? {} : { cn: hex(i % 40) }) },
          uniqueId: hex(8),
          ...(i % 5 === 0 ? {} : { spiffeId: `spiffe://t.test/${hex(1 + (i % 900))}` }),
          ...(i % 3 === 0 ? { grant: { id: hex(8), roles: ["r", hex(3)], expiresAt: 1_700_000_000_000 + i } } : {}),
        },
      };
      const hi = h.info!;
      const b = encodeProxyV2(h, { crc32c: i % 2 === 0 });
      const p = parse(b);
      expect(p.total).toBe(b.length);
      expect(p.family).toBe(v6 ? 0x21 : 0x11);
      expect([p.srcPort, p.dstPort]).toEqual([h.source.port, h.destination.port]);
      if (!v6) expect(p.src).toEqual(ipv4(h.source.address));
      else expect(p.src.subarray(0, 4)).toEqual(Buffer.from([0x20, 0x01, 0x0d, 0xb8]));
      const byType = new Map(p.tlvs.map((t) => [t.type, t.value]));
      expect(byType.get(0x05)!.toString()).toBe(hi.uniqueId);
      expect(byType.get(0xe0)?.toString()).toBe(hi.spiffeId);
      expect(ssl(byType.get(0x20)!).verify).toBe(hi.tls.verified ? 0 : 1);
      if (hi.tls.cn !== undefined)
        expect(
          ssl(byType.get(0x20)!)
            .subs.find((t) => t.type === 0x22)!
            .value.toString(),
        ).toBe(hi.tls.cn);
      if (hi.grant) expect(byType.get(0xe1)!.toString()).toBe(hi.grant.id);
      if (i % 2 === 0) expect(crcHolds(b, p.tlvs)).toBe(true);
      else expect(byType.has(0x03)).toBe(false);
    }
  });

  it("addresses: IPv6 text forms, IPv4-mapped pairs sent as TCP4", () => {
    const p = parse(encodeProxyV2({ ...base, source: { address: "2001:db8::1.2.3.4", port: 1 }, destination: { address: "::", port: 2 } }, { crc32c: false }));
    expect(p.src).toEqual(Buffer.from("20010db8000000000000000001020304", "hex"));
    expect(p.dst).toEqual(Buffer.alloc(16));
    const m = parse(
      encodeProxyV2({ ...base, source: { address: "::ffff:10.1.2.3", port: 1 }, destination: { address: "::FFFF:10.9.9.9", port: 2 } }, { crc32c: false }),
    );
    expect(m.family).toBe(0x11);
    expect([m.src, m.dst]).toEqual([ipv4("10.1.2.3"), ipv4("10.9.9.9")]);
    const bare = encodeProxyV2({ source: base.source, destination: base.destination }, { crc32c: true });
    const b = parse(bare);
    expect(b.tlvs.map((t) => t.type)).toEqual([0x03]);
    expect(bare.length).toBe(16 + 12 + 7);
    expect(crcHolds(bare, b.tlvs)).toBe(true);
  });

  it("refuses what the format cannot carry: over 64 KiB, a unique id over 128 bytes, mixed families", () => {
    expect(() => encodeProxyV2({ ...base, info: { ...info, peerCertificate: Buffer.alloc(65_530) } }, { crc32c: false })).toThrow(ProxyHeaderError);
    expect(() => encodeProxyV2({ ...base, info: { ...info, uniqueId: "x".repeat(129) } }, { crc32c: false })).toThrow(/unique id/);
    expect(() => encodeProxyV2({ ...base, destination: { address: "::1", port: 2 } }, { crc32c: false })).toThrow(/TCP4 or TCP6/);
  });

  it("the bitwise CRC32c of the test itself is right (RFC 3720 B.4 check value)", () => {
    expect(crc32cBitwise(ascii("123456789"))).toBe(0xe3069283);
  });
});

// ---------- independent receivers: HAProxy and nginx, each in front of the echo workload ----------

/** The binary, where Debian puts it; .ci/run installs it when missing. */
function binary(name: string): string {
  const found = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map((d) => join(d, name)).find((p) => existsSync(p));
  if (!found) throw new Error(`${name} is not installed: apt-get install -y ${name} (as .ci/run does)`);
  return found;
}

interface Receiver {
  port: number;
  /** Lines it has logged so far. */
  lines(): string[];
  stop(): Promise<void>;
}

/** Starts `cmd` and waits until `port` accepts TCP connections. */
async function run(cmd: string, args: string[], port: number, host: string, lines: () => string[]): Promise<Receiver & { child: ChildProcess }> {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const up = () =>
    new Promise<boolean>((resolve) => {
      const c = tcpConnect({ port, host }, () => {
        c.destroy();
        resolve(true);
      });
      c.once("error", () => resolve(false));
    });
  const deadline = Date.now() + 10_000;
  while (!(await up())) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited ${child.exitCode}: ${err}`);
    if (Date.now() > deadline) throw new Error(`${cmd} did not listen on ${port}: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    port,
    lines,
    async stop() {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

async function haproxy(host: string, echoPort: number): Promise<Receiver> {
  const dir = tempDir();
  const port = await freePort();
  const cfg = join(dir, "haproxy.cfg");
  writeFileSync(
    cfg,
    `global
    log stdout format raw local0 info
    nbthread 1
defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind ${host}:${port} accept-proxy
    log-format "PP2 src=%[src]:%[src_port] dst=%[dst]:%[dst_port] id=%[fc_pp_unique_id] authority=%[fc_pp_authority]"
    default_backend be
backend be
    server echo 127.0.0.1:${echoPort}
`,
  );
  let out = "";
  const r = await run(binary("haproxy"), ["-db", "-f", cfg], port, host, () => out.split("\n"));
  r.child.stdout!.on("data", (c: Buffer) => (out += c.toString()));
  return r;
}

async function nginx(echoPort: number): Promise<Receiver> {
  const dir = tempDir();
  const port = await freePort();
  const module = "/usr/lib/nginx/modules/ngx_stream_module.so";
  const conf = join(dir, "nginx.conf");
  const access = join(dir, "access.log");
  writeFileSync(access, "");
  writeFileSync(
    conf,
    `${existsSync(module) ? `load_module ${module};` : ""}
daemon off;
master_process off;
pid ${join(dir, "nginx.pid")};
error_log ${join(dir, "error.log")} info;
events { worker_connections 64; }
stream {
  log_format pp 'PP2 src=$proxy_protocol_addr:$proxy_protocol_port dst=$proxy_protocol_server_addr:$proxy_protocol_server_port';
  access_log ${access} pp;
  server {
    listen 127.0.0.1:${port} proxy_protocol;
    proxy_half_close on;
    proxy_pass 127.0.0.1:${echoPort};
  }
}
`,
  );
  return run(binary("nginx"), ["-p", dir, "-e", join(dir, "error.log"), "-c", conf], port, "127.0.0.1", () => readFileSync(access, "utf8").split("\n"));
}

/** A session through parley to `receiver`: the echo answers, and the receiver logs the real source. */
async function throughReceiver(r: Rig, host: string, receiver: Receiver, creds: Issued): Promise<{ line: string; source: string; sessionId: string }> {
  const s = await dial(host, r.port, creds);
  const [address, port] = [s.localAddress!, s.localPort!];
  const source = `${address}:${port}`;
  const got = readAll(s);
  s.end("ping through the receiver");
  expect((await got).toString()).toBe("ping through the receiver");
  const d = await r.logs.next("decision", (x) => x.source === source);
  const line = await waitFor(() => receiver.lines().find((l) => l.includes(`src=${source} `)), 5000, `a log line for ${source}`).catch((e: unknown) => {
    throw new Error(`${(e as Error).message}; the receiver logged: ${receiver.lines().join(" | ")}`);
  });
  return { line, source, sessionId: d.session_id as string };
}

describe("HAProxy (accept-proxy) in front of the workload", () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  beforeAll(async () => {
    echo = await startEcho("127.0.0.1", 0);
  });
  afterAll(() => echo.close());

  it("TCP4, CRC32C (HAProxy checks it), the peer certificate and the longest ID: accepted, real source logged", async () => {
    const hp = await haproxy("127.0.0.1", (echo.server.address() as { port: number }).port);
    const r = await rig({ host: "127.0.0.1", upstream: `127.0.0.1:${hp.port}`, proxyProtocol: "{ version: v2, crc32c: true, peer_certificate: true }" });
    try {
      const longId = await pki.leaf(pki.a, "spiffe://a.test/" + "y".repeat(2032), { name: "long" });
      for (const creds of [alice, longId]) {
        const { line, sessionId } = await throughReceiver(r, "127.0.0.1", hp, creds);
        expect(line).toContain(`dst=127.0.0.1:${r.port} `);
        expect(line).toContain(`id=${sessionId} authority=localhost`);
      }
      // HAProxy does check the checksum: one bit off in it and the connection is dropped.
      const send = (b: Buffer) =>
        new Promise<string>((resolve) => {
          const c = tcpConnect({ port: hp.port, host: "127.0.0.1" }, () => c.end(Buffer.concat([b, ascii("raw")])));
          let got = "";
          c.on("data", (d: Buffer) => (got += d.toString()));
          c.on("error", () => {});
          c.on("close", () => resolve(got));
        });
      const info: CallerInfo = { tls: { version: "TLSv1.3", cipher: "X", verified: true, certOnConnection: true, certInSession: true }, uniqueId: "u" };
      const good = encodeProxyV2({ source: { address: "10.9.8.7", port: 4242 }, destination: { address: "10.0.0.1", port: 443 }, info }, { crc32c: true });
      expect(await send(good)).toBe("raw");
      const bad = Buffer.from(good);
      bad[bad.length - 1]! ^= 1;
      expect(await send(bad)).toBe("");
    } finally {
      await r.close();
      await hp.stop();
    }
  });

  it("TCP6: accepted, real source logged", async () => {
    const hp = await haproxy("::1", (echo.server.address() as { port: number }).port);
    const r = await rig({ host: "::1", upstream: `[::1]:${hp.port}`, proxyProtocol: "v2" });
    try {
      const { line } = await throughReceiver(r, "::1", hp, alice);
      expect(line).toContain(`dst=::1:${r.port} `);
    } finally {
      await r.close();
      await hp.stop();
    }
  });
});

describe("nginx (stream, listen … proxy_protocol) in front of the workload", () => {
  // Debian 12's nginx 1.22 refuses a v2 header over 107 bytes ("header is too large"): the address
  // block (and CRC32C) only, as `tlvs: false` sends it; the lookup tells the rest.
  it("accepts the address-only header and logs the client's real source and the listener's address", async () => {
    const echo = await startEcho("127.0.0.1", 0);
    const ng = await nginx((echo.server.address() as { port: number }).port);
    const r = await rig({ host: "127.0.0.1", upstream: `127.0.0.1:${ng.port}`, proxyProtocol: "{ version: v2, tlvs: false, crc32c: true }" });
    try {
      const { line } = await throughReceiver(r, "127.0.0.1", ng, alice);
      expect(line.trim()).toMatch(new RegExp(`dst=127\\.0\\.0\\.1:${r.port}$`));
    } finally {
      await r.close();
      await ng.stop();
      await echo.close();
    }
  });
});

describe("configuration", () => {
  const attempt = (pp: string) => {
    const f = writeFiles({ "cert.pem": pki.server.chainPem, "key.pem": pki.server.keyPem, "a.pem": pki.a.certPem });
    const file = join(f.dir, "parley.yaml");
    writeFileSync(
      file,
      `identity: { cert: cert.pem, key: key.pem }
trust_domains: { a.test: { bundle: a.pem } }
listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:1", policy: main, proxy_protocol: ${pp} }
policies: { main: { rules: [] } }
`,
    );
    try {
      return loadConfig(file).listeners[0]!.proxyProtocol;
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as ConfigError).issues.map((i) => `${i.line}: ${i.path}: ${i.message}`).join("; ");
    }
  };

  it("v2 or an object; anything else is refused with the line and what is wrong", () => {
    expect(attempt("v2")).toEqual({ version: "v2", tlvs: true, crc32c: false, peerCertificate: false });
    expect(attempt("{ version: v2, crc32c: true }")).toEqual({ version: "v2", tlvs: true, crc32c: true, peerCertificate: false });
    expect(attempt("v1")).toBe("4: listeners[0].proxy_protocol: expected v2 or { version: v2, tlvs, crc32c, peer_certificate }");
    expect(attempt("{ version: v2, checksum: true }")).toBe("4: listeners[0].proxy_protocol.checksum: unknown key");
    expect(attempt("{ version: v2, tlvs: false, peer_certificate: true }")).toMatch(/peer_certificate is a TLV: it needs tlvs: true/);
  });

  it("pushed by the control plane over gRPC: the listener sends the header as pushed", async () => {
    const dir = tempDir();
    const cpDir = join(dir, "cp");
    mkdirSync(join(cpDir, "nodes"), { recursive: true });
    writeFileSync(join(cpDir, "a.pem"), pki.a.certPem);
    const cap = await capture("127.0.0.1");
    writeFileSync(
      join(cpDir, "shared.yaml"),
      `trust_domains: { a.test: { bundle: a.pem } }
policies: { main: { rules: [{ name: a, action: allow, match: [{ trust_domain: a.test }] }] } }
`,
    );
    writeFileSync(
      join(cpDir, "nodes", "node-a.yaml"),
      `listeners:
  - { name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:${cap.port}", policy: main, proxy_protocol: { version: v2, crc32c: true, peer_certificate: true } }
`,
    );
    const cp = await startControlPlane({ dir: cpDir, listen: "127.0.0.1:0", log: pino({ level: "silent" }), settleMs: 50 });
    writeFileSync(join(dir, "cert.pem"), pki.server.chainPem);
    writeFileSync(join(dir, "key.pem"), pki.server.keyPem);
    writeFileSync(
      join(dir, "bootstrap.yaml"),
      `identity: { cert: cert.pem, key: key.pem }\ncontrol_plane: { address: "127.0.0.1:${cp.port}", node_id: node-a }\n`,
    );
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(join(dir, "bootstrap.yaml")), logs);
    try {
      await logs.next("config_applied").catch((e: unknown) => {
        throw new Error(`${(e as Error).message}: ${JSON.stringify(logs.records.slice(-3))}`);
      });
      const s = await dial("127.0.0.1", agent.sidecar.addresses()["main"]!.port, alice);
      s.write("pushed");
      await waitFor(() => cap.conns[0]?.all().includes("pushed"), 3000, "bytes at the workload");
      const p = parse(cap.conns[0]!.chunks[0]!);
      expect(p.tlvs.map((t) => t.type)).toEqual([0x02, 0x05, 0x20, 0xe0, 0xe4, 0x03]);
      expect(p.tlvs[4]!.value).toEqual(new X509Certificate(alice.certPem).raw);
      expect(crcHolds(cap.conns[0]!.chunks[0]!.subarray(0, p.total), p.tlvs)).toBe(true);
      s.destroy();
    } finally {
      await agent.stop(100);
      await cp.close();
      cap.server.close();
    }
  });
});
