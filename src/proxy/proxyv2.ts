// The PROXY protocol version 2 header (HAProxy's proxy-protocol.txt, section 2.2) that an inbound
// listener writes to its workload before any client byte: the client's address, the listener's
// address as the client saw it, and TLVs saying who called over which TLS. Pure: facts in, bytes out.
//
// No npm encoder was used: proxy-protocol-js (the maintained one) appends TLV bytes as an opaque blob,
// with neither TLV framing nor CRC32C (README, "Libraries"). CRC32C itself is @aws-crypto/crc32c.
import { crc32c } from "@aws-crypto/crc32c";
import { isIPv4, isIPv6 } from "node:net";
import { ParleyError } from "../errors/catalogue.js";

/** §2.2: the 12-byte signature, then version 2 with the PROXY command (0x21). */
export const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const VERSION_PROXY = 0x21;
/** §2.2: family in the high nibble (1 AF_INET, 2 AF_INET6), transport in the low (1 STREAM). */
const TCP4 = 0x11;
const TCP6 = 0x21;

/** §2.2 registered types, §2.2.6 SSL sub-types, and parley's own in the custom range (§2.2.8, 0xE0-0xEF). */
export const PP2 = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  SSL_VERSION: 0x21,
  SSL_CN: 0x22,
  SSL_CIPHER: 0x23,
  SSL_SIG_ALG: 0x24,
  SSL_KEY_ALG: 0x25,
  /** The peer's verified SPIFFE ID (UTF-8). */
  PARLEY_SPIFFE_ID: 0xe0,
  /** The grant id of a negotiated session (ASCII). */
  PARLEY_GRANT_ID: 0xe1,
  /** The granted roles: each one length byte, then that many UTF-8 bytes. */
  PARLEY_GRANT_ROLES: 0xe2,
  /** When the grant expires: RFC 3339 UTC with milliseconds (ASCII). */
  PARLEY_GRANT_EXPIRES: 0xe3,
  /** The peer's leaf certificate, DER (only when configured). */
  PARLEY_PEER_CERT: 0xe4,
} as const;

/** §2.2.6 <client> bits. */
export const PP2_CLIENT = { SSL: 0x01, CERT_CONN: 0x02, CERT_SESS: 0x04 } as const;

/** §2.2.5: a unique id is at most 128 bytes. */
const MAX_UNIQUE_ID = 128;
/** §2.2: the 16-bit length counts what follows the first 16 bytes. */
const MAX_LENGTH = 0xffff;

export class ProxyHeaderError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_PROXY_HEADER", message);
  }
}

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

/** What the header says: the addresses, and (absent for the address block alone) who called. */
export interface ProxyHeader {
  readonly source: Endpoint;
  readonly destination: Endpoint;
  readonly info?: CallerInfo;
}

/** Who called, over which TLS; every string as the connection had it. */
export interface CallerInfo {
  readonly tls: {
    readonly version: string;
    readonly cipher: string;
    /**
     * Signature and key algorithm of the certificate parley presented (§2.2.6: "presented by the
     * frontend"), encoded by presentedCertificateTlvs: the same for every connection until the own SVID
     * changes, so encoded once.
     */
    readonly presented?: Buffer | undefined;
    /** The client certificate's subject Common Name, when it has one. */
    readonly cn?: string;
    /** The client certificate was verified (§2.2.6: <verify> is then zero). */
    readonly verified: boolean;
    readonly certOnConnection: boolean;
    readonly certInSession: boolean;
  };
  readonly alpn?: string;
  readonly authority?: string;
  readonly uniqueId: string;
  /** The verified SPIFFE ID; absent for an unverified peer (which the decision never admits). */
  readonly spiffeId?: string;
  readonly grant?: { readonly id: string; readonly roles: readonly string[]; readonly expiresAt: number };
  readonly peerCertificate?: Buffer;
}

/**
 * Encodes `h` as one buffer: the address block, the TLVs of `h.info`, then CRC32C if asked. Throws
 * ProxyHeaderError if it cannot be said in the format.
 */
export function encodeProxyV2(h: ProxyHeader, options: { crc32c: boolean }): Buffer {
  const { family, addresses } = addressBlock(h.source, h.destination);
  const tlvs = h.info ? informationTlvs(h.info) : [];
  // §2.2.3: the checksum TLV goes in with zeros, is computed over the whole header, then filled in.
  if (options.crc32c) tlvs.push(tlv(PP2.CRC32C, Buffer.alloc(4)));
  const body = Buffer.concat([addresses, ...tlvs]);
  if (body.length > MAX_LENGTH) throw new ProxyHeaderError(`header of ${16 + body.length} bytes; the format allows ${16 + MAX_LENGTH}`);
  const head = Buffer.alloc(16);
  SIGNATURE.copy(head, 0);
  head[12] = VERSION_PROXY;
  head[13] = family;
  head.writeUInt16BE(body.length, 14);
  const out = Buffer.concat([head, body]);
  if (options.crc32c) out.writeUInt32BE(crc32c(out), out.length - 4);
  return out;
}

