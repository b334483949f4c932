// What a rule may ask of the verified task approval: whom it acts for, who is in its delegation chain
// (RFC 8693 §4.1 `act`), and a Transaction Token's context (`tctx`, `rctx`). Pure, like the other
// conditions; a rule asking any of this of a session without an approval does not apply.
import { claimMismatch, type ClaimValue } from "./attestation.js";
import { SpiffeId } from "../spiffe/spiffeid.js";
import type { Conditions } from "./model.js";

/** What a verified approval brings to the decision (negotiation's Approval fits). */
export interface ApprovalFacts {
  /** The approval's `sub`: the subject acted for, or the transaction's principal. */
  readonly subject: string;
  /** The delegation chain, current actor first; empty without `act`. */
  readonly actors: readonly string[];
  readonly tctx?: ReadonlyMap<string, ClaimValue>;
  readonly rctx?: ReadonlyMap<string, ClaimValue>;
}

export interface ApprovalFailure {
  readonly name: "acting_for" | "actors" | "tctx" | "rctx";
  readonly detail: string;
}

function actorMatches(c: NonNullable<Conditions["actors"]>, actor: string): boolean {
  const id = SpiffeId.tryParse(actor);
  return id instanceof SpiffeId && c.index.lookup(id).length > 0;
}

function contextFailure(
  name: "tctx" | "rctx",
  want: ReadonlyMap<string, readonly ClaimValue[]>,
  got: ReadonlyMap<string, ClaimValue> | undefined,
): ApprovalFailure | undefined {
  const m = claimMismatch(want, got);
  return m && { name, detail: `${name}.${m.claim} ${m.text}` };
}

/** Every approval condition of `c` that does not hold for `a` (no approval: each one asked fails). */
export function approvalFailures(c: Conditions, a: ApprovalFacts | undefined): ApprovalFailure[] {
  const out: (ApprovalFailure | undefined)[] = [];
  if (c.actingFor && (!a || !c.actingFor.includes(a.subject)))
    out.push({
      name: "acting_for",
      detail: a ? `the approval acts for ${a.subject}, not ${c.actingFor.join(" or ")}` : "no approval names whom the session acts for",
    });
  if (c.actors && !a?.actors.some((x) => actorMatches(c.actors!, x)))
    out.push({ name: "actors", detail: `no actor of the delegation chain (${a?.actors.join(" < ") || "none"}) matches ${c.actors.text.join(", ")}` });
  if (c.tctx) out.push(contextFailure("tctx", c.tctx, a?.tctx));
  if (c.rctx) out.push(contextFailure("rctx", c.rctx, a?.rctx));
  return out.filter((f): f is ApprovalFailure => f !== undefined);
}

/** Why the chain is longer than the rule allows, or undefined. */
export function tooDeep(max: number | undefined, a: ApprovalFacts | undefined): string | undefined {
  const depth = a?.actors.length ?? 0;
  return max !== undefined && depth > max ? `the delegation chain has ${depth} actor(s), over the rule's max_delegation_depth ${max}` : undefined;
}
