// X509-SVID verification per the SPIFFE X509-SVID standard: the leaf's rules, then a chain to the
// bundle of the leaf ID's own trust domain (never to the roots of another domain).
import { SpiffeId, SpiffeIdError } from "./spiffeid.js";
import type { BundleSet, X509Bundle } from "./x509bundle.js";
import { CertificateParseError, fingerprintOf, KeyUsageFlags, parseCertificate, type CertFacts } from "./x509cert.js";

/** The rule an SVID broke. Stable: logged as `svid_rule` and documented in the README. */
export type SvidRule =
  | "no_certificate"
  | "malformed"
  | "chain_too_long"
  | "uri_san_count"
  | "id_invalid"
  | "id_no_path"
  | "leaf_is_ca"
  | "key_usage_missing"
  | "key_usage_no_digital_signature"
  | "key_usage_ca_bits"
  | "untrusted_domain"
  | "chain_unverified"
  | "intermediate_not_ca"
  | "expired"
  | "not_yet_valid";

export interface VerifiedSvid {
  readonly id: SpiffeId;
  readonly leaf: CertFacts;
  /** Leaf, intermediates, then the trust anchor from the bundle. */
  readonly path: readonly CertFacts[];
  /** The window in which every certificate of the path is valid (ms since epoch). */
  readonly notBefore: number;
  readonly notAfter: number;
}

export interface SvidFailure {
  readonly rule: SvidRule;
  readonly message: string;
  /** The leaf's ID when it could be read, for logs. */
  readonly id?: SpiffeId;
  readonly leaf?: CertFacts;
}

export type SvidResult = { ok: true; svid: VerifiedSvid } | ({ ok: false } & SvidFailure);

export interface SvidVerifierOptions {
  /** Most certificates a peer may present (leaf included). */
  maxChainLength?: number;
  /** Most verification results kept, keyed by the presented chain. */
  cacheSize?: number;
}

const CA_BITS = KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign;

function fail(rule: SvidRule, message: string, leaf?: CertFacts, id?: SpiffeId): SvidResult {
  return { ok: false, rule, message, ...(leaf ? { leaf } : {}), ...(id ? { id } : {}) };
}

/** Checks the leaf rules that depend on the leaf alone. */
function checkLeaf(leaf: CertFacts): SvidResult | SpiffeId {
  if (leaf.uriSans.length !== 1) {
    return fail("uri_san_count", `leaf must have exactly one URI SAN, found ${leaf.uriSans.length}`, leaf);
  }
  const parsed = SpiffeId.tryParse(leaf.uriSans[0]!);
  if (parsed instanceof SpiffeIdError) return fail("id_invalid", `leaf URI SAN: ${parsed.message}`, leaf);
  const id = parsed;
  if (id.path === "") return fail("id_no_path", `leaf SPIFFE ID ${id} has no path`, leaf, id);
  if (leaf.isCA) return fail("leaf_is_ca", "leaf certificate is a CA (basicConstraints cA=true)", leaf, id);
  if (leaf.keyUsage === null) return fail("key_usage_missing", "leaf certificate has no key usage extension", leaf, id);
  if ((leaf.keyUsage & KeyUsageFlags.digitalSignature) === 0) {
    return fail("key_usage_no_digital_signature", "leaf key usage lacks digitalSignature", leaf, id);
  }
  if ((leaf.keyUsage & CA_BITS) !== 0) {
    return fail("key_usage_ca_bits", "leaf key usage must not include keyCertSign or cRLSign", leaf, id);
  }
  return id;
}

function signedBy(cert: CertFacts, issuer: CertFacts): boolean {
  return cert.x509.issuer === issuer.x509.subject && cert.x509.verify(issuer.x509.publicKey);
}

type PathResult = CertFacts[] | "intermediate_not_ca" | "chain_unverified";