function informationTlvs(h: CallerInfo): Buffer[] {
  const uniqueId = Buffer.from(h.uniqueId, "utf8");
  if (uniqueId.length > MAX_UNIQUE_ID) throw new ProxyHeaderError(`unique id of ${uniqueId.length} bytes; at most ${MAX_UNIQUE_ID}`);
  const tlvs: Buffer[] = [];
  if (h.alpn) tlvs.push(tlv(PP2.ALPN, Buffer.from(h.alpn, "utf8")));
  if (h.authority) tlvs.push(tlv(PP2.AUTHORITY, Buffer.from(h.authority, "utf8")));
  tlvs.push(tlv(PP2.UNIQUE_ID, uniqueId), tlv(PP2.SSL, sslValue(h.tls)));
  if (h.spiffeId !== undefined) tlvs.push(tlv(PP2.PARLEY_SPIFFE_ID, Buffer.from(h.spiffeId, "utf8")));
  if (h.grant) {
    tlvs.push(
      tlv(PP2.PARLEY_GRANT_ID, Buffer.from(h.grant.id, "utf8")),
      tlv(PP2.PARLEY_GRANT_ROLES, rolesValue(h.grant.roles)),
      tlv(PP2.PARLEY_GRANT_EXPIRES, Buffer.from(new Date(h.grant.expiresAt).toISOString(), "ascii")),
    );
  }
  if (h.peerCertificate) tlvs.push(tlv(PP2.PARLEY_PEER_CERT, h.peerCertificate));
  return tlvs;
}

/** §2.2 pp2_tlv: type, 16-bit big-endian length, value. */
function tlv(type: number, value: Buffer): Buffer {
  if (value.length > MAX_LENGTH) throw new ProxyHeaderError(`TLV 0x${type.toString(16)} of ${value.length} bytes; at most ${MAX_LENGTH}`);
  const out = Buffer.alloc(3 + value.length);
  out[0] = type;
  out.writeUInt16BE(value.length, 1);
  value.copy(out, 3);
  return out;
}

/** §2.2.6 pp2_tlv_ssl: <client> bits, 32-bit <verify>, then the sub-TLVs. */
function sslValue(t: CallerInfo["tls"]): Buffer {
  const fixed = Buffer.alloc(5);
  fixed[0] = PP2_CLIENT.SSL | (t.certOnConnection ? PP2_CLIENT.CERT_CONN : 0) | (t.certInSession ? PP2_CLIENT.CERT_SESS : 0);
  fixed.writeUInt32BE(t.verified ? 0 : 1, 1);
  const subs = [tlv(PP2.SSL_VERSION, Buffer.from(t.version, "ascii"))];
  if (t.cn !== undefined) subs.push(tlv(PP2.SSL_CN, Buffer.from(t.cn, "utf8")));
  subs.push(tlv(PP2.SSL_CIPHER, Buffer.from(t.cipher, "ascii")));
  if (t.presented) subs.push(t.presented);
  return Buffer.concat([fixed, ...subs]);
}

/** §2.2.6 SSL_SIG_ALG then SSL_KEY_ALG sub-TLVs (each absent when unknown), for CallerInfo `presented`. */
export function presentedCertificateTlvs(sigAlg: string | undefined, keyAlg: string | undefined): Buffer {
  const subs: Buffer[] = [];
  if (sigAlg) subs.push(tlv(PP2.SSL_SIG_ALG, Buffer.from(sigAlg, "ascii")));
  if (keyAlg) subs.push(tlv(PP2.SSL_KEY_ALG, Buffer.from(keyAlg, "ascii")));
  return Buffer.concat(subs);
}

function rolesValue(roles: readonly string[]): Buffer {
  return Buffer.concat(
    roles.map((r) => {
      const b = Buffer.from(r, "utf8");
      if (b.length === 0 || b.length > 255) throw new ProxyHeaderError(`role name of ${b.length} bytes; 1 to 255`);
      return Buffer.concat([Buffer.from([b.length]), b]);
    }),
  );
}

/**
 * §2.2 address block: source address, destination address, source port, destination port, network
 * order. IPv4-mapped IPv6 addresses (a dual-stack listener) are sent as the IPv4 addresses they are.
 */
function addressBlock(src: Endpoint, dst: Endpoint): { family: number; addresses: Buffer } {
  const s = unmapped(src.address);
  const d = unmapped(dst.address);
  const v4 = isIPv4(s) && isIPv4(d);
  if (!v4 && !(isIPv6(s) && isIPv6(d))) throw new ProxyHeaderError(`no TCP4 or TCP6 address pair for ${src.address} → ${dst.address}`);
  const a = v4 ? ipv4Bytes : ipv6Bytes;
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(src.port, 0);
  ports.writeUInt16BE(dst.port, 2);
  return { family: v4 ? TCP4 : TCP6, addresses: Buffer.concat([a(s), a(d), ports]) };
}

function unmapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m?.[1] ?? address.replace(/%.*$/, "");
}

function ipv4Bytes(a: string): Buffer {
  return Buffer.from(a.split(".").map(Number));
}

/** RFC 4291 §2.2 text forms (with `::`, and a dotted IPv4 tail for the last 32 bits) → 16 bytes. */
function ipv6Bytes(a: string): Buffer {
  const last = a.slice(a.lastIndexOf(":") + 1);
  const tail = isIPv4(last) ? last : undefined;
  const text = tail ? `${a.slice(0, a.length - last.length)}0:0` : a;
  const [head = "", rest] = text.split("::");
  const groups = (s: string | undefined) => (s ? s.split(":") : []);
  const left = groups(head);
  const right = groups(rest);
  const all = rest === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  const out = Buffer.alloc(16);
  all.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  if (tail) ipv4Bytes(tail).copy(out, 12);
  return out;
}
