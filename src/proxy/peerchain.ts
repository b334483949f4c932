// The certificate chain a TLS peer presented, leaf first, as DER, and its verification.
// Read through getPeerX509Certificate(), never getPeerCertificate(): the latter turns every
// certificate into a JS object with three fingerprints and the decoded public key, which costs about
// 110 µs per connection under load (OpenSSL 3's key decoders), some 4 % of a full mTLS handshake.
// Node links the presented chain through `issuerCertificate` in the order it was sent, consuming the
// socket's copy: the chain is read once per connection.
import type { X509Certificate } from "node:crypto";
import type { TLSSocket } from "node:tls";
import type { SvidResult, SvidVerifier } from "../identity/x509svid.js";

/** At most `limit + 1` certificates are taken, so an oversized chain is still seen as too long. */
export function peerChain(socket: TLSSocket, limit: number): Buffer[] {
  return chainOf(socket.getPeerX509Certificate(), limit);
}

function chainOf(leaf: X509Certificate | undefined, limit: number): Buffer[] {
  const out: Buffer[] = [];
  for (let cert = leaf; cert && out.length <= limit; cert = cert.issuerCertificate) out.push(cert.raw);
  return out;
}

/** A peer's certificates, read from the socket once, as far as verification needs them. */
export class PeerCertificates {
  private readonly leaf: X509Certificate | undefined;
  private readonly leafDer: readonly Buffer[];
  private full: Buffer[] | undefined;

  constructor(
    socket: TLSSocket,
    private readonly limit: number,
  ) {
    this.leaf = socket.getPeerX509Certificate();
    this.leafDer = this.leaf ? [this.leaf.raw] : [];
  }

  /** Verifies the leaf alone, then (if intermediates could help) the whole presented chain. */
  verify(verifier: SvidVerifier, now: number): SvidResult {
    const alone = verifier.verify(this.leafDer, now);
    if (alone.ok || (alone.rule !== "chain_unverified" && alone.rule !== "intermediate_not_ca")) return alone;
    this.full ??= chainOf(this.leaf, this.limit);
    return this.full.length > 1 ? verifier.verify(this.full, now) : alone;
  }
}
