// The connection-time decision: one typed input, one plain value out. Pure: no sockets, no clock, no
// logging. The proxy calls it once per connection; `parley check` calls it offline with explain on.
import type { SvidRule } from "../spiffe/x509svid.js";
import { tooDeep } from "./approval.js";
import { checkAttestation } from "./attestation.js";
import { failedConditions } from "./conditions.js";
import type { Limits, Mode, Policy, Rule } from "./model.js";
import type { Allow, Decision, DecisionInput, Deny, Obligations, PeerIdentity, RuleTrace } from "./decision.js";
import type { Reason } from "./reasons.js";

export interface DecideOptions {
  readonly explain?: boolean;
}

function svidReason(rule: SvidRule): Reason {
  if (rule === "no_certificate") return "no_client_cert";
  if (rule === "untrusted_domain") return "untrusted_domain";
  if (rule === "weak_signature_algorithm" || rule === "weak_key") return "weak_crypto";
  if (rule === "path_budget_exhausted") return "path_budget_exhausted";
  return "invalid_svid";
}

interface Context {
  readonly input: DecisionInput;
  readonly peer: PeerIdentity;
  readonly roles: readonly string[];
}

interface Unmet {
  readonly reasons: Reason[];
  readonly details: string[];
  /** Expiry of the attestation evidence that satisfied the rule. */
  attestedUntil?: number;
}

/** What keeps `rule` from applying to this peer (identity aside); empty reasons = it applies. */
function unmet(rule: Rule, ctx: Context): Unmet {
  const out: Unmet = { reasons: [], details: [] };
  const missing = rule.roles.filter((r) => !ctx.roles.includes(r));
  if (missing.length > 0) {
    out.reasons.push("role_missing");
    out.details.push(`missing role(s) ${missing.join(", ")}`);
  }
  if (rule.attestation) {
    const a = checkAttestation(rule.attestation, ctx.input.attestations ?? [], ctx.peer.leaf?.fingerprint, ctx.input.now);
    if (a.ok) out.attestedUntil = a.record.expiresAt;
    else {
      out.reasons.push(a.reason);
      out.details.push(a.detail);
    }
  }
  const deep = tooDeep(rule.maxDelegationDepth, ctx.input.approval);
  if (deep) {
    out.reasons.push("delegation_too_deep");
    out.details.push(deep);
  }
  const { input } = ctx;
  for (const f of failedConditions(rule.conditions, { ...input, cert: ctx.peer.leaf })) {
    out.reasons.push(`condition_failed:${f.name}`);
    out.details.push(f.detail);
  }
  return out;
}

/** The limits a session allowed by `rule` (none: the policy's default or audit) lives under. */
export function limitsOf(policy: Policy, rule: Rule | undefined): Limits {
  return { ...policy.limits, ...(rule?.limits ?? {}) };
}

function obligationsFor(policy: Policy, rule: Rule | undefined, ctx: Context, attestedUntil: number | undefined): Obligations {
  const limits = limitsOf(policy, rule);
  let expiresAt: number | undefined;
  let expiresBecause: Obligations["expiresBecause"];
  const bound = (at: number | undefined, why: NonNullable<Obligations["expiresBecause"]>) => {
    if (at !== undefined && (expiresAt === undefined || at < expiresAt)) {
      expiresAt = at;
      expiresBecause = why;
    }
  };
  bound(limits.maxDurationMs !== undefined ? ctx.input.now + limits.maxDurationMs : undefined, "max_duration");
  bound(ctx.peer.notAfter ?? ctx.peer.leaf?.notAfter, "certificate");
  bound(attestedUntil, "attestation");
  return expiresAt === undefined || expiresBecause === undefined ? limits : { ...limits, expiresAt, expiresBecause };
}

function byOrder(a: Rule, b: Rule): number {
  return a.order - b.order;
}

export function decide(policy: Policy, input: DecisionInput, options: DecideOptions = {}): Decision {
  const base = { policy: policy.name, policyVersion: policy.version, mode: policy.mode };
  const peerResult = input.peer;
  if (!peerResult.ok) {
    // Audit mode never admits an unproven identity: there is nobody to attribute the session to.
    const reasons = [svidReason(peerResult.rule)];
    return { ...base, decision: "deny", cause: "svid", rule: null, reasons, roles: [], svidRule: peerResult.rule, detail: peerResult.message };
  }
  const peer = peerResult.svid;
  const bound = policy.roles.lookup(peer.id);
  const roles = input.grantedRoles?.length ? [...new Set([...bound, ...input.grantedRoles])] : bound;
  const ctx: Context = { input, peer, roles };
  const candidates = policy.index.lookup(peer.id).sort(byOrder);
  const decision = evaluate(policy, candidates, ctx, base);
  return options.explain ? { ...decision, explain: explain(policy, candidates, ctx, decision) } : decision;
}

