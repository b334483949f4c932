import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { connect, createServer, type Server, type TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { peerChain, sessionPeerCertificate } from "../src/proxy/inbound/peerchain.js";
import { derFromPem } from "../src/spiffe/x509cert.js";

// What the server side of a real mTLS handshake sees: the peer certificate read from the encoded
// session must be, byte for byte, the leaf the client presented.
let ca: CertificateAuthority;
let serverCert: Issued;
let clientCert: Issued;
const seen: { session: Buffer; peer: Buffer; reused: boolean; chain: Buffer[] }[] = [];
let port = 0;
let server: Server;

beforeAll(async () => {
  ca = await CertificateAuthority.root({ trustDomain: "a.test" });
  serverCert = await ca.leaf({ uris: ["spiffe://a.test/server"], dnsNames: ["localhost"] });
  clientCert = await ca.leaf({ uris: ["spiffe://a.test/client"] });
  server = createServer({ cert: serverCert.chainPem, key: serverCert.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: true });
  server.on("secureConnection", (s: TLSSocket) => {
    seen.push({ session: s.getSession()!, peer: s.getPeerX509Certificate()!.raw, reused: s.isSessionReused(), chain: peerChain(s) });
    s.end("ok");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  port = (server.address() as AddressInfo).port;
});
afterAll(() => server.close());

async function handshake(extra: Record<string, unknown> = {}): Promise<Buffer | undefined> {
  const s = connect({ host: "127.0.0.1", port, ca: ca.certPem, cert: clientCert.chainPem, key: clientCert.keyPem, servername: "localhost", ...extra });
  let ticket: Buffer | undefined;
  s.on("session", (t: Buffer) => (ticket = t));
  s.resume();
  await once(s, "close");
  return ticket;
}

describe("the peer certificate from the TLS session", () => {
  it("is the client's leaf under TLS 1.3, TLS 1.2, and on a resumed TLS 1.3 session", async () => {
    const ticket = await handshake();
    await handshake({ maxVersion: "TLSv1.2" });
    await handshake({ session: ticket });
    const leaf = derFromPem(clientCert.certPem, "client")[0]!;
    expect(seen.map((x) => x.reused)).toEqual([false, false, true]);
    for (const { session, peer } of seen) {
      expect(sessionPeerCertificate(session)).toEqual(peer);
      expect(sessionPeerCertificate(session)).toEqual(leaf);
    }
  });

  it("is a copy: wiping the session (it holds the master secret) leaves the certificate intact", () => {
    const session = Buffer.from(seen[0]!.session);
    const cert = sessionPeerCertificate(session)!;
    session.fill(0);
    expect(cert).toEqual(seen[0]!.peer);
  });

  it("is undefined, never an error, for a session without a peer or not in OpenSSL's shape", () => {
    const good = seen[0]!.session;
    const noPeer = Buffer.from([0x30, 0x06, 0x02, 0x01, 0x01, 0x04, 0x01, 0x00]);
    const notSequence = Buffer.from([0x31, 0x00]);
    // [3] holding two values instead of one certificate.
    const twoInPeer = Buffer.from([0x30, 0x08, 0xa3, 0x06, 0x30, 0x01, 0x00, 0x30, 0x01, 0x00]);
    for (const bad of [Buffer.alloc(0), noPeer, notSequence, twoInPeer, good.subarray(0, good.length >> 1), good.subarray(0, 3)]) {
      expect(sessionPeerCertificate(bad)).toBeUndefined();
    }
  });
});

describe("the chain a peer presented", () => {
  it("is every certificate sent, leaf first, in the order sent (none dropped past a limit)", async () => {
    const upper = await ca.intermediate({ name: "upper" });
    const lower = await upper.intermediate({ name: "lower" });
    const leaf = await lower.leaf({ uris: ["spiffe://a.test/deep"] });
    const sent = leaf.certPem + upper.certPem + lower.certPem; // out of order on purpose
    const before = seen.length;
    const s = connect({ host: "127.0.0.1", port, ca: ca.certPem, cert: sent, key: leaf.keyPem, servername: "localhost" });
    s.resume();
    await once(s, "close");
    expect(seen.length).toBe(before + 1);
    expect(seen[before]!.chain).toEqual(derFromPem(sent, "sent"));
  });
});
