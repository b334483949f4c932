// Who called, as a legacy workload learns it: the PROXY v2 header a listener with `proxy_protocol`
// writes first (built once per connection, before the upstream is dialled), and the record the admin
// server's `GET /connections/<port>` returns while the session lives.
import type { TLSSocket } from "node:tls";
import type { ProxyProtocolConfig } from "../../config/resources.js";
import { readTlv } from "../../spiffe/der.js";
import type { SvidResult } from "../../spiffe/x509svid.js";
import { encodeProxyV2, type CallerInfo, type ProxyHeader } from "../proxyv2.js";
import { tcpOf } from "../tcp.js";
import type { ConnectionFacts } from "./facts.js";
import { presentedOn } from "./presented.js";

export interface Grant {
  readonly id: string;
  readonly roles: readonly string[];
  readonly expiresAt: number;
}

/** What the session knows of its caller when it dials. */
export interface Caller {
  readonly sessionId: string;
  readonly peer: SvidResult;
  readonly facts: ConnectionFacts;
  readonly grant?: Grant;
}

/** The header for `client`'s session under `config`; throws ProxyHeaderError if it cannot be encoded. */
export function proxyHeaderOf(client: TLSSocket, c: Caller, config: ProxyProtocolConfig): Buffer {
  const tcp = tcpOf(client);
  const h: ProxyHeader = {
    source: { address: tcp.remoteAddress ?? "", port: tcp.remotePort ?? 0 },
    // The listener's address as the client reached it (a wildcard listener's actual local address).
    destination: { address: tcp.localAddress ?? "", port: tcp.localPort ?? 0 },
    ...(config.tlvs ? { info: callerInfo(client, c, config) } : {}),
  };
  return encodeProxyV2(h, { crc32c: config.crc32c });
}

function callerInfo(client: TLSSocket, c: Caller, config: ProxyProtocolConfig): CallerInfo {
  const leaf = c.facts.certs.leaf;
  const cn = leaf ? commonName(leaf) : undefined;
  return {
    tls: {
      version: client.getProtocol() ?? "",
      cipher: client.getCipher().name,
      // Read once per own-SVID change by the listener (a per-connection read cost ~300 µs).
      presented: presentedOn(client),
      ...(cn !== undefined ? { cn } : {}),
      verified: c.peer.ok,
      // A resumed session presented its certificate on an earlier connection (§2.2.6).
      certOnConnection: leaf !== undefined && !client.isSessionReused(),
      certInSession: leaf !== undefined,
    },
    ...(c.facts.alpn ? { alpn: c.facts.alpn } : {}),
    ...(c.facts.sni ? { authority: c.facts.sni } : {}),
    uniqueId: c.sessionId,
    ...(c.peer.ok ? { spiffeId: c.peer.svid.id.toString() } : {}),
    ...(c.grant ? { grant: c.grant } : {}),
    ...(config.peerCertificate && leaf ? { peerCertificate: leaf } : {}),
  };
}

/** The DER of OID 2.5.4.3 (id-at-commonName), tag and length included. */
const CN_OID = Buffer.from([0x06, 0x03, 0x55, 0x04, 0x03]);
const SEQUENCE = 0x30;

/**
 * The subject's first Common Name (RFC 5280 §4.1.2.6), walked with the DER reader: a full ASN.1 parse
 * of the leaf cost ~20x the rest of the header. X509-SVIDs often have none.
 */
function commonName(der: Buffer): string | undefined {
  try {
    const cert = readTlv(der, 0);
    const tbs = readTlv(der, cert.start);
    let at = tbs.start;
    if (der[at] === 0xa0) at = readTlv(der, at).end; // [0] version
    for (let skip = 0; skip < 4; skip++) at = readTlv(der, at).end; // serial, signature, issuer, validity
    const subject = readTlv(der, at);
    if (cert.tag !== SEQUENCE || tbs.tag !== SEQUENCE || subject.tag !== SEQUENCE) return undefined;
    for (let rdn = subject.start; rdn < subject.end; rdn = readTlv(der, rdn).end) {
      const set = readTlv(der, rdn);
      for (let atv = set.start; atv < set.end; atv = readTlv(der, atv).end) {
        const pair = readTlv(der, atv);
        const oid = readTlv(der, pair.start);
        if (der.subarray(pair.start, oid.end).equals(CN_OID)) return directoryString(der, readTlv(der, oid.end));
      }
    }
  } catch {
    // The leaf was verified (or not) elsewhere; an unreadable subject just has no CN to tell.
  }
  return undefined;
}

/** X.520 DirectoryString and the IA5String some issuers use. */
function directoryString(der: Buffer, v: { tag: number; start: number; end: number }): string | undefined {
  const bytes = der.subarray(v.start, v.end);
  if (v.tag === 0x0c) return bytes.toString("utf8");
  if (v.tag === 0x13 || v.tag === 0x16 || v.tag === 0x14) return bytes.toString("latin1");
  if (v.tag === 0x1e) return Buffer.from(bytes).swap16().toString("utf16le"); // BMPString: UCS-2, big-endian
  return undefined;
}

/** The admin server's answer for a session found by the local port of its upstream connection. */
export interface CallerRecord {
  readonly session_id: string;
  readonly listener: string;
  /** The verified SPIFFE ID (no session is admitted without one). */
  readonly peer_id: string;
  readonly source: string;
  readonly upstream: string;
  readonly upstream_local: string;
  readonly grant: { id: string; roles: readonly string[]; expires_at: string } | null;
  readonly expires_at: string | null;
}

export function callerRecord(c: Caller, at: { listener: string; upstream: string; upstreamLocal: string; expiresAt: number | undefined }): CallerRecord {
  return {
    session_id: c.sessionId,
    listener: at.listener,
    peer_id: c.peer.ok ? c.peer.svid.id.toString() : "",
    source: c.facts.source,
    upstream: at.upstream,
    upstream_local: at.upstreamLocal,
    grant: c.grant ? { id: c.grant.id, roles: c.grant.roles, expires_at: new Date(c.grant.expiresAt).toISOString() } : null,
    expires_at: at.expiresAt === undefined ? null : new Date(at.expiresAt).toISOString(),
  };
}