type Base = { policy: string; policyVersion: string; mode: Mode };

function evaluate(policy: Policy, candidates: readonly Rule[], ctx: Context, base: Base): Decision {
  const roles = ctx.roles;
  let auditedDeny: Allow["wouldDeny"];
  for (const r of candidates) {
    if (r.action !== "deny" || unmet(r, ctx).reasons.length > 0) continue;
    if (r.mode === "audit") auditedDeny ??= { rule: r.name, reasons: ["explicit_deny"] };
    else return enforceOrAudit(policy, { ...base, decision: "deny", cause: "policy", rule: r.name, reasons: ["explicit_deny"], roles }, ctx);
  }
  const failures = new Set<Reason>();
  let auditedAllow: { rule: Rule; unmet: Unmet } | undefined;
  let anyAllowCandidate = false;
  for (const r of candidates) {
    if (r.action !== "allow") continue;
    anyAllowCandidate = true;
    const u = unmet(r, ctx);
    if (u.reasons.length === 0) {
      const obligations = obligationsFor(policy, r, ctx, u.attestedUntil);
      return { ...base, decision: "allow", rule: r.name, reasons: ["explicit_allow"], roles, obligations, ...(auditedDeny ? { wouldDeny: auditedDeny } : {}) };
    }
    for (const reason of u.reasons) failures.add(reason);
    if (r.mode === "audit") auditedAllow ??= { rule: r, unmet: u };
  }
  if (auditedAllow) {
    const { rule, unmet: u } = auditedAllow;
    return {
      ...base,
      decision: "allow",
      rule: rule.name,
      reasons: ["explicit_allow"],
      roles,
      obligations: obligationsFor(policy, rule, ctx, undefined),
      wouldDeny: { rule: rule.name, reasons: u.reasons },
    };
  }
  if (policy.default === "allow") {
    return {
      ...base,
      decision: "allow",
      rule: null,
      reasons: ["default_allow"],
      roles,
      obligations: obligationsFor(policy, undefined, ctx, undefined),
      ...(auditedDeny ? { wouldDeny: auditedDeny } : {}),
    };
  }
  const reasons: Reason[] = anyAllowCandidate ? [...failures, "default_deny"] : ["identity_not_allowed", "default_deny"];
  return enforceOrAudit(policy, { ...base, decision: "deny", cause: "policy", rule: null, reasons, roles }, ctx);
}

/** In a policy in audit mode a denial is logged as would_deny and the session admitted. */
function enforceOrAudit(policy: Policy, d: Deny, ctx: Context): Decision {
  if (policy.mode !== "audit") return d;
  const { cause: _c, ...rest } = d;
  return { ...rest, decision: "allow", wouldDeny: { rule: d.rule, reasons: d.reasons }, obligations: obligationsFor(policy, undefined, ctx, undefined) };
}

function explain(policy: Policy, candidates: readonly Rule[], ctx: Context, d: Decision): RuleTrace[] {
  const matched = new Set(candidates);
  const ordered = [...policy.rules.filter((r) => r.action === "deny"), ...policy.rules.filter((r) => r.action === "allow")];
  let decided = false;
  return ordered.map((r): RuleTrace => {
    const head = { rule: r.name, action: r.action, mode: r.mode };
    if (decided) return { ...head, outcome: "not_reached", reasons: [], details: [] };
    if (!matched.has(r)) return { ...head, outcome: "identity_not_matched", reasons: [], details: [`${ctx.peer.id} matches none of its identity matchers`] };
    const u = unmet(r, ctx);
    if (r.name === d.rule) {
      const wouldDeny = d.decision === "allow" && d.wouldDeny?.rule === r.name;
      decided = r.action === "deny" || u.reasons.length === 0 || wouldDeny;
      const outcome = wouldDeny ? "would_deny" : "applied";
      return { ...head, outcome, reasons: u.reasons, details: u.details };
    }
    if (u.reasons.length === 0 && r.mode === "audit" && r.action === "deny") return { ...head, outcome: "would_deny", reasons: ["explicit_deny"], details: [] };
    return { ...head, outcome: u.reasons.length === 0 ? "applied" : "requirements_unmet", reasons: u.reasons, details: u.details };
  });
}
