// The effective configuration as an operator may see it (`GET /config`): everything that decides, and
// nothing secret. Keys are the configuration file's own (README, "Configuration"; schema.ts), in one
// canonical form: every default filled in, shorthands in their long form, durations as integer
// milliseconds under the file's key plus `_ms`, sizes in bytes, rates per second, instants ISO 8601.
// Secrets never appear: private keys, tokens and passwords show as REDACTED, certificates as ID,
// fingerprint and expiry, CA files not at all.
import { describe as describeRevocation } from "../policy/revocation.js";
import type { NegotiationSettings } from "../negotiation/settings.js";
import type { SidecarConfig } from "./load.js";
import type { MultiplexConfig, OutboundConfig, ListenerConfig } from "./resources.js";
import type { HostPort } from "./units.js";
import type { OwnIdentity } from "../identity/files.js";
import { identityView, type IdentityStatus } from "../identity/status.js";
import type { SharedLimitsSettings } from "../limits/shared.js";
import { defined, policyView } from "./view-policy.js";

/** What stands where a secret would. */
export const REDACTED = "redacted";

const iso = (ms: number) => new Date(ms).toISOString();
/** host:port as the file writes it, an IPv6 host in brackets. */
const address = (a: HostPort) => (a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

/** A Redis URL without its password. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = REDACTED;
    return u.toString();
  } catch {
    return "[unparsable]";
  }
}

/** The shared limits' backend; the CA's PEM left out. */
function sharedLimitsView(s: SharedLimitsSettings): Record<string, unknown> {
  return {
    url: redactUrl(s.url),
    key_prefix: s.keyPrefix,
    on_unavailable: s.onUnavailable,
    timeout_ms: s.timeoutMs,
    lease_ttl_ms: s.leaseTtlMs,
    breaker: { failures: s.breakerFailures, probe_interval_ms: s.breakerProbeMs },
  };
}

const multiplexView = (m: MultiplexConfig) => ({ max_streams: m.maxStreams, idle_timeout_ms: m.idleTimeoutMs });

function listenerView(l: ListenerConfig): Record<string, unknown> {
  const p = l.proxyProtocol;
  return defined({
    name: l.name,
    listen: address(l.listen),
    upstream: address(l.upstream),
    policy: l.policy.name,
    handshake_timeout_ms: l.handshakeTimeoutMs,
    connect_timeout_ms: l.connectTimeoutMs,
    max_sessions: l.maxSessions,
    alpn: l.alpn,
    proxy_protocol: p && { version: p.version, tlvs: p.tlvs, crc32c: p.crc32c, peer_certificate: p.peerCertificate },
    multiplex: l.multiplex && multiplexView(l.multiplex),
  });
}

/** An outbound listener; its negotiation tokens are bearer secrets: only whether one is set shows. */
function outboundView(o: OutboundConfig): Record<string, unknown> {
  const n = o.negotiate;
  return defined({
    name: o.name,
    listen: address(o.listen),
    remote: address(o.remote),
    expect_id: o.expectId.toString(),
    server_name: o.serverName,
    connect_timeout_ms: o.connectTimeoutMs,
    transport: o.multiplexed ? "multiplexed" : "tls",
    target: o.multiplexed?.target,
    multiplex: o.multiplexed && multiplexView(o.multiplexed),
    negotiate: n && {
      roles: n.roles,
      ...defined({
        purpose: n.purpose,
        attestation_token: n.attestationToken === undefined ? undefined : REDACTED,
        approval_token: n.approvalToken === undefined ? undefined : REDACTED,
      }),
    },
  });
}

/** Negotiation: the grant key redacted; the token issuers by name (their public keys not repeated). */
function negotiationView(n: NegotiationSettings): Record<string, unknown> {
  const ring = (r: NegotiationSettings["tokenServices"]) => Object.fromEntries([...r].map(([issuer, k]) => [k.name, { issuer }]));
  return {
    grant_key: REDACTED,
    grant_ttl_ms: n.grantTtlMs,
    frame_timeout_ms: n.frameTimeoutMs,
    attestors: [...n.attestors.keys()],
    approvers: [...n.approvers.keys()],
    token_services: ring(n.tokenServices),
    verifiers: ring(n.verifiers),
  };
}

function logView(l: SidecarConfig["log"]): Record<string, unknown> {
  const cap = l.deny_cap;
  return { level: l.level, categories: l.categories, deny_cap: cap === false ? false : { burst: cap.burst, window_ms: cap.window }, buffer: l.buffer };
}

function limitsView(c: SidecarConfig): Record<string, unknown> {
  const l = c.limits;
  return defined({
    max_chain_length: c.maxChainLength,
    max_sessions: l.maxSessions,
    max_handshakes: l.maxHandshakes,
    max_handshakes_per_source: l.maxHandshakesPerSource,
    source_rate: l.sourceRate && { per_second: l.sourceRate.perSecond, burst: l.sourceRate.burst },
    max_held: l.maxHeld,
  });
}

function svidVerificationView(c: SidecarConfig): Record<string, unknown> {
  const { floor, budget } = c.svidVerification;
  return {
    min_rsa_bits: floor.minRsaBits,
    allow_sha1: floor.allowSha1,
    max_signature_checks: budget.maxSignatureChecks,
    max_path_candidates: budget.maxCandidates,
  };
}

/** `now`: entries past their `until` are not shown, as they are not in force. */
export function configView(c: SidecarConfig & { identity: OwnIdentity }, identity: IdentityStatus, now = Date.now()): Record<string, unknown> {
  return {
    version: c.version,
    file: c.file,
    identity: { ...identityView(identity), private_key: REDACTED },
    trust_domains: Object.fromEntries(
      c.bundles
        .all()
        .map((b) => [b.trustDomain.name, b.roots.map((r) => ({ subject: r.x509.subject, fingerprint: r.fingerprint, not_after: iso(r.notAfter) }))]),
    ),
    listeners: c.listeners.map(listenerView),
    outbound: c.outbound.map(outboundView),
    policies: Object.fromEntries([...c.policies].map(([name, p]) => [name, policyView(p)])),
    attestation_records: c.attestations.size,
    revocations: Object.fromEntries(
      c.revocations.live(now).entries.map((e) => [e.name, { reason: e.reason, until: iso(e.until), match: e.match.map(describeRevocation) }]),
    ),
    limits: limitsView(c),
    svid_verification: svidVerificationView(c),
    drain_timeout_ms: c.drainTimeoutMs,
    revocation_grace_ms: c.revocationGraceMs,
    ...(c.negotiation ? { negotiation: negotiationView(c.negotiation) } : {}),
    ...(c.sharedLimits ? { shared_limits: sharedLimitsView(c.sharedLimits) } : {}),
    log: logView(c.log),
    admin: c.admin,
  };
}
