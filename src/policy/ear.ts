// Attestation results in the IETF RATS EAR format (draft-ietf-rats-ear-04): the appraisal status of each
// submodule and overall, and a rule's requirement on them. Pure: the verified result in, a failure
// (reason and sentence) or nothing out.
export const TIERS = ["none", "affirming", "warning", "contraindicated"] as const;
/** AR4SI trust tiers (draft-ietf-rats-ear-04 §3.1 `ear_status`). */
export type Tier = (typeof TIERS)[number];

export interface EarAppraisal {
  readonly status: Tier;
  /** `ear_appraisal_policy_ids`, in the order the verifier applied them. */
  readonly policyIds: readonly string[];
}

export interface EarResult {
  /** The worst of the top-level `ear_status` (when present) and every submodule's. */
  readonly overall: Tier;
  readonly submods: ReadonlyMap<string, EarAppraisal>;
}

export interface EarRequirement {
  /** Accept `warning` as well as `affirming`. */
  readonly allowWarning: boolean;
  /** Submodules that must each pass; absent = the overall status must. */
  readonly submods?: readonly string[];
  /** When set, each judged appraisal must list one of these policy ids. */
  readonly appraisalPolicyIds?: readonly string[];
}

export type EarFailure = "attestation_contraindicated" | "attestation_unappraised" | "attestation_warning" | "attestation_claim_mismatch";

/**
 * Badness, for "the worst": contraindicated, then none (no claim made: nothing to rely on), then
 * warning, then affirming. §3 only says the overall status is no better than the worst submodule's.
 */
const BADNESS: Record<Tier, number> = { affirming: 0, warning: 1, none: 2, contraindicated: 3 };

export const worst = (tiers: readonly Tier[]): Tier => tiers.reduce<Tier>((w, t) => (BADNESS[t] > BADNESS[w] ? t : w), "affirming");

function judgeStatus(what: string, status: Tier | undefined, req: EarRequirement): { reason: EarFailure; detail: string } | undefined {
  if (status === "contraindicated") return { reason: "attestation_contraindicated", detail: `${what} is contraindicated` };
  if (status === undefined || status === "none")
    return { reason: "attestation_unappraised", detail: `${what} ${status === undefined ? "is absent" : "makes no claim (none)"}` };
  if (status === "warning" && !req.allowWarning) return { reason: "attestation_warning", detail: `${what} is warning and the rule requires affirming` };
  return undefined;
}

/** Why `ear` does not meet `req`, or undefined when it does. */
export function judgeEar(req: EarRequirement, ear: EarResult | undefined, attestor: string): { reason: EarFailure; detail: string } | undefined {
  if (!ear) return { reason: "attestation_unappraised", detail: `evidence from ${attestor} is not an EAR attestation result` };
  const statuses: [string, Tier | undefined][] = req.submods
    ? req.submods.map((s) => [`submod ${s} of ${attestor}'s result`, ear.submods.get(s)?.status])
    : [[`the overall status of ${attestor}'s result`, ear.overall]];
  const failures = statuses.flatMap(([what, status]) => judgeStatus(what, status, req) ?? []);
  if (failures.length > 0) return failures.reduce((w, f) => (rank(f.reason) > rank(w.reason) ? f : w));
  const accepted = req.appraisalPolicyIds;
  if (!accepted) return undefined;
  // Every judged submodule (all of them for the overall status) must have been appraised under an accepted policy.
  const judged = req.submods ?? [...ear.submods.keys()];
  const unlisted = judged.find((s) => !ear.submods.get(s)!.policyIds.some((id) => accepted.includes(id)));
  return unlisted === undefined
    ? undefined
    : { reason: "attestation_claim_mismatch", detail: `submod ${unlisted} of ${attestor}'s result was appraised under none of ${accepted.join(", ")}` };
}

const rank = (r: EarFailure): number => ["attestation_warning", "attestation_unappraised", "attestation_contraindicated"].indexOf(r);
