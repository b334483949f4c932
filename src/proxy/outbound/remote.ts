// The checks a remote sidecar passes before a local application's bytes (or a request's tokens) go to
// it, on either outbound transport (its own mTLS connection, or a pooled multiplexed one): its SVID
// verifies under the bundles in force (X509-SVID §5, by its own trust domain's bundle), it is exactly
// the SPIFFE ID the route expects, no revocation in force names it, and, when the route negotiates, it
// selected the ALPN protocol that says parley itself reads the request (else a workload would).
import type { TLSSocket } from "node:tls";
import { revocationDetail, type RevocationList } from "../../policy/revocation.js";
import type { SpiffeId } from "../../spiffe/spiffeid.js";
import type { SvidVerifier } from "../../spiffe/x509svid.js";

export interface RemoteRoute {
  readonly verifier: SvidVerifier;
  readonly expectId: SpiffeId;
  readonly revocations: RevocationList;
}

/** A negotiating route's protocol: the one it needs, the one the remote selected, and a hint at the remote's setting if they differ. */
export interface RemoteProtocol {
  readonly wanted: string;
  readonly selected: TLSSocket["alpnProtocol"];
  readonly hint: string;
}

/** What a revocation can name of a remote: its SPIFFE ID and leaf fingerprint. */
export interface RemoteSubject {
  readonly peer: SpiffeId;
  readonly certFingerprint: string;
}

export type RemoteCheck = { readonly ok: true; readonly subject: RemoteSubject } | { readonly ok: false; readonly reason: string; readonly detail: string };

/** Checks the remote that presented `chain` (leaf first) for `route` at `now`; the failure's reason is the outbound log's. */
export function checkRemote(chain: readonly Buffer[], route: RemoteRoute, now: number, protocol?: RemoteProtocol): RemoteCheck {
  const fail = (reason: string, detail: string): RemoteCheck => ({ ok: false, reason, detail });
  const peer = route.verifier.verify(chain, now);
  if (!peer.ok) return fail("remote_invalid_svid", `${peer.message} (${peer.rule})`);
  if (!peer.svid.id.equals(route.expectId)) return fail("remote_id_mismatch", `the remote is ${peer.svid.id}, not ${route.expectId}`);
  const subject = { peer: peer.svid.id, certFingerprint: peer.svid.leaf.fingerprint };
  const revoked = route.revocations.match(subject, now);
  if (revoked) return fail(revoked.code, revocationDetail(revoked));
  if (protocol && protocol.selected !== protocol.wanted)
    return fail("remote_not_negotiating", `the remote did not select ${protocol.wanted}: ${protocol.hint}`);
  return { ok: true, subject };
}