/** Depth-first search from `path`'s last cert to a root of `bundle` through presented intermediates. */
function buildPath(path: CertFacts[], intermediates: readonly CertFacts[], bundle: X509Bundle): PathResult {
  const cert = path[path.length - 1]!;
  for (const root of bundle.roots) if (signedBy(cert, root)) return [...path, root];
  let sawNonCA = false;
  for (const inter of intermediates) {
    if (path.includes(inter) || !signedBy(cert, inter)) continue;
    if (!inter.isCA || (inter.keyUsage !== null && (inter.keyUsage & KeyUsageFlags.keyCertSign) === 0)) {
      sawNonCA = true;
      continue;
    }
    const found = buildPath([...path, inter], intermediates, bundle);
    if (Array.isArray(found)) return found;
    if (found === "intermediate_not_ca") sawNonCA = true;
  }
  return sawNonCA ? "intermediate_not_ca" : "chain_unverified";
}

/** The time-independent part of verification; cached per presented chain. */
function verifyStatic(chain: readonly Buffer[], bundles: BundleSet, maxChainLength: number): SvidResult {
  if (chain.length === 0) return fail("no_certificate", "peer presented no certificate");
  if (chain.length > maxChainLength) {
    return fail("chain_too_long", `peer presented ${chain.length} certificates, more than the limit of ${maxChainLength}`);
  }
  let certs: CertFacts[];
  try {
    certs = chain.map(parseCertificate);
  } catch (e) {
    if (e instanceof CertificateParseError) return fail("malformed", e.message);
    throw e;
  }
  const leaf = certs[0]!;
  const id = checkLeaf(leaf);
  if (!(id instanceof SpiffeId)) return id;
  const bundle = bundles.forTrustDomain(id.trustDomain);
  if (!bundle) return fail("untrusted_domain", `no trust bundle for trust domain ${id.trustDomain}`, leaf, id);
  const path = buildPath([leaf], certs.slice(1), bundle);
  if (path === "intermediate_not_ca") {
    return fail(path, "an intermediate in the chain is not a CA with keyCertSign", leaf, id);
  }
  if (path === "chain_unverified") {
    return fail(path, `certificate chain does not lead to a root of trust domain ${id.trustDomain}`, leaf, id);
  }
  const notBefore = Math.max(...path.map((c) => c.notBefore));
  const notAfter = Math.min(...path.map((c) => c.notAfter));
  return { ok: true, svid: { id, leaf, path, notBefore, notAfter } };
}

function checkWindow(svid: VerifiedSvid, now: number): SvidResult {
  if (now < svid.notBefore) {
    const c = svid.path.find((p) => p.notBefore === svid.notBefore)!;
    return fail("not_yet_valid", `${describe(svid, c)} is not valid before ${new Date(c.notBefore).toISOString()}`, svid.leaf, svid.id);
  }
  if (now > svid.notAfter) {
    const c = svid.path.find((p) => p.notAfter === svid.notAfter)!;
    return fail("expired", `${describe(svid, c)} expired at ${new Date(c.notAfter).toISOString()}`, svid.leaf, svid.id);
  }
  return { ok: true, svid };
}

function describe(svid: VerifiedSvid, c: CertFacts): string {
  const i = svid.path.indexOf(c);
  if (i === 0) return "leaf certificate";
  return i === svid.path.length - 1 ? "root certificate" : `intermediate certificate #${i}`;
}

/**
 * Verifies presented chains against one BundleSet. Results of the costly, time-independent checks are
 * cached per chain (a mesh peer reconnects with the same SVID until it rotates); dates are checked on
 * every call. A new BundleSet gets a new verifier, so a cache never outlives its bundles.
 */
export class SvidVerifier {
  private readonly cache = new Map<string, SvidResult>();
  private readonly maxChainLength: number;
  private readonly cacheSize: number;

  constructor(
    readonly bundles: BundleSet,
    options: SvidVerifierOptions = {},
  ) {
    this.maxChainLength = options.maxChainLength ?? 8;
    this.cacheSize = options.cacheSize ?? 10_000;
  }

  verify(chain: readonly Buffer[], now: number): SvidResult {
    if (chain.length > this.maxChainLength) return verifyStatic(chain, this.bundles, this.maxChainLength);
    const key = chain.map(fingerprintOf).join(":");
    let result = this.cache.get(key);
    if (result === undefined) {
      result = verifyStatic(chain, this.bundles, this.maxChainLength);
      if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, result);
    }
    return result.ok ? checkWindow(result.svid, now) : result;
  }
}
