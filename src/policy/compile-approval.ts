// Compiling what rules ask of standard tokens (README, "Standard tokens"): approval conditions
// (`acting_for`, `actors`, `tctx`, `rctx`) and an EAR appraisal requirement. Beside compile.ts, which
// calls it, so that module keeps to the policy's own shape.
import type { EarRequirement } from "./ear.js";
import { IdentityIndex, type IdentityMatcher } from "./matcher.js";
import type { Conditions } from "./model.js";
import type { ClaimValue } from "./attestation.js";
import type { ErrorSink, Path } from "./compile.js";

type RawClaims = Record<string, ClaimValue | ClaimValue[]>;

export interface RawApprovalConditions<M> {
  acting_for?: string[] | undefined;
  actors?: M[] | undefined;
  tctx?: RawClaims | undefined;
  rctx?: RawClaims | undefined;
}

export interface RawEar {
  allow_warning: boolean;
  submods?: string[] | undefined;
  appraisal_policy_ids?: string[] | undefined;
}

export const claimsOf = (c: RawClaims): Map<string, readonly ClaimValue[]> =>
  new Map(Object.entries(c).map(([k, v]) => [k, Array.isArray(v) ? v : [v]] as const));

/** The approval conditions of `c`, their actor matchers compiled with `matcher`. */
export function compileApprovalConditions<M>(
  c: RawApprovalConditions<M>,
  path: Path,
  matcher: (m: M, path: Path) => IdentityMatcher | undefined,
): Pick<Conditions, "actingFor" | "actors" | "tctx" | "rctx"> {
  const out: { -readonly [K in "actingFor" | "actors" | "tctx" | "rctx"]?: Conditions[K] } = {};
  if (c.acting_for) out.actingFor = c.acting_for;
  if (c.actors) {
    const index = new IdentityIndex<true>();
    const text: string[] = [];
    c.actors.forEach((m, i) => {
      const compiled = matcher(m, [...path, "actors", i]);
      if (compiled) index.add(compiled, true);
      text.push(JSON.stringify(m));
    });
    out.actors = { index, text };
  }
  if (c.tctx) out.tctx = claimsOf(c.tctx);
  if (c.rctx) out.rctx = claimsOf(c.rctx);
  return out;
}

/** An EAR requirement: only of a configured verifier (`verifiers`), whose results carry appraisals. */
export function compileEar(e: RawEar, attestor: string, verifiers: readonly string[], path: Path, error: ErrorSink): EarRequirement {
  if (!verifiers.includes(attestor))
    error(path, `ear applies to EAR attestation results: ${attestor} is not a configured verifier (verifiers: ${verifiers.join(", ") || "none"})`);
  return {
    allowWarning: e.allow_warning,
    ...(e.submods ? { submods: e.submods } : {}),
    ...(e.appraisal_policy_ids ? { appraisalPolicyIds: e.appraisal_policy_ids } : {}),
  };
}
