// The connection-time decision: one typed input, one plain value out. Pure: no sockets, no clock,
// no logging; the proxy calls it once per connection and acts on the result.
import type { SvidResult, SvidRule } from "../identity/x509svid.js";
import { matches } from "./matcher.js";
import type { Action, Policy, Rule } from "./model.js";
import type { ReasonCode } from "./reasons.js";

export interface DecisionInput {
  readonly listener: string;
  readonly sourceAddress: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  /** Milliseconds since the epoch. */
  readonly now: number;
  /** The outcome of X509-SVID verification of the peer's chain. */
  readonly peer: SvidResult;
}

export interface Decision {
  readonly decision: Action;
  /** Name of the rule that decided; null for the policy default or a failed SVID. */
  readonly rule: string | null;
  readonly reasons: readonly ReasonCode[];
  readonly policy: string;
  readonly policyVersion: string;
  /** When the SVID failed verification: the rule it broke and why. */
  readonly svidRule?: SvidRule;
  readonly detail?: string;
}

function svidReason(rule: SvidRule): ReasonCode {
  if (rule === "no_certificate") return "no_client_cert";
  if (rule === "untrusted_domain") return "untrusted_domain";
  return "invalid_svid";
}

export function decide(policy: Policy, input: DecisionInput): Decision {
  const base = { policy: policy.name, policyVersion: policy.version };
  const peer = input.peer;
  if (!peer.ok) {
    return { ...base, decision: "deny", rule: null, reasons: [svidReason(peer.rule)], svidRule: peer.rule, detail: peer.message };
  }
  const id = peer.svid.id;
  const hit = (r: Rule) => r.match.some((m) => matches(m, id));
  const deny = policy.rules.find((r) => r.action === "deny" && hit(r));
  if (deny) return { ...base, decision: "deny", rule: deny.name, reasons: ["explicit_deny"] };
  const allow = policy.rules.find((r) => r.action === "allow" && hit(r));
  if (allow) return { ...base, decision: "allow", rule: allow.name, reasons: ["explicit_allow"] };
  return { ...base, decision: policy.default, rule: null, reasons: [policy.default === "allow" ? "default_allow" : "default_deny"] };
}
