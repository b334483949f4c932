// The certificate chain a TLS peer presented, leaf first, as DER, and its verification.
//
// The leaf is taken from the TLS session (the peer certificate's DER, as OpenSSL encodes the session),
// not from a certificate object: on this hot path, measured per new mTLS session with the session
// machinery around it, getPeerX509Certificate() cost ~13 % of the bare pipe's CPU and
// getPeerCertificate() ~6 %, where the session read costs ~1 %. The session also holds the master
// secret, so it is wiped as soon as the certificate is copied out. The whole chain is read through
// getPeerX509Certificate() (Node links it through `issuerCertificate` in the order sent, once per
// connection) only when the leaf alone does not verify.
import type { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { DerError, readTlv } from "../../spiffe/der.js";
import type { SvidResult, SvidVerifier } from "../../spiffe/x509svid.js";

/** At most `limit + 1` certificates are taken, so an oversized chain is still seen as too long. */
export function peerChain(socket: TLSSocket, limit: number): Buffer[] {
  return chainOf(socket.getPeerX509Certificate(), limit);
}

function chainOf(leaf: X509Certificate | undefined, limit: number): Buffer[] {
  const out: Buffer[] = [];
  for (let cert = leaf; cert && out.length <= limit; cert = cert.issuerCertificate) out.push(cert.raw);
  return out;
}

const SEQUENCE = 0x30;
/** `peer [3] EXPLICIT Certificate OPTIONAL` in OpenSSL's SSL_SESSION_ASN1. */
const SESSION_PEER = 0xa3;

/**
 * The peer certificate's DER in an encoded TLS session (OpenSSL's SSL_SESSION_ASN1: a SEQUENCE whose
 * field [3] holds the peer's certificate), copied out; undefined when the session has none or is not
 * in that shape.
 */
export function sessionPeerCertificate(session: Buffer): Buffer | undefined {
  try {
    const outer = readTlv(session, 0);
    if (outer.tag !== SEQUENCE) return undefined;
    for (let at = outer.start; at < outer.end;) {
      const field = readTlv(session, at);
      if (field.tag === SESSION_PEER) {
        const cert = readTlv(session, field.start);
        return cert.tag === SEQUENCE && cert.end === field.end ? Buffer.from(session.subarray(field.start, cert.end)) : undefined;
      }
      at = field.end;
    }
    return undefined;
  } catch (e) {
    if (e instanceof DerError) return undefined;
    throw e;
  }
}

/** The leaf the peer presented, read from its session, or from a certificate object if need be. */
function leafOf(socket: TLSSocket): Buffer | undefined {
  const session = socket.getSession();
  if (session) {
    const leaf = sessionPeerCertificate(session);
    session.fill(0);
    if (leaf) return leaf;
  }
  return socket.getPeerX509Certificate()?.raw;
}

/** A peer's certificates, read from the socket once, as far as verification needs them. */
export class PeerCertificates {
  /** The leaf alone, as a chain of one (none when the peer sent no certificate). */
  private readonly leafOnly: readonly Buffer[];
  private full: Buffer[] | undefined;

  constructor(
    private readonly socket: TLSSocket,
    private readonly limit: number,
  ) {
    const leaf = leafOf(socket);
    this.leafOnly = leaf ? [leaf] : [];
  }

  /** The leaf's DER, when the peer sent one. */
  get leaf(): Buffer | undefined {
    return this.leafOnly[0];
  }

  /** Verifies the leaf alone, then (if intermediates could help) the whole presented chain. */
  verify(verifier: SvidVerifier, now: number): SvidResult {
    const alone = verifier.verify(this.leafOnly, now);
    if (alone.ok || (alone.rule !== "chain_unverified" && alone.rule !== "intermediate_not_ca")) return alone;
    this.full ??= peerChain(this.socket, this.limit);
    return this.full.length > 1 ? verifier.verify(this.full, now) : alone;
  }
}
