// Who may claim a node id. With mTLS the stream's peer is verified as an X509-SVID by the SPIFFE rules
// (X509-SVID standard §4-§5: one URI SAN, leaf rules, a chain to the bundle of the ID's own trust
// domain) and its SPIFFE ID must be one the node is bound to:
//   - nodes/<id>.yaml with `identity:` → the peer's ID must match it (rule `node_identity`);
//   - nodes/<id>.yaml without `identity:` → refused (rule `node_unbound`): per-node resources are
//     never served to an unproven claimant;
//   - no file → any verified SVID may claim it: such a node is served the shared snapshot only, which
//     every node gets alike (rule name for the README: `shared_only`).
import type * as grpc from "@grpc/grpc-js";
import type { SpiffeId } from "../../spiffe/spiffeid.js";
import type { SvidVerifier } from "../../spiffe/x509svid.js";
import { describeMatcher, IdentityIndex, type IdentityMatcher } from "../../policy/matcher.js";

export type Authorization = { ok: true; peerId?: string } | { ok: false; rule: string; message: string; peerId?: string };

/** Decides whether the peer of `call` may claim `nodeId`. */
export type NodeAuthorizer = (nodeId: string, call: Pick<grpc.ServerDuplexStream<unknown, unknown>, "getAuthContext">) => Authorization;

/** A node's binding, from its file: the matchers its claimants must satisfy (none: unbound). */
export interface NodeBinding {
  readonly file: string;
  readonly identity: readonly IdentityMatcher[];
}

export interface SvidAuthorizerOptions {
  readonly verifier: () => SvidVerifier;
  /** The node's binding; undefined when the node has no file of its own. */
  readonly binding: (nodeId: string) => NodeBinding | undefined;
  readonly now?: () => number;
}

function matches(matchers: readonly IdentityMatcher[], id: SpiffeId): boolean {
  const index = new IdentityIndex<true>();
  for (const m of matchers) index.add(m, true);
  return index.lookup(id).length > 0;
}

/**
 * The peer's leaf certificate as gRPC exposes it (the server sees no intermediates): SVIDs must be
 * issued by a root of their trust domain's bundle directly, else `svid_chain_unverified` (README).
 */
export function svidAuthorizer(o: SvidAuthorizerOptions): NodeAuthorizer {
  return (nodeId, call) => {
    const leaf = call.getAuthContext().sslPeerCertificate?.raw;
    if (!leaf) return { ok: false, rule: "no_client_svid", message: "the peer presented no client certificate" };
    const r = o.verifier().verify([leaf], (o.now ?? Date.now)());
    if (!r.ok) return { ok: false, rule: `svid_${r.rule}`, message: r.message, ...(r.id ? { peerId: r.id.toString() } : {}) };
    const peerId = r.svid.id.toString();
    const b = o.binding(nodeId);
    if (!b) return { ok: true, peerId };
    if (b.identity.length === 0) {
      return { ok: false, rule: "node_unbound", message: `node ${nodeId} has no identity in ${b.file}: no SVID may claim it`, peerId };
    }
    if (!matches(b.identity, r.svid.id)) {
      const want = b.identity.map(describeMatcher).join(" or ");
      return { ok: false, rule: "node_identity", message: `node ${nodeId} is bound to ${want} (${b.file}); ${peerId} does not match`, peerId };
    }
    return { ok: true, peerId };
  };
}
