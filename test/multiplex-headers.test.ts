// A CONNECT's header list is bounded at 8,192 octets (RFC 9113 §6.5.2 counting) and 32 fields on every
// stream. Node applies SETTINGS_MAX_HEADER_LIST_SIZE only once the peer has acknowledged the SETTINGS,
// so the first streams of a connection, sent with the client's preface, and every stream of a peer that
// never acknowledges, are checked by parley itself: 431, never decided. Found by review.
import { connect as h2connect, type ClientHttp2Session, type IncomingHttpHeaders } from "node:http2";
import { connect, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { startHarness, waitFor, type Harness } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let agent: Issued;
let h: Harness;

beforeAll(async () => {
  pki = await makePki();
  agent = await pki.leaf(pki.a, "spiffe://a.test/agent");
  h = await startHarness(pki, {
    listenerExtra: "multiplex: { max_streams: 16 }",
    policies: "\n  main: { rules: [ { name: all, action: allow, match: [{ trust_domain: a.test }] } ] }\n",
  });
});
afterAll(() => h.close());

/** A client that lets itself send header lists of up to 1 MiB. */
function connectUnbounded(): ClientHttp2Session {
  const s = h2connect(`https://localhost:${h.port}`, { ca: pki.a.certPem, cert: agent.chainPem, key: agent.keyPem, maxSendHeaderBlockLength: 1 << 20 });
  s.on("error", () => {});
  return s;
}

/** A CONNECT with a 60,000-octet field: its response status, or `reset CODE`. */
function oversized(s: ClientHttp2Session): Promise<number | string> {
  const stream = s.request({ ":method": "CONNECT", ":authority": "echo.test:7", "x-pad": "a".repeat(60_000) }, { endStream: false });
  stream.on("error", () => {});
  return new Promise((resolve) => {
    stream.once("response", (hd: IncomingHttpHeaders) => resolve(Number(hd[":status"])));
    stream.once("close", () => resolve(`reset ${stream.rstCode}`));
  });
}

it("a CONNECT whose header list is far over 8,192 octets is never decided, even as a connection's first stream", async () => {
  const s = connectUnbounded();
  // Sent at once, with the preface: before the client has even read the server's SETTINGS.
  const status = await oversized(s);
  s.destroy();
  expect(status).toBe(431);
  expect(h.logs.of("decision")).toHaveLength(0);
});

it("the same header list on a later stream, after the SETTINGS exchange, is reset by the HTTP/2 layer", async () => {
  const s = connectUnbounded();
  await new Promise((resolve) => s.once("remoteSettings", resolve));
  await new Promise((resolve) => s.ping(resolve)); // our ACK of its SETTINGS has reached it
  const before = h.logs.of("decision").length;
  const status = await oversized(s);
  s.destroy();
  expect(status).toBe("reset 11");
  expect(h.logs.of("decision")).toHaveLength(before);
});

/** An HPACK integer with an n-bit prefix (RFC 7541 §5.1). */
function int(v: number, n: number, first = 0): number[] {
  const max = (1 << n) - 1;
  if (v < max) return [first | v];
  const out = [first | max];
  for (v -= max; v >= 128; v >>= 7) out.push((v & 127) | 128);
  return [...out, v];
}
/** A literal field without indexing, new name, no Huffman (RFC 7541 §6.2.2). */
const literal = (name: string, value: string) => Buffer.from([0, ...int(name.length, 7), ...Buffer.from(name), ...int(value.length, 7), ...Buffer.from(value)]);
function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}
const connectRequest = (stream: number) =>
  frame(
    0x1,
    0x4 /* END_HEADERS */,
    stream,
    Buffer.concat([literal(":method", "CONNECT"), literal(":authority", "echo.test:7"), ...[1, 2].map((i) => literal(`x-pad-${i}`, "a".repeat(6000)))]),
  );

it("every stream of a peer that never acknowledges the SETTINGS is bounded too: 12 KB header lists, answered, never decided", async () => {
  const s: TLSSocket = connect({
    host: "127.0.0.1",
    port: h.port,
    servername: "localhost",
    ca: pki.a.certPem,
    cert: agent.chainPem,
    key: agent.keyPem,
    ALPNProtocols: ["h2"],
  });
  await new Promise((resolve) => s.once("secureConnect", resolve));
  const frames: { type: number; stream: number }[] = [];
  let buf = Buffer.alloc(0);
  s.on("data", (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
      frames.push({ type: buf[3]!, stream: buf.readUInt32BE(5) & 0x7fffffff });
      buf = buf.subarray(9 + buf.readUIntBE(0, 3));
    }
  });
  s.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), frame(0x4, 0, 0, Buffer.alloc(0))]));
  await waitFor(() => frames.some((f) => f.type === 0x4)); // the server's SETTINGS: read, never acknowledged
  for (const id of [1, 3, 5]) {
    s.write(connectRequest(id));
    await waitFor(() => frames.some((f) => f.stream === id && (f.type === 0x1 || f.type === 0x3)));
  }
  s.destroy();
  expect(h.logs.of("decision")).toHaveLength(0);
});
