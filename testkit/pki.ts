// Test PKI: two trust domains made fresh by the suite, and helpers to issue whatever a test needs.
import { CertificateAuthority, type CertOptions, type Issued } from "../src/certs/issue.js";

export interface TestPki {
  /** Root of trust domain a.test. */
  a: CertificateAuthority;
  /** Root of trust domain b.test. */
  b: CertificateAuthority;
  /** The sidecar's own SVID (spiffe://a.test/sidecar, DNS localhost). */
  server: Issued;
  leaf(ca: CertificateAuthority, id: string, opts?: CertOptions): Promise<Issued>;
}

export async function makePki(): Promise<TestPki> {
  const a = await CertificateAuthority.root({ trustDomain: "a.test" });
  const b = await CertificateAuthority.root({ trustDomain: "b.test" });
  const server = await a.leaf({ uris: ["spiffe://a.test/sidecar"], dnsNames: ["localhost"] });
  return { a, b, server, leaf: (ca, id, opts = {}) => ca.leaf({ uris: [id], ...opts }) };
}
