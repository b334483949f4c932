// Delegation chains (RFC 8693 §4.1, the `act` claim): the outermost `act` names the current actor, each
// nested `act` a prior one. Parsing is bounded (MAX_ACT_DEPTH) and fails closed; the current actor of
// an approval must be the mTLS peer, so a token issued to one workload cannot be played by another.
import { TokenError } from "./tokenerror.js";

/** Actors read from one token at most; deeper nesting is refused (`act_too_deep`), never truncated. */
export const MAX_ACT_DEPTH = 16;
/** Longest actor `sub` read (a SPIFFE ID is at most 2048 bytes). */
const MAX_ACTOR_LENGTH = 2048;

/**
 * The actors of `act`, current first; [] when absent. Only each level's `sub` is read: per §4.1 the
 * other claims of an `act` object describe the actor and do not bear on the token's validity.
 */
export function actorChain(act: unknown): string[] {
  const chain: string[] = [];
  for (let level: unknown = act; level !== undefined; level = (level as { act?: unknown }).act) {
    if (chain.length === MAX_ACT_DEPTH) throw new TokenError("act_too_deep", `act nests more than ${MAX_ACT_DEPTH} actors`);
    if (!level || typeof level !== "object" || Array.isArray(level)) throw new TokenError("claim_act", `act at depth ${chain.length + 1} is not a JSON object`);
    const sub = (level as { sub?: unknown }).sub;
    if (typeof sub !== "string" || sub.length === 0 || sub.length > MAX_ACTOR_LENGTH)
      throw new TokenError("claim_act", `act at depth ${chain.length + 1} has no sub (a string of 1 to ${MAX_ACTOR_LENGTH} characters)`);
    chain.push(sub);
  }
  return chain;
}

/**
 * Who presents the token must be who it was given to: the current actor when there is a chain, else
 * (`subjectIsPeer`, parley's own approvals) the subject itself.
 */
export function bindActor(kind: string, sub: unknown, actors: readonly string[], peer: string, subjectIsPeer = true): void {
  if (typeof sub !== "string") throw new TokenError("claim_sub", `${kind} token has no sub`);
  if (actors.length > 0) {
    if (actors[0] !== peer) throw new TokenError("actor_mismatch", `${kind} token's current actor ${actors[0]} is not the peer ${peer}`);
  } else if (subjectIsPeer && sub !== peer) throw new TokenError("claim_sub", `${kind} token's sub ${sub} is not the peer ${peer}`);
}
