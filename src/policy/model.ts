// A compiled policy: validated, immutable data with its indexes built. Made by compile.ts at load,
// evaluated by decide().
import type { ClaimValue } from "./attestation.js";
import type { EarRequirement } from "./ear.js";
import type { IdentityIndex, IdentityMatcher } from "./matcher.js";

export type Action = "allow" | "deny";
export type Mode = "enforce" | "audit";

/** What an allowed session must live under. All optional; absent = unbounded. */
export interface Limits {
  readonly maxDurationMs?: number;
  readonly idleTimeoutMs?: number;
  readonly byteBudget?: number;
  /** Bytes per second, each direction, for this session. */
  readonly bandwidthBps?: number;
  /** Bytes per second, each direction, for all sessions of the identity together. */
  readonly identityBandwidthBps?: number;
  /** New sessions per second (and burst) for one identity. */
  readonly rate?: { readonly perSecond: number; readonly burst: number; /** Drawn from the mesh-wide bucket (shared_limits). */ readonly shared?: true };
  /** Concurrent sessions of one identity. */
  readonly maxSessions?: number;
  /** `maxSessions` counts the identity's sessions on every sidecar of the mesh (leases, shared_limits). */
  readonly maxSessionsShared?: true;
  /** Bounds on the sessions of one task (the approval's `txn`); sessions without a txn are not subject. */
  readonly perTask?: TaskLimits;
  /** Over a rate or concurrency bound: hold the session this long for a token or slot, then reject. */
  readonly maxWaitMs?: number;
}

/** A task's own bound: its concurrent sessions and its new sessions per minute (burst). */
export interface TaskLimits {
  readonly maxSessions?: number;
  readonly rate?: { readonly perSecond: number; readonly burst: number };
  /** Counted across the mesh (shared_limits) rather than by this sidecar alone. */
  readonly shared?: true;
}

export interface TimeWindow {
  /** IANA zone name, e.g. Europe/Paris. */
  readonly zone: string;
  /** 0 = Sunday … 6 = Saturday. */
  readonly days: ReadonlySet<number>;
  /** Minutes after local midnight; `to <= from` spans midnight. */
  readonly from: number;
  readonly to: number;
}

export interface Conditions {
  /** Matches when the source address is in any of these subnets (node's BlockList). */
  readonly sourceCidrs?: { readonly list: import("node:net").BlockList; readonly text: readonly string[] };
  /** Exact names or `*.example.org` (one label). */
  readonly sni?: readonly string[];
  readonly alpn?: readonly string[];
  readonly listeners?: readonly string[];
  readonly time?: readonly TimeWindow[];
  /** Rejects certificates whose total lifetime (notAfter − notBefore) is longer. */
  readonly maxCertLifetimeMs?: number;
  /** Rejects certificates with more than this left before notAfter. */
  readonly maxCertRemainingMs?: number;
  /** The approval's `sub` (the subject acted for, or a Transaction Token's principal) is one of these. */
  readonly actingFor?: readonly string[];
  /** Some actor of the approval's delegation chain (RFC 8693 §4.1) matches one of these. */
  readonly actors?: { readonly index: IdentityIndex<true>; readonly text: readonly string[] };
  /** A Transaction Token's `tctx` / `rctx` claims (dotted paths) → accepted values. */
  readonly tctx?: ReadonlyMap<string, readonly ClaimValue[]>;
  readonly rctx?: ReadonlyMap<string, readonly ClaimValue[]>;
}

export interface AttestationRequirement {
  readonly attestor: string;
  /** Claim (dotted path) → accepted values (one for an exact value). */
  readonly claims: ReadonlyMap<string, readonly (string | number | boolean)[]>;
  readonly maxAgeMs?: number;
  /** For an EAR attestation result: the appraisal statuses required. */
  readonly ear?: EarRequirement;
}

export interface Rule {
  readonly name: string;
  /** Position in the file; allow rules are tried in this order. */
  readonly order: number;
  readonly action: Action;
  readonly mode: Mode;
  /** Empty = every verified peer. */
  readonly match: readonly IdentityMatcher[];
  readonly roles: readonly string[];
  readonly attestation?: AttestationRequirement;
  readonly conditions: Conditions;
  readonly limits: Limits;
  /** At most this many actors in the approval's delegation chain (0: no delegation). */
  readonly maxDelegationDepth?: number;
}

export interface Policy {
  readonly name: string;
  readonly default: Action;
  readonly mode: Mode;
  readonly rules: readonly Rule[];
  /** Limits for every allowed session; a rule's own limits override them one by one. */
  readonly limits: Limits;
  /** Rules by identity, so a decision looks only at rules that can match the peer. */
  readonly index: IdentityIndex<Rule>;
  /** Role bindings: role names by identity. */
  readonly roles: IdentityIndex<string>;
  /** Identifies the configuration this policy came from; logged with every decision. */
  readonly version: string;
}
