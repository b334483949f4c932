// Why a token was refused: the rule it broke, logged as the negotiation rule (docs/negotiation.md,
// "Token rules"). Its own module so every token kind can throw it without import cycles.
import { ParleyError } from "../errors/catalogue.js";

export type TokenRule =
  | "malformed"
  | "alg_not_allowed"
  | "typ_mismatch"
  | "unknown_issuer"
  | "expired"
  | `claim_${string}`
  | "bad_signature"
  | "unbound"
  | "wrongly_bound"
  | "scope_not_approved"
  | "txn_scope_exceeded"
  | "actor_mismatch"
  | "act_too_deep";

export class TokenError extends ParleyError {
  constructor(
    readonly rule: TokenRule,
    message: string,
  ) {
    super("PARLEY_ERR_TOKEN", message);
  }
}
