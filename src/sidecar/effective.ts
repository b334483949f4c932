// What a sidecar serves: a configuration with its own identity known (EffectiveConfig), trust from a
// source outside the configuration (TrustOverlay), and the checks a configuration must pass to apply.
import type { SidecarConfig } from "../config/load.js";
import type { SidecarLimits } from "../config/resources.js";
import { ParleyError } from "../errors/catalogue.js";
import type { OwnIdentity } from "../identity/files.js";
import type { HandshakeLimits } from "../limits/handshakes.js";
import type { BundleSet } from "../spiffe/x509bundle.js";

export class ApplyError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_APPLY", message);
  }
}

const DEFAULT_HANDSHAKES: HandshakeLimits = { maxInFlight: 256, maxInFlightPerSource: 64 };

export function handshakeLimits(l: SidecarLimits | undefined): HandshakeLimits {
  if (!l) return DEFAULT_HANDSHAKES;
  return { maxInFlight: l.maxHandshakes, maxInFlightPerSource: l.maxHandshakesPerSource, ...(l.sourceRate ? { sourceRate: l.sourceRate } : {}) };
}

/** A configuration with its own identity known: what can actually serve. */
export type EffectiveConfig = SidecarConfig & { readonly identity: OwnIdentity };

/** Identity and trust from a source outside the configuration (the Workload API). */
export interface TrustOverlay {
  readonly identity: OwnIdentity;
  /** Replace the configuration's bundles of the same trust domains; the set is complete. */
  readonly bundles: BundleSet;
  readonly version: string;
}

/** A bundle whose spiffe_sequence goes backwards is a rollback: refused, naming the trust domain. */
export function checkSequences(prev: EffectiveConfig | undefined, next: EffectiveConfig): void {
  if (!prev) return;
  for (const b of next.bundles.all()) {
    const old = prev.bundles.forTrustDomain(b.trustDomain);
    if (old?.sequence !== undefined && b.sequence !== undefined && b.sequence < old.sequence) {
      throw new ApplyError(`bundle of ${b.trustDomain}: spiffe_sequence ${b.sequence} is older than the ${old.sequence} in force`);
    }
  }
}
