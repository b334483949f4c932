// What operators see of the sidecar's own identity, whatever its source (files or the Workload API):
// the source and whether it is connected, when it last updated, and the SVID in force (ID, serial,
// fingerprint, not-after). Readiness (`/readyz`), `/config` and the metrics all read this one shape.
import type { OwnIdentity } from "./files.js";

export type IdentitySourceKind = "files" | "workload_api";

/** What a source says of itself; fields it cannot tell are left out. */
export interface SourceProbe {
  readonly connected?: boolean | undefined;
  readonly lastUpdate?: number | undefined;
  readonly failed?: string | undefined;
}

export interface IdentitySource {
  readonly kind: IdentitySourceKind;
  probe(): SourceProbe;
}

/** Files: "connected" once they gave a usable SVID; updated when one was applied. */
export const FILES_SOURCE: IdentitySource = { kind: "files", probe: () => ({}) };

export interface IdentityStatus {
  readonly source: IdentitySourceKind;
  /** Files: an SVID was read; Workload API: the X.509 stream is up. */
  readonly connected: boolean;
  /** When the source last delivered (ms since the epoch). */
  readonly lastUpdate: number | undefined;
  /** The SVID in force (or, before any configuration, the one a bootstrap names). */
  readonly svid: OwnIdentity | undefined;
  /** Held, unexpired and not withdrawn. */
  readonly usable: boolean;
  /** Why the source gave up (InvalidArgument, Unimplemented), if it did. */
  readonly failed?: string;
}

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/** The JSON of `/readyz` and `/config`. */
export function identityView(s: IdentityStatus): Record<string, unknown> {
  return {
    source: s.source,
    connected: s.connected,
    last_update: iso(s.lastUpdate),
    usable: s.usable,
    ...(s.failed ? { failed: s.failed } : {}),
    ...(s.svid ? { id: s.svid.id.toString(), serial: s.svid.serial, fingerprint: s.svid.fingerprint, not_after: iso(s.svid.notAfter) } : { id: null }),
  };
}
