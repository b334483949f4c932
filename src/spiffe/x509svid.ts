// X509-SVID verification per the SPIFFE X509-SVID standard: the leaf's rules (§4, §5), then an RFC 5280
// certification path (src/spiffe/pathvalidation.ts) to a trust anchor of the bundle of the leaf ID's
// own trust domain — never to the roots of another domain — within a budget of work per call.
import { DEFAULT_FLOOR, weakKey, weakSignature, type CryptoFloor } from "./algorithms.js";
import { SvidWorkCounts } from "./work.js";
import { DEFAULT_BUDGET, findPath, type PathBudget, type PathRule } from "./pathvalidation.js";
import { SpiffeId, SpiffeIdError } from "./spiffeid.js";
import type { BundleSet } from "./x509bundle.js";
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
  | "key_usage_not_critical"
  | "key_usage_no_digital_signature"
  | "key_usage_ca_bits"
  | "extended_key_usage"
  | "untrusted_domain"
  | "expired"
  | "not_yet_valid"
  | PathRule;

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
  /** Most verification results (per presented chain) and parsed certificates kept. */
  cacheSize?: number;
  /** Signature algorithms and key sizes accepted (default: no SHA-1, RSA of 2048 bits or more). */
  floor?: Partial<CryptoFloor>;
  /** Work allowed to path building per call. */
  budget?: Partial<PathBudget>;
  /** Where to count work done (default: counters of this verifier alone). */
  counters?: SvidWorkCounts;
}

const CA_BITS = KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign;
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

function fail(rule: SvidRule, message: string, leaf?: CertFacts, id?: SpiffeId): SvidResult {
  return { ok: false, rule, message, ...(leaf ? { leaf } : {}), ...(id ? { id } : {}) };
}

/** The leaf's ID, or why it has none (X509-SVID §2: exactly one URI SAN, a SPIFFE ID with a path). */
function leafId(leaf: CertFacts): SpiffeId | SvidResult {
  if (leaf.duplicateExtension)
    return fail("duplicate_extension", `leaf certificate has extension ${leaf.duplicateExtension} more than once (RFC 5280 §4.2)`, leaf);
  const [uri, ...more] = leaf.uriSans;
  if (uri === undefined || more.length > 0) return fail("uri_san_count", `leaf must have exactly one URI SAN, found ${leaf.uriSans.length}`, leaf);
  const parsed = SpiffeId.tryParse(uri);
  if (parsed instanceof SpiffeIdError) return fail("id_invalid", `leaf URI SAN: ${parsed.message}`, leaf);
  return parsed;
}

/** The leaf rules that depend on the leaf alone (X509-SVID §4.1, §4.3, §4.4), and the crypto floor. */
function checkLeaf(leaf: CertFacts, floor: CryptoFloor): SvidResult | SpiffeId {
  const id = leafId(leaf);
  if (leaf.isCA) return fail("leaf_is_ca", "leaf certificate is a CA (basicConstraints cA=true)", leaf, id instanceof SpiffeId ? id : undefined);
  if (!(id instanceof SpiffeId)) return id;
  const known = id;
  if (known.path === "") return fail("id_no_path", `leaf SPIFFE ID ${known.toString()} has no path`, leaf, known);
  const f = (rule: SvidRule, message: string) => fail(rule, message, leaf, known);
  if (leaf.keyUsage === null) return f("key_usage_missing", "leaf certificate has no key usage extension");
  if (!leaf.keyUsageCritical) return f("key_usage_not_critical", "leaf key usage extension is not marked critical (X509-SVID §4.3)");
  if ((leaf.keyUsage & KeyUsageFlags.digitalSignature) === 0) return f("key_usage_no_digital_signature", "leaf key usage lacks digitalSignature");
  if ((leaf.keyUsage & CA_BITS) !== 0) return f("key_usage_ca_bits", "leaf key usage must not include keyCertSign or cRLSign");
  const eku = leaf.extKeyUsage;
  if (eku !== null && !(eku.includes(SERVER_AUTH) && eku.includes(CLIENT_AUTH))) {
    return f("extended_key_usage", "leaf extended key usage must include both serverAuth and clientAuth (X509-SVID §4.4)");
  }
  const sig = weakSignature(leaf, floor);
  if (sig) return f("weak_signature_algorithm", `leaf certificate: ${sig}`);
  const key = weakKey(leaf, floor);
  if (key) return f("weak_key", `leaf certificate: ${key}`);
  return known;
}

function checkWindow(svid: VerifiedSvid, now: number): SvidResult {
  if (now < svid.notBefore) {
    const i = svid.path.findIndex((p) => p.notBefore === svid.notBefore);
    return fail("not_yet_valid", `${describe(svid, i)} is not valid before ${new Date(svid.notBefore).toISOString()}`, svid.leaf, svid.id);
  }
  if (now > svid.notAfter) {
    const i = svid.path.findIndex((p) => p.notAfter === svid.notAfter);
    return fail("expired", `${describe(svid, i)} expired at ${new Date(svid.notAfter).toISOString()}`, svid.leaf, svid.id);
  }
  return { ok: true, svid };
}

