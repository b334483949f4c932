// Certification path building and validation by RFC 5280 §6.1, from a leaf through the intermediates a
// peer presented to a trust anchor of one trust domain's bundle, with bounded work.
//
// Building (RFC 4158 in spirit): depth-first from the leaf; issuer candidates are those whose subject
// equals the certificate's issuer (and whose key identifier does not contradict its authority key
// identifier); anchors are tried before intermediates. A certificate whose name and key already appear
// in the path is not added again (loop detection), so N copies of one self-issued CA cost one step.
// Each signature is checked at most once per (certificate, key), and the search stops when its budget
// of signature checks or candidates is spent: the caller denies with `path_budget_exhausted`.
//
// Validation of a complete path (§6.1.3, §6.1.4): no repeated extension (§4.2), no unrecognised
// critical extension, signature algorithm and key above the floor, intermediates with cA=true and
// (when key usage is present) keyCertSign, path length constraints, and name constraints of every CA
// above a certificate (the anchor's too, as RFC 5937 allows) on its subject and subjectAltName names
// (self-issued intermediates exempt, §6.1.3 (b)). Validity dates are checked by the caller, per call.
import type { SvidWorkCounts } from "./work.js";
import { signatureValid, weakKey, weakSignature, type CryptoFloor } from "./algorithms.js";
import { violation, type GeneralName } from "./names.js";
import { KeyUsageFlags, OID, type CertFacts } from "./x509cert.js";

/** The rules a path can break; each a stable `svid_rule`. */
export const PATH_RULES = [
  "chain_unverified",
  "intermediate_not_ca",
  "path_length",
  "name_constraints",
  "unknown_critical_extension",
  "duplicate_extension",
  "weak_signature_algorithm",
  "weak_key",
  "path_budget_exhausted",
] as const;

export type PathRule = (typeof PATH_RULES)[number];

export interface PathBudget {
  /** Most signature verifications per verification call. */
  readonly maxSignatureChecks: number;
  /** Most issuer candidates considered per verification call. */
  readonly maxCandidates: number;
}

export const DEFAULT_BUDGET: PathBudget = { maxSignatureChecks: 12, maxCandidates: 64 };

export type PathOutcome = { ok: true; path: CertFacts[] } | { ok: false; rule: PathRule; message: string };

/** Extensions parley processes; any other marked critical refuses the certificate (§4.2). */
const RECOGNISED = new Set<string>([
  OID.basicConstraints,
  OID.keyUsage,
  OID.extKeyUsage,
  OID.subjectAltName,
  OID.nameConstraints,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
  // No certificate policy is required (initial-explicit-policy false, §6.1.1), so a critical policies
  // extension cannot change the outcome; policyConstraints and policy mappings are not recognised.
  OID.certificatePolicies,
]);

type Failure = { rule: PathRule; message: string };

/** Checks that hold for each certificate alone: extensions once, none unknown and critical, crypto floor. */
export function certificateFailure(cert: CertFacts, what: string, floor: CryptoFloor): Failure | undefined {
  if (cert.duplicateExtension)
    return { rule: "duplicate_extension", message: `${what} has extension ${cert.duplicateExtension} more than once (RFC 5280 §4.2)` };
  const unknown = cert.extensions.find((e) => e.critical && !RECOGNISED.has(e.oid));
  if (unknown) return { rule: "unknown_critical_extension", message: `${what} has an unrecognised critical extension ${unknown.oid} (RFC 5280 §4.2)` };
  const sig = weakSignature(cert, floor);
  if (sig) return { rule: "weak_signature_algorithm", message: `${what}: ${sig}` };
  const key = weakKey(cert, floor);
  if (key) return { rule: "weak_key", message: `${what}: ${key}` };
  return undefined;
}

function namesOf(cert: CertFacts): GeneralName[] {
  const names: GeneralName[] = [...cert.sans, ...cert.subject.emails.map((value) => ({ kind: "email" as const, value }))];
  if (cert.subject.rdns.length > 0) names.push({ kind: "dn", name: cert.subject });
  return names;
}

function label(i: number, n: number): string {
  return i === 0 ? "leaf certificate" : i === n - 1 ? "trust anchor" : `intermediate certificate #${i}`;
}

