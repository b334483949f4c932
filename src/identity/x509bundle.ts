// X.509 trust bundles: the root CAs of one trust domain, and the set of bundles a sidecar trusts
// (several trust domains at once = federation). Verification looks up the bundle of the peer ID's own
// trust domain only; roots are never pooled across domains.
import type { TrustDomain } from "./spiffeid.js";
import { CertificateParseError, derFromPem, parseCertificate, type CertFacts } from "./x509cert.js";

export class X509Bundle {
  private readonly byFingerprint: ReadonlyMap<string, CertFacts>;

  constructor(
    readonly trustDomain: TrustDomain,
    readonly roots: readonly CertFacts[],
  ) {
    this.byFingerprint = new Map(roots.map((r) => [r.fingerprint, r]));
  }

  /** Reads PEM roots; each must be a CA certificate. */
  static fromPem(trustDomain: TrustDomain, pem: string, what: string): X509Bundle {
    const roots = derFromPem(pem, what).map((der, i) => {
      const facts = parseCertificate(der);
      if (!facts.isCA) {
        throw new CertificateParseError(`${what}: certificate #${i + 1} is not a CA (basicConstraints cA=false) and cannot be a trust anchor`);
      }
      return facts;
    });
    return new X509Bundle(trustDomain, roots);
  }

  hasRoot(fingerprint: string): boolean {
    return this.byFingerprint.has(fingerprint);
  }
}

export class BundleSet {
  private readonly byName: ReadonlyMap<string, X509Bundle>;

  constructor(bundles: readonly X509Bundle[]) {
    this.byName = new Map(bundles.map((b) => [b.trustDomain.name, b]));
  }

  forTrustDomain(td: TrustDomain): X509Bundle | undefined {
    return this.byName.get(td.name);
  }

  trustDomains(): string[] {
    return [...this.byName.keys()];
  }

  all(): X509Bundle[] {
    return [...this.byName.values()];
  }
}
