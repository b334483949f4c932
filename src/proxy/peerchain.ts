// The certificate chain a TLS peer presented, leaf first, as DER.
import type { TLSSocket, DetailedPeerCertificate } from "node:tls";

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