/** §6.1 over a complete path [leaf, …, anchor]; the first rule broken, or undefined. */
export function validatePath(path: readonly CertFacts[], floor: CryptoFloor): Failure | undefined {
  const n = path.length;
  const anchor = path[n - 1];
  if (!anchor) return { rule: "chain_unverified", message: "an empty path" };
  const anchorKey = weakKey(anchor, floor);
  if (anchorKey) return { rule: "weak_key", message: `trust anchor: ${anchorKey}` };
  let maxPathLength = anchor.pathLen ?? n;
  const constraints = anchor.nameConstraints ? [{ nc: anchor.nameConstraints, by: n - 1 }] : [];
  for (const [i, cert] of [...path.slice(0, -1).entries()].reverse()) {
    const what = label(i, n);
    const own = certificateFailure(cert, what, floor);
    if (own) return own;
    const selfIssued = cert.subject.key === cert.issuer.key;
    if (!selfIssued || i === 0) {
      for (const { nc, by } of constraints) {
        const v = violation(namesOf(cert), nc);
        if (v) return { rule: "name_constraints", message: `${what}: ${v} of the name constraints of ${label(by, n)}` };
      }
    }
    if (i === 0) break;
    if (!cert.isCA) return { rule: "intermediate_not_ca", message: `${what} is not a CA (basicConstraints cA=false, RFC 5280 §6.1.4 (k))` };
    if (cert.keyUsage !== null && (cert.keyUsage & KeyUsageFlags.keyCertSign) === 0) {
      return { rule: "intermediate_not_ca", message: `${what} has key usage without keyCertSign (RFC 5280 §6.1.4 (n))` };
    }
    if (!selfIssued) {
      if (maxPathLength <= 0) return { rule: "path_length", message: `${what} exceeds the path length constraint of a CA above it (RFC 5280 §6.1.4 (l))` };
      maxPathLength--;
    }
    if (cert.pathLen !== undefined && cert.pathLen < maxPathLength) maxPathLength = cert.pathLen;
    if (cert.nameConstraints) constraints.push({ nc: cert.nameConstraints, by: i });
  }
  return undefined;
}

/** One search: the leaf, the presented intermediates, the domain's anchors, and its budget. */
class PathSearch {
  private checks = 0;
  private candidates = 0;
  exhausted = false;
  firstFailure: Failure | undefined;
  private readonly memo = new Map<CertFacts, Map<string, boolean>>();

  constructor(
    private readonly intermediates: readonly CertFacts[],
    private readonly anchors: readonly CertFacts[],
    private readonly floor: CryptoFloor,
    private readonly budget: PathBudget,
    private readonly counters: SvidWorkCounts,
  ) {}

  /** May `issuer` have issued `cert`, by names and key identifiers alone? */
  private mayIssue(cert: CertFacts, issuer: CertFacts): boolean {
    if (cert.issuer.key !== issuer.subject.key) return false;
    return cert.authorityKeyId === undefined || issuer.subjectKeyId === undefined || cert.authorityKeyId === issuer.subjectKeyId;
  }

  private signedBy(cert: CertFacts, issuer: CertFacts): boolean {
    let byKey = this.memo.get(cert);
    if (!byKey) this.memo.set(cert, (byKey = new Map<string, boolean>()));
    const key = issuer.spki.toString("latin1");
    const known = byKey.get(key);
    if (known !== undefined) return known;
    if (this.checks >= this.budget.maxSignatureChecks) {
      this.exhausted = true;
      return false;
    }
    this.checks++;
    this.counters.inc("svid.signature_checks");
    const ok = signatureValid(cert, issuer);
    byKey.set(key, ok);
    return ok;
  }

  /** Counts a candidate; false once the budget of candidates is spent. */
  private take(): boolean {
    if (++this.candidates > this.budget.maxCandidates) this.exhausted = true;
    return !this.exhausted;
  }

  search(path: CertFacts[], cert: CertFacts): CertFacts[] | undefined {
    for (const anchor of this.anchors) {
      if (!this.mayIssue(cert, anchor)) continue;
      if (!this.take()) return undefined;
      if (!this.signedBy(cert, anchor)) {
        if (this.exhausted) return undefined;
        continue;
      }
      const full = [...path, anchor];
      const failure = validatePath(full, this.floor);
      if (!failure) return full;
      this.firstFailure ??= failure;
    }
    for (const next of this.intermediates) {
      if (!this.mayIssue(cert, next) || path.some((p) => p === next || (p.subject.key === next.subject.key && p.spki.equals(next.spki)))) continue;
      if (!this.take()) return undefined;
      if (this.signedBy(cert, next)) {
        const found = this.search([...path, next], next);
        if (found) return found;
      }
      if (this.exhausted) return undefined;
    }
    return undefined;
  }
}

/** Finds a valid path from `leaf` to one of `anchors`, within `budget`. */
export function findPath(
  leaf: CertFacts,
  intermediates: readonly CertFacts[],
  anchors: readonly CertFacts[],
  floor: CryptoFloor,
  budget: PathBudget,
  counters: SvidWorkCounts,
): PathOutcome {
  // Of anchors sharing a name and key (a re-issued root), the one valid longest is tried first.
  const byExpiry = [...anchors].sort((x, y) => y.notAfter - x.notAfter);
  const s = new PathSearch(intermediates, byExpiry, floor, budget, counters);
  const path = s.search([leaf], leaf);
  if (path) return { ok: true, path };
  if (s.exhausted) {
    counters.inc("svid.path_budget_exhausted");
    return {
      ok: false,
      rule: "path_budget_exhausted",
      message: `path building gave up after its budget (${budget.maxSignatureChecks} signature checks, ${budget.maxCandidates} candidates)`,
    };
  }
  return s.firstFailure ? { ok: false, ...s.firstFailure } : { ok: false, rule: "chain_unverified", message: "" };
}