/**
 * A verification's `result` as of `now`: its time-independent part stands (it depends on the chain and
 * the bundles alone), its validity window is checked again, as `SvidVerifier.verify` would at `now`.
 */
export function resultAt(result: SvidResult, now: number): SvidResult {
  return result.ok ? checkWindow(result.svid, now) : result;
}

function describe(svid: VerifiedSvid, i: number): string {
  if (i === 0) return "leaf certificate";
  return i === svid.path.length - 1 ? "root certificate" : `intermediate certificate #${i}`;
}

/** A Map that forgets its oldest entry past `size`. */
class BoundedCache<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly size: number) {}
  get(key: string): V | undefined {
    return this.map.get(key);
  }
  set(key: string, value: V): void {
    const oldest = this.map.size >= this.size ? this.map.keys().next() : undefined;
    if (oldest && !oldest.done) this.map.delete(oldest.value);
    this.map.set(key, value);
  }
}

/**
 * Verifies presented chains against one BundleSet. Results of the time-independent checks are cached
 * per chain (a mesh peer reconnects with the same SVID until it rotates) and parsed certificates per
 * fingerprint (intermediates shared by many leaves), both bounded; dates are checked on every call.
 * A new BundleSet gets a new verifier, so a cache never outlives its bundles.
 */
export class SvidVerifier {
  private readonly results: BoundedCache<SvidResult>;
  private readonly parsed: BoundedCache<CertFacts>;
  private readonly maxChainLength: number;
  private readonly floor: CryptoFloor;
  private readonly budget: PathBudget;
  /** Work done: `svid.signature_checks`, `svid.path_budget_exhausted` (the sidecar's, when given). */
  readonly counters: SvidWorkCounts;

  constructor(
    readonly bundles: BundleSet,
    options: SvidVerifierOptions = {},
  ) {
    this.maxChainLength = options.maxChainLength ?? 8;
    const cacheSize = options.cacheSize ?? 10_000;
    this.results = new BoundedCache(cacheSize);
    this.parsed = new BoundedCache(cacheSize);
    this.floor = { ...DEFAULT_FLOOR, ...options.floor };
    this.budget = { ...DEFAULT_BUDGET, ...options.budget };
    this.counters = options.counters ?? new SvidWorkCounts();
  }

  verify(chain: readonly Buffer[], now: number): SvidResult {
    if (chain.length === 0) return fail("no_certificate", "peer presented no certificate");
    if (chain.length > this.maxChainLength) {
      return fail("chain_too_long", `peer presented ${chain.length} certificates, more than the limit of ${this.maxChainLength}`);
    }
    const fingerprints = chain.map(fingerprintOf);
    const key = fingerprints.join(":");
    let result = this.results.get(key);
    if (result === undefined) {
      result = this.verifyStatic(chain, fingerprints);
      this.results.set(key, result);
    }
    return resultAt(result, now);
  }

  private parse(der: Buffer, fingerprint: string): CertFacts {
    let facts = this.parsed.get(fingerprint);
    if (!facts) this.parsed.set(fingerprint, (facts = parseCertificate(der, fingerprint)));
    return facts;
  }

  /** The time-independent part of verification. */
  private verifyStatic(chain: readonly Buffer[], fingerprints: readonly string[]): SvidResult {
    let certs: CertFacts[];
    try {
      certs = chain.map((der, i) => this.parse(der, fingerprints[i] ?? fingerprintOf(der)));
    } catch (e) {
      if (e instanceof CertificateParseError) return fail("malformed", e.message);
      throw e;
    }
    const [leaf, ...intermediates] = certs;
    if (!leaf) return fail("no_certificate", "peer presented no certificate");
    const id = checkLeaf(leaf, this.floor);
    if (!(id instanceof SpiffeId)) return id;
    const bundle = this.bundles.forTrustDomain(id.trustDomain);
    if (!bundle) return fail("untrusted_domain", `no trust bundle for trust domain ${id.trustDomain.name}`, leaf, id);
    const found = findPath(leaf, intermediates, bundle.roots, this.floor, this.budget, this.counters);
    if (!found.ok) {
      const message = found.rule === "chain_unverified" ? `certificate chain does not lead to a root of trust domain ${id.trustDomain.name}` : found.message;
      return fail(found.rule, message, leaf, id);
    }
    const { path } = found;
    const notBefore = Math.max(...path.map((c) => c.notBefore));
    const notAfter = Math.min(...path.map((c) => c.notAfter));
    return { ok: true, svid: { id, leaf, path, notBefore, notAfter } };
  }
}
