// The sidecar's own admission bounds (./admission.ts) of every allow rule of a listener's policy, built
// once when the listener's state is built (each configuration applied), so that admitting a session
// builds nothing: its decision's rule names its bounds. A decision with no rule of its own limits
// (default allow, or an audit-mode policy's would-be denial, which names the deny rule) lives under
// the policy's limits alone, as decide() gives it.
import { limitsOf } from "../policy/decide.js";
import type { Limits, Policy } from "../policy/model.js";
import type { AdmissionLimits } from "./admission.js";
import type { Rate } from "./bucket.js";

/** One rule's bounds on one listener: with its rate checked here, and without (the shared bucket took it). */
export interface AdmissionPlan {
  readonly withRate: AdmissionLimits;
  readonly withoutRate: AdmissionLimits;
}

/** The bounds `l` sets on this sidecar, with `rate` to check here if any. */
function bounds(l: Limits, rate: Rate | undefined, maxPerListener: number | undefined, maxGlobal: number): AdmissionLimits {
  return {
    ...(rate ? { rate } : {}),
    // A shared max_sessions is a lease (./gate.ts), not this sidecar's count.
    ...(l.maxSessions !== undefined && !l.maxSessionsShared ? { maxPerIdentity: l.maxSessions } : {}),
    ...(maxPerListener !== undefined ? { maxPerListener } : {}),
    maxGlobal,
    ...(l.maxWaitMs !== undefined ? { maxWaitMs: l.maxWaitMs } : {}),
  };
}

function planOf(l: Limits, maxPerListener: number | undefined, maxGlobal: number): AdmissionPlan {
  const withRate = bounds(l, l.rate, maxPerListener, maxGlobal);
  return { withRate, withoutRate: l.rate ? bounds(l, undefined, maxPerListener, maxGlobal) : withRate };
}

export class AdmissionPlans {
  private readonly byRule = new Map<string, AdmissionPlan>();
  private readonly policyOnly: AdmissionPlan;

  /** `maxPerListener`: the listener's max_sessions; `maxGlobal`: the sidecar's. */
  constructor(policy: Policy, maxPerListener: number | undefined, maxGlobal: number) {
    this.policyOnly = planOf(limitsOf(policy, undefined), maxPerListener, maxGlobal);
    for (const r of policy.rules) if (r.action === "allow") this.byRule.set(r.name, planOf(limitsOf(policy, r), maxPerListener, maxGlobal));
  }

  /** The bounds of a session the policy allowed with `rule` (the decision's `rule`). */
  of(rule: string | null): AdmissionPlan {
    return (rule === null ? undefined : this.byRule.get(rule)) ?? this.policyOnly;
  }
}
