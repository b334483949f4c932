// Building decision-log records from the values the data path already holds: a connection's facts, the
// peer's verification result and the decision. One place, so the schema in the README has one source.
import type { SvidResult } from "../spiffe/x509svid.js";
import type { AttestationRecord } from "../policy/attestation.js";
import { obligationsRecord, type Decision } from "../policy/decision.js";
import type { DecisionRecord } from "./log.js";

export interface ConnectionView {
  readonly source: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  readonly tlsVersion: string | null;
  readonly target?: string;
}

export interface NegotiationView {
  readonly purpose?: string;
  readonly requestedRoles: readonly string[];
  readonly approver?: string;
  readonly grant?: { readonly id: string; readonly roles: readonly string[] };
  /** The approval's kind, task, whom it acts for, its delegation chain (current actor first) and requesting workload. */
  readonly approval?: {
    readonly kind: string;
    readonly txn?: string;
    readonly subject: string;
    readonly actors: readonly string[];
    readonly requester?: string;
  };
  /** EAR attestation results: the overall status by verifier. */
  readonly attestationResults?: Readonly<Record<string, string>>;
}

export interface DecisionFacts {
  readonly sessionId: string;
  readonly listener: string;
  readonly connection: ConnectionView;
  readonly peer: SvidResult;
  readonly decision: Decision;
  readonly decisionUs: number;
  readonly heldMs?: number;
  readonly negotiation?: NegotiationView;
  readonly negotiationRule?: string;
}

export function decisionRecord(f: DecisionFacts): DecisionRecord {
  const { peer, decision: d, connection: c, negotiation: n } = f;
  const id = peer.ok ? peer.svid.id : peer.id;
  const leaf = peer.ok ? peer.svid.leaf : peer.leaf;
  return {
    session_id: f.sessionId,
    listener: f.listener,
    decision: d.decision,
    rule: d.rule,
    reasons: d.reasons,
    policy: d.policy,
    policy_version: d.policyVersion,
    peer_id: id?.toString() ?? null,
    trust_domain: id?.trustDomain.name ?? null,
    cert_serial: leaf?.serial ?? null,
    cert_fingerprint: leaf?.fingerprint ?? null,
    source: c.source,
    sni: c.sni,
    alpn: c.alpn,
    tls_version: c.tlsVersion,
    ...(c.target !== undefined ? { target: c.target } : {}),
    mode: d.mode,
    roles: d.roles,
    ...(d.decision === "allow" && d.wouldDeny ? { would_deny: true, would_deny_rule: d.wouldDeny.rule, would_deny_reasons: d.wouldDeny.reasons } : {}),
    ...(d.decision === "allow" ? { obligations: obligationsRecord(d.obligations) } : {}),
    ...(d.svidRule ? { svid_rule: d.svidRule } : {}),
    ...(d.detail ? { detail: d.detail } : {}),
    ...(f.heldMs ? { held_ms: f.heldMs } : {}),
    ...(n
      ? {
          negotiation: {
            purpose: n.purpose ?? null,
            requested_roles: n.requestedRoles,
            ...(n.grant ? { grant_id: n.grant.id, granted_roles: n.grant.roles } : {}),
            ...(n.approver ? { approver: n.approver } : {}),
            ...(n.approval ? { approval: approvalRecord(n.approval) } : {}),
            ...(n.attestationResults ? { attestation_results: n.attestationResults } : {}),
          },
        }
      : {}),
    ...(f.negotiationRule ? { negotiation_rule: f.negotiationRule } : {}),
    decision_us: Math.round(f.decisionUs * 10) / 10,
  };
}

/** The overall status of each EAR attestation result among `evidence`, for the decision log. */
export function earStatuses(evidence: readonly AttestationRecord[]): { attestationResults?: Record<string, string> } {
  const results = evidence.flatMap((e) => (e.ear ? [[e.attestor, e.ear.overall] as const] : []));
  return results.length > 0 ? { attestationResults: Object.fromEntries(results) } : {};
}

function approvalRecord(a: NonNullable<NegotiationView["approval"]>): Record<string, unknown> {
  return {
    kind: a.kind,
    ...(a.txn !== undefined ? { txn: a.txn } : {}),
    subject: a.subject,
    actors: a.actors,
    ...(a.requester !== undefined ? { requester: a.requester } : {}),
  };
}
