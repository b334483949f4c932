// The certificate chain a TLS peer presented, leaf first, as DER, and its verification.
//
// The leaf is taken from the TLS session (the peer certificate's DER, as OpenSSL encodes the session),
// not from a certificate object: on this hot path, measured per new mTLS session with the session
// machinery around it, getPeerX509Certificate() cost ~13 % of the bare pipe's CPU and
// getPeerCertificate() ~6 %, where the session read costs ~1 %. The session also holds the master
// secret, so it is wiped as soon as the certificate is copied out. The whole chain is read through
// getPeerX509Certificate() (Node links it through `issuerCertificate` in the order sent, once per
// connection) only when the leaf alone leads to no valid path.
import type { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { DerError, readTlv } from "../../spiffe/der.js";
import { PATH_RULES } from "../../spiffe/pathvalidation.js";
import type { SvidResult, SvidVerifier } from "../../spiffe/x509svid.js";

/**
 * Every certificate the peer sent, leaf first, so that a chain over the limit is reported with its
 * true length. The list is bounded by OpenSSL's limit on a peer's certificate list (100 KiB).
 */
export function peerChain(socket: TLSSocket): Buffer[] {
  return chainOf(socket.getPeerX509Certificate());
}

/** A backstop only: OpenSSL's 100 KiB bound on the list keeps real chains far below it. */
const MAX_PRESENTED = 1024;

function chainOf(leaf: X509Certificate | undefined): Buffer[] {
  const out: Buffer[] = [];
  for (let cert = leaf; cert && out.length < MAX_PRESENTED; cert = cert.issuerCertificate) out.push(cert.raw);
  return out;
}

/** Failures of the leaf-alone path that the presented intermediates might cure. */
const PATH_FAILURES = new Set<string>(PATH_RULES);

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

  constructor(private readonly socket: TLSSocket) {
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
    if (alone.ok || !PATH_FAILURES.has(alone.rule)) return alone;
    this.full ??= peerChain(this.socket);
    return this.full.length > 1 ? verifier.verify(this.full, now) : alone;
  }
}
