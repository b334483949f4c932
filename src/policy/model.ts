// A policy as validated, immutable data. Built by the config loader, evaluated by decide().
import type { IdentityMatcher } from "./matcher.js";

export type Action = "allow" | "deny";

export interface Rule {
  readonly name: string;
  readonly action: Action;
  /** The rule matches a peer when any matcher matches its ID. */
  readonly match: readonly IdentityMatcher[];
}

export interface Policy {
  readonly name: string;
  readonly default: Action;
  /** In file order; decide() looks at deny rules first, then allow rules. */
  readonly rules: readonly Rule[];
  /** Identifies the configuration this policy came from; logged with every decision. */
  readonly version: string;
}
