// Revocations: named entries, each with a reason, an `until` and what it revokes (a task `txn`, an
// approval token `jti`, a grant id, a SPIFFE ID exactly or as a path prefix, a leaf certificate's
// SHA-256 fingerprint, or an attestor). A session matching a live entry is denied, and ended at once
// when already running, with the reason code of the matcher that caught it. An entry past its `until`
// is ignored, and dropped (`live`) whenever the sidecar builds its state: no list outgrows MAX_MATCHERS.
import type { SpiffeId } from "../spiffe/spiffeid.js";
import { denyOutsidePolicy, type Deny } from "./decision.js";
import type { Policy } from "./model.js";
import { describeMatcher, IdentityIndex, type IdentityMatcher } from "./matcher.js";
import type { ReasonCode } from "./reasons.js";

/** At most this many matchers over every entry of a configuration (README, "Revocations"). */
export const MAX_MATCHERS = 10_000;

export type RevocationKey = "txn" | "jti" | "grant" | "cert_fingerprint" | "attestor";

export type RevocationMatcher = { readonly kind: RevocationKey; readonly value: string } | { readonly kind: "identity"; readonly matcher: IdentityMatcher };

export interface RevocationEntry {
  readonly name: string;
  readonly reason: string;
  /** Milliseconds since the epoch; the entry is ignored from then on. */
  readonly until: number;
  readonly match: readonly RevocationMatcher[];
}

/** What a session knows that a revocation can name. */
export interface RevocationSubject {
  readonly peer?: SpiffeId;
  /** Hex SHA-256 of the leaf's DER (lower case). */
  readonly certFingerprint?: string;
  readonly txn?: string;
  readonly jti?: string;
  readonly grant?: string;
  /** Attestors whose evidence the session was decided with. */
  readonly attestors?: readonly string[];
}

export interface RevocationHit {
  readonly code: Extract<ReasonCode, `${string}_revoked`>;
  readonly entry: string;
  readonly reason: string;
  /** The matcher that caught the session, as `kind value`. */
  readonly match: string;
}

const CODES: Record<RevocationMatcher["kind"], RevocationHit["code"]> = {
  grant: "grant_revoked",
  jti: "token_revoked",
  txn: "task_revoked",
  cert_fingerprint: "certificate_revoked",
  identity: "identity_revoked",
  attestor: "attestor_revoked",
};

type Indexed = { readonly entry: RevocationEntry; readonly matcher: RevocationMatcher };

/** The entries in force, indexed: a lookup costs the ID's depth and a few map reads, not the list's length. */
export class RevocationList {
  private readonly byValue = new Map<string, Indexed[]>();
  private readonly ids = new IdentityIndex<Indexed>();

  constructor(readonly entries: readonly RevocationEntry[] = []) {
    for (const entry of entries) {
      for (const matcher of entry.match) {
        if (matcher.kind === "identity") this.ids.add(matcher.matcher, { entry, matcher });
        else {
          const key = `${matcher.kind}\0${matcher.value}`;
          const list = this.byValue.get(key) ?? [];
          list.push({ entry, matcher });
          this.byValue.set(key, list);
        }
      }
    }
  }

  get size(): number {
    return this.entries.length;
  }

  /** The entries still in force at `now` (the same list when none expired). */
  live(now: number): RevocationList {
    const kept = this.entries.filter((e) => e.until > now);
    return kept.length === this.entries.length ? this : new RevocationList(kept);
  }

  /** The first live entry matching `s`, most specific matcher first (grant, token, task, certificate, identity, attestor). */
  match(s: RevocationSubject, now: number): RevocationHit | undefined {
    if (this.entries.length === 0) return undefined;
    const candidates: (Indexed | undefined)[] = [
      this.first("grant", s.grant, now),
      this.first("jti", s.jti, now),
      this.first("txn", s.txn, now),
      this.first("cert_fingerprint", s.certFingerprint, now),
      s.peer ? this.ids.lookup(s.peer).find((x) => x.entry.until > now) : undefined,
      ...(s.attestors ?? []).map((a) => this.first("attestor", a, now)),
    ];
    const hit = candidates.find((c) => c !== undefined);
    return hit && { code: CODES[hit.matcher.kind], entry: hit.entry.name, reason: hit.entry.reason, match: describe(hit.matcher) };
  }

  private first(kind: RevocationKey, value: string | undefined, now: number): Indexed | undefined {
    return value === undefined ? undefined : this.byValue.get(`${kind}\0${value}`)?.find((x) => x.entry.until > now);
  }
}

export function describe(m: RevocationMatcher): string {
  return m.kind === "identity" ? describeMatcher(m.matcher) : `${m.kind} ${m.value}`;
}

/**
 * The denial of `subject` when a live entry names it: checked before `policy`'s rules (no rule can
 * admit what a revocation names), the reason the matcher's code, `detail` naming entry, matcher, reason.
 */
export function revocationDenial(list: RevocationList, policy: Policy, subject: RevocationSubject, now: number): Deny | undefined {
  const hit = list.match(subject, now);
  if (!hit) return undefined;
  return { ...denyOutsidePolicy(policy, "revoked", [hit.code], revocationDetail(hit)), revocation: hit };
}

/** How a hit is told, inbound and outbound alike: the entry, the matcher that caught, the reason. */
export const revocationDetail = (hit: RevocationHit): string => `revoked by ${hit.entry} (${hit.match}): ${hit.reason}`;
