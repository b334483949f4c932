// The decision as a union: Allow (with the obligations the session lives under) | Deny (with its
// reasons and the stage that refused). decide() makes them from a policy; the other stages that can
// refuse a session (fail closed, negotiation, admission) make theirs with the builders here.
import type { SvidRule } from "../spiffe/x509svid.js";
import type { SpiffeId } from "../spiffe/spiffeid.js";
import type { Action, Limits, Mode, Policy, TaskLimits } from "./model.js";
import type { Reason } from "./reasons.js";
import type { ApprovalFacts } from "./approval.js";
import type { AttestationRecord } from "./attestation.js";
import type { RevocationHit } from "./revocation.js";

/** What decide() needs of a verified peer; a VerifiedSvid fits, and so does a bare ID for offline checks. */
export interface PeerIdentity {
  readonly id: SpiffeId;
  readonly leaf?: { readonly notBefore: number; readonly notAfter: number; readonly fingerprint: string };
  /** End of the whole chain's validity (earliest notAfter on the path). */
  readonly notAfter?: number;
}

export type PeerResult = { readonly ok: true; readonly svid: PeerIdentity } | { readonly ok: false; readonly rule: SvidRule; readonly message: string };

export interface DecisionInput {
  readonly listener: string;
  readonly sourceAddress: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  /** Milliseconds since the epoch. */
  readonly now: number;
  /** The outcome of X509-SVID verification of the peer's chain. */
  readonly peer: PeerResult;
  /** Attestation evidence about this peer. */
  readonly attestations?: readonly AttestationRecord[];
  /** Roles granted by a verified task-approval token, on top of role bindings. */
  readonly grantedRoles?: readonly string[];
  /** The verified task approval (delegation chain, transaction context), for the rules that read it. */
  readonly approval?: ApprovalFacts;
}

export interface Obligations extends Limits {
  /** When the session must end at the latest, and why. */
  readonly expiresAt?: number;
  readonly expiresBecause?: "max_duration" | "certificate" | "attestation" | "approval" | "grant";
}

/** Obligations as they are written out: in the decision log, the grant frame and the grant JWT alike. */
export function obligationsRecord(o: Obligations): Record<string, number | string> {
  const r: Record<string, number | string> = {};
  if (o.expiresAt !== undefined) {
    r.expires_at = new Date(o.expiresAt).toISOString();
    r.expires_because = o.expiresBecause!;
  }
  if (o.maxDurationMs !== undefined) r.max_duration_ms = o.maxDurationMs;
  if (o.idleTimeoutMs !== undefined) r.idle_timeout_ms = o.idleTimeoutMs;
  if (o.byteBudget !== undefined) r.byte_budget = o.byteBudget;
  if (o.bandwidthBps !== undefined) r.bandwidth_bps = o.bandwidthBps;
  if (o.identityBandwidthBps !== undefined) r.identity_bandwidth_bps = o.identityBandwidthBps;
  if (o.rate !== undefined) r.rate = `${o.rate.perSecond}/s burst ${o.rate.burst}${o.rate.shared ? " shared" : ""}`;
  if (o.maxSessions !== undefined) r.max_sessions = o.maxSessions;
  if (o.maxSessionsShared) r.max_sessions_scope = "shared";
  if (o.perTask !== undefined) r.per_task = taskText(o.perTask);
  if (o.maxWaitMs !== undefined) r.max_wait_ms = o.maxWaitMs;
  return r;
}

/** A task's bound as one string: "4 sessions, 30/min burst 10 shared". */
function taskText(t: TaskLimits): string {
  const parts = [
    ...(t.maxSessions !== undefined ? [`${t.maxSessions} sessions`] : []),
    ...(t.rate ? [`${t.rate.perSecond * 60}/min burst ${t.rate.burst}`] : []),
  ];
  return `${parts.join(", ")}${t.shared ? " shared" : ""}`;
}

/** Why one rule did or did not apply. */
export interface RuleTrace {
  readonly rule: string;
  readonly action: Action;
  readonly mode: Mode;
  readonly outcome: "applied" | "would_deny" | "identity_not_matched" | "requirements_unmet" | "not_reached";
  readonly reasons: readonly Reason[];
  readonly details: readonly string[];
}

interface Decided {
  /** The rule that decided; null for the policy default or a failed SVID. */
  readonly rule: string | null;
  readonly reasons: readonly Reason[];
  readonly policy: string;
  readonly policyVersion: string;
  readonly mode: Mode;
  /** Roles the peer holds (bindings and grants). */
  readonly roles: readonly string[];
  /** When the SVID failed verification: the rule it broke and why. */
  readonly svidRule?: SvidRule;
  readonly detail?: string;
  /** With `explain`: every rule of the policy and why it did or did not apply. */
  readonly explain?: readonly RuleTrace[];
}

/** An admitted session and the limits it lives under. */
export interface Allow extends Decided {
  readonly decision: "allow";
  readonly obligations: Obligations;
  /** Set when audit mode admitted what enforce mode would have denied. */
  readonly wouldDeny?: { readonly rule: string | null; readonly reasons: readonly Reason[] };
}

/** Which stage refused: the SVID, the policy, a sidecar failing closed, a revocation, negotiation or admission. */
export type DenyCause = "svid" | "policy" | "fail_closed" | "revoked" | "negotiation" | "admission";

export interface Deny extends Decided {
  readonly decision: "deny";
  readonly cause: DenyCause;
  /** With cause `revoked`: the entry and matcher that caught the session. */
  readonly revocation?: RevocationHit;
}

export type Decision = Allow | Deny;

/** A denial outside the policy's own rules (fail closed, negotiation): the policy named, no rule. */
export function denyOutsidePolicy(policy: Policy, cause: DenyCause, reasons: readonly Reason[], detail?: string): Deny {
  return {
    decision: "deny",
    cause,
    rule: null,
    reasons,
    policy: policy.name,
    policyVersion: policy.version,
    mode: policy.mode,
    roles: [],
    ...(detail !== undefined ? { detail } : {}),
  };
}

/** An allowed session refused afterwards by admission (rate or concurrency): the rule stays named. */
export function denyAdmission(allowed: Allow, reason: Reason, detail: string): Deny {
  const { obligations: _o, wouldDeny: _w, ...rest } = allowed;
  return { ...rest, decision: "deny", cause: "admission", reasons: [reason], detail };
}
