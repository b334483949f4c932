// The certificate chain a TLS peer presented, leaf first, as DER, and its verification. Reading the
// whole chain from Node (getPeerCertificate(true)) costs a few hundred microseconds per connection, so
// the leaf alone is tried first: most SVIDs are signed by a root of their bundle directly, and only
// a leaf that needs intermediates (or fails for want of them) has the whole chain read.
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import type { SvidResult, SvidVerifier } from "../identity/x509svid.js";

/** At most `limit + 1` certificates are taken, so an oversized chain is still seen as too long. */
export function peerChain(socket: TLSSocket, limit: number): Buffer[] {
  const leaf = socket.getPeerCertificate(true) as Partial<DetailedPeerCertificate> | null;
  if (!leaf?.raw) return [];
  const out: Buffer[] = [leaf.raw];
  let cert = leaf as DetailedPeerCertificate;
  while (out.length <= limit && cert.issuerCertificate && cert.issuerCertificate !== cert && cert.issuerCertificate.raw) {
    cert = cert.issuerCertificate;
    out.push(cert.raw);
  }
  return out;
}

/** A peer's certificates, read from the socket once, as far as verification needs them. */
export class PeerCertificates {
  private readonly leaf: Buffer | undefined;
  private full: Buffer[] | undefined;

  constructor(
    private readonly socket: TLSSocket,
    private readonly limit: number,
  ) {
    // Not getPeerX509Certificate(): once called, Node no longer links the chain in
    // getPeerCertificate(true), which the slow path needs.
    this.leaf = (socket.getPeerCertificate(false) as Partial<DetailedPeerCertificate> | null)?.raw;
  }

  /** Verifies the leaf alone, then (if intermediates could help) the whole presented chain. */
  verify(verifier: SvidVerifier, now: number): SvidResult {
    if (!this.leaf) return verifier.verify([], now);
    const alone = verifier.verify([this.leaf], now);
    if (alone.ok || (alone.rule !== "chain_unverified" && alone.rule !== "intermediate_not_ca")) return alone;
    this.full ??= peerChain(this.socket, this.limit);
    return this.full.length > 1 ? verifier.verify(this.full, now) : alone;
  }
}
