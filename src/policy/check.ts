// Offline decisions (`parley check`): the same decide() the proxy calls, on an ID or a certificate
// given by hand instead of a live handshake, with explain on.
import { ParleyError } from "../errors/catalogue.js";
import type { SidecarConfig } from "../config/load.js";
import { SpiffeId } from "../spiffe/spiffeid.js";
import { derFromPem } from "../spiffe/x509cert.js";
import { SvidVerifier } from "../spiffe/x509svid.js";
import type { AttestationRecord } from "./attestation.js";
import { decide } from "./decide.js";
import { revocationDenial, type RevocationSubject } from "./revocation.js";
import { type Decision, type PeerResult } from "./decision.js";

export class CheckInputError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_CHECK_INPUT", message);
  }
}

export interface CheckRequest {
  /** A SPIFFE ID; with `certPem` it must be the certificate's. */
  readonly id?: string;
  /** A PEM chain, leaf first, verified against the configured bundles at `now`. */
  readonly certPem?: string;
  /** Default: the first listener. */
  readonly listener?: string;
  readonly sourceAddress: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  readonly now: number;
  /** The task and approval token id of the session's approval, as a revocation may name them. */
  readonly txn?: string;
  readonly jti?: string;
}

export function checkOffline(config: SidecarConfig, req: CheckRequest): { decision: Decision; peerId: string } {
  const listener = config.listeners.find((l) => req.listener === undefined || l.name === req.listener);
  if (!listener) throw new CheckInputError(`unknown listener ${req.listener ?? "(none defined)"}; defined: ${config.listeners.map((l) => l.name).join(", ")}`);
  const { peer, peerId } = peerOf(config, req);
  const attestations = peer.ok ? config.attestations.for(peerId) : [];
  const revoked = peer.ok ? revocationDenial(config.revocations, listener.policy, subjectOf(peer.svid, attestations, req), req.now) : undefined;
  if (revoked) return { decision: revoked, peerId };
  const decision = decide(
    listener.policy,
    { listener: listener.name, sourceAddress: req.sourceAddress, sni: req.sni, alpn: req.alpn, now: req.now, peer, attestations },
    { explain: true },
  );
  return { decision, peerId };
}

/** What a revocation can name of a checked peer: its ID, its certificate when given, the approval's ids. */
function subjectOf(svid: { id: SpiffeId; leaf?: { fingerprint: string } }, attestations: readonly AttestationRecord[], req: CheckRequest): RevocationSubject {
  return {
    peer: svid.id,
    ...(svid.leaf ? { certFingerprint: svid.leaf.fingerprint } : {}),
    ...(req.txn !== undefined ? { txn: req.txn } : {}),
    ...(req.jti !== undefined ? { jti: req.jti } : {}),
    attestors: attestations.map((a) => a.attestor),
  };
}

function peerOf(config: SidecarConfig, req: CheckRequest): { peer: PeerResult; peerId: string } {
  if (req.certPem === undefined) {
    if (req.id === undefined) throw new CheckInputError("a SPIFFE ID or a certificate is required");
    const id = SpiffeId.tryParse(req.id);
    if (!(id instanceof SpiffeId)) throw new CheckInputError(`--id: ${id.message}`);
    // As a live peer would be: an ID of a trust domain without a bundle cannot be verified. Bundles that
    // come from the Workload API are not known offline, so with that identity source any domain passes.
    if (config.identitySource === undefined && !config.bundles.forTrustDomain(id.trustDomain)) {
      return { peer: { ok: false, rule: "untrusted_domain", message: `no trust bundle for trust domain ${id.trustDomain.name}` }, peerId: id.toString() };
    }
    return { peer: { ok: true, svid: { id } }, peerId: id.toString() };
  }
  let chain: Buffer[];
  try {
    chain = derFromPem(req.certPem, "--cert");
  } catch (e) {
    throw new CheckInputError((e as Error).message);
  }
  const result = new SvidVerifier(config.bundles, { maxChainLength: config.maxChainLength, ...config.svidVerification }).verify(chain, req.now);
  const certId = result.ok ? result.svid.id : result.id;
  if (req.id !== undefined && certId?.toString() !== req.id) {
    throw new CheckInputError(`--id ${req.id} differs from the certificate's ID ${certId?.toString() ?? "(none)"}`);
  }
  return { peer: result, peerId: certId?.toString() ?? "(certificate without a readable SPIFFE ID)" };
}
