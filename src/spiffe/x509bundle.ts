// Trust bundles: the authorities of one trust domain (X.509 roots for X509-SVIDs, JWT keys for
// JWT-SVIDs), and the set of bundles a sidecar trusts (several trust domains at once = federation).
// Verification looks up the bundle of the peer ID's own trust domain only; authorities are never
// pooled across domains.
import type { KeyObject } from "node:crypto";
import type { TrustDomain } from "./spiffeid.js";
import { parseSpiffeBundle, type JwtAuthority } from "./spiffebundle.js";
import { CertificateParseError, derFromPem, parseCertificate, type CertFacts } from "./x509cert.js";

export class X509Bundle {
  private readonly byFingerprint: ReadonlyMap<string, CertFacts>;

  constructor(
    readonly trustDomain: TrustDomain,
    /** May be empty: a trust domain whose bundle has no keys trusts nothing. */
    readonly roots: readonly CertFacts[],
    readonly jwtAuthorities: readonly JwtAuthority[] = [],
    /** spiffe_sequence of the document it came from, if any. */
    readonly sequence?: number,
  ) {
    this.byFingerprint = new Map(roots.map((r) => [r.fingerprint, r]));
  }

  /** Reads DER roots; each must be a CA certificate. */
  static fromDer(trustDomain: TrustDomain, ders: readonly Buffer[], what: string, jwt: readonly JwtAuthority[] = [], sequence?: number): X509Bundle {
    const roots = ders.map((der, i) => {
      const facts = parseCertificate(der);
      if (!facts.isCA) {
        throw new CertificateParseError(`${what}: certificate #${i + 1} is not a CA (basicConstraints cA=false) and cannot be a trust anchor`);
      }
      return facts;
    });
    return new X509Bundle(trustDomain, roots, jwt, sequence);
  }

  /** Reads PEM roots; each must be a CA certificate. */
  static fromPem(trustDomain: TrustDomain, pem: string, what: string): X509Bundle {
    return X509Bundle.fromDer(trustDomain, derFromPem(pem, what), what);
  }

  /** A PEM file of roots, or a SPIFFE bundle (JSON), told apart by their first character. */
  static fromDocument(trustDomain: TrustDomain, text: string, what: string): X509Bundle {
    if (!text.trimStart().startsWith("{")) return X509Bundle.fromPem(trustDomain, text, what);
    const doc = parseSpiffeBundle(text, what);
    return X509Bundle.fromDer(trustDomain, doc.x509Authorities, what, doc.jwtAuthorities, doc.sequence);
  }

  hasRoot(fingerprint: string): boolean {
    return this.byFingerprint.has(fingerprint);
  }

  jwtKey(kid: string): KeyObject | undefined {
    return this.jwtAuthorities.find((a) => a.kid === kid)?.key;
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

  /** This set with `other`'s bundles in place of any of the same trust domain. */
  overlaidWith(other: BundleSet): BundleSet {
    return new BundleSet([...this.all().filter((b) => !other.byName.has(b.trustDomain.name)), ...other.all()]);
  }
}
