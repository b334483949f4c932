// Building decision-log records from the values the data path already holds: a connection's facts, the
// peer's verification result and the decision. One place, so the schema in the README has one source.
import type { SvidResult } from "../spiffe/x509svid.js";
import type { Decision, Obligations } from "../policy/decision.js";
import type { TaskLimits } from "../policy/model.js";
import type { DecisionRecord } from "./log.js";

export interface ConnectionView {
  readonly source: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  readonly tlsVersion: string | null;
}

export interface NegotiationView {
  readonly purpose?: string;
  readonly requestedRoles: readonly string[];
  readonly approver?: string;
  readonly grant?: { readonly id: string; readonly roles: readonly string[] };
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
          },
        }
      : {}),
    ...(f.negotiationRule ? { negotiation_rule: f.negotiationRule } : {}),
    decision_us: Math.round(f.decisionUs * 10) / 10,
  };
}

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
