// Identity matchers: which SPIFFE IDs a rule speaks of.
import { SpiffeId, TrustDomain } from "../identity/spiffeid.js";

export type IdentityMatcher =
  | { readonly kind: "id"; readonly id: SpiffeId }
  | { readonly kind: "trust_domain"; readonly trustDomain: TrustDomain }
  /** IDs of the trust domain whose path starts with these segments (segment boundaries: `/ns/prod` does not match `/ns/production`). */
  | { readonly kind: "path_prefix"; readonly prefix: SpiffeId };

export function matches(m: IdentityMatcher, id: SpiffeId): boolean {
  switch (m.kind) {
    case "id":
      return m.id.equals(id);
    case "trust_domain":
      return m.trustDomain.equals(id.trustDomain);
    case "path_prefix":
      return m.prefix.trustDomain.equals(id.trustDomain) && id.hasPathPrefix(m.prefix.segments);
  }
}

export function describeMatcher(m: IdentityMatcher): string {
  switch (m.kind) {
    case "id":
      return `id ${m.id}`;
    case "trust_domain":
      return `trust_domain ${m.trustDomain}`;
    case "path_prefix":
      return `path_prefix ${m.prefix}`;
  }
}
