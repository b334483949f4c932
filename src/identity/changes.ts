// What changed between two effective configurations, as far as identity and trust go: the cause
// recorded on every session a change revokes, so an operator sees why (a trust domain dropped, a root
// replaced, the own SVID rotated) rather than "a new configuration" of the same version.
import type { BundleSet, X509Bundle } from "../spiffe/x509bundle.js";
import type { RevocationCause } from "../telemetry/log.js";
import type { OwnIdentity } from "./files.js";

interface Side {
  readonly version: string;
  readonly bundles: BundleSet;
  readonly identity: OwnIdentity;
}

const digest = (b: X509Bundle) => [...b.roots.map((r) => r.fingerprint).sort(), "|", ...b.jwtAuthorities.map((a) => a.kid).sort()].join(",");

/** Trust domains added, removed and changed (roots or JWT authorities) from `prev` to `next`. */
export function bundleChanges(prev: BundleSet, next: BundleSet): { added: string[]; removed: string[]; changed: string[] } {
  const before = new Map(prev.all().map((b) => [b.trustDomain.name, digest(b)]));
  const after = new Map(next.all().map((b) => [b.trustDomain.name, digest(b)]));
  return {
    added: [...after.keys()].filter((td) => !before.has(td)),
    removed: [...before.keys()].filter((td) => !after.has(td)),
    changed: [...after].filter(([td, d]) => before.has(td) && before.get(td) !== d).map(([td]) => td),
  };
}

/** Why sessions are decided again when `next` replaces `prev`. */
export function causeOf(prev: Side, next: Side): RevocationCause {
  if (prev.version !== next.version) return { cause: "config_changed", changed: { old_version: prev.version, new_version: next.version } };
  const trust = bundleChanges(prev.bundles, next.bundles);
  if (trust.added.length + trust.removed.length + trust.changed.length > 0) {
    return {
      cause: "trust_bundle_changed",
      changed: { trust_domains_added: trust.added, trust_domains_removed: trust.removed, trust_domains_changed: trust.changed },
    };
  }
  return { cause: "own_svid_rotated", changed: { old_serial: prev.identity.serial, new_serial: next.identity.serial } };
}
