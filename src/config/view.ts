// The effective configuration as an operator may see it (`GET /config`): everything that decides, and
// nothing secret (the private key never; certificates as ID, fingerprint and expiry).
import { describeMatcher } from "../policy/matcher.js";
import { describe as describeRevocation } from "../policy/revocation.js";
import type { Limits, Rule } from "../policy/model.js";
import type { SidecarConfig } from "./load.js";
import type { OwnIdentity } from "../identity/files.js";
import { identityView, type IdentityStatus } from "../identity/status.js";
import type { SharedLimitsSettings } from "../limits/shared.js";

const iso = (ms: number) => new Date(ms).toISOString();

/** A Redis URL without its password. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "redacted";
    return u.toString();
  } catch {
    return "[unparsable]";
  }
}

/** The shared limits' backend as the file names its keys (durations in ms); the CA's PEM left out. */
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

function limitsView(l: Limits): Record<string, unknown> {
  return Object.fromEntries(Object.entries(l).filter(([, v]) => v !== undefined));
}

function ruleView(r: Rule): Record<string, unknown> {
  const c = r.conditions;
  return {
    name: r.name,
    action: r.action,
    mode: r.mode,
    match: r.match.length === 0 ? ["every verified peer"] : r.match.map(describeMatcher),
    ...(r.roles.length ? { roles: r.roles } : {}),
    ...(r.attestation
      ? { attestation: { attestor: r.attestation.attestor, claims: Object.fromEntries(r.attestation.claims), max_age_ms: r.attestation.maxAgeMs } }
      : {}),
    conditions: {
      ...(c.sourceCidrs ? { source_cidrs: c.sourceCidrs.text } : {}),
      ...(c.sni ? { sni: c.sni } : {}),
      ...(c.alpn ? { alpn: c.alpn } : {}),
      ...(c.listeners ? { listeners: c.listeners } : {}),
      ...(c.time ? { time: c.time.map((w) => ({ zone: w.zone, days: [...w.days], from_minute: w.from, to_minute: w.to })) } : {}),
      ...(c.maxCertLifetimeMs !== undefined ? { max_cert_lifetime_ms: c.maxCertLifetimeMs } : {}),
      ...(c.maxCertRemainingMs !== undefined ? { max_cert_remaining_ms: c.maxCertRemainingMs } : {}),
    },
    limits: limitsView(r.limits),
  };
}

/** `now`: entries past their `until` are not shown, as they are not in force. */
export function configView(c: SidecarConfig & { identity: OwnIdentity }, identity: IdentityStatus, now = Date.now()): Record<string, unknown> {
  return {
    version: c.version,
    file: c.file,
    identity: { ...identityView(identity), private_key: "[redacted]" },
    trust_domains: Object.fromEntries(
      c.bundles
        .all()
        .map((b) => [b.trustDomain.name, b.roots.map((r) => ({ subject: r.x509.subject, fingerprint: r.fingerprint, not_after: iso(r.notAfter) }))]),
    ),
    listeners: c.listeners.map((l) => ({
      name: l.name,
      listen: `${l.listen.host}:${l.listen.port}`,
      upstream: `${l.upstream.host}:${l.upstream.port}`,
      policy: l.policy.name,
      handshake_timeout_ms: l.handshakeTimeoutMs,
      connect_timeout_ms: l.connectTimeoutMs,
      ...(l.maxSessions !== undefined ? { max_sessions: l.maxSessions } : {}),
      ...(l.proxyProtocol
        ? {
            proxy_protocol: {
              version: l.proxyProtocol.version,
              tlvs: l.proxyProtocol.tlvs,
              crc32c: l.proxyProtocol.crc32c,
              peer_certificate: l.proxyProtocol.peerCertificate,
            },
          }
        : {}),
    })),
    policies: Object.fromEntries(
      [...c.policies].map(([name, p]) => [name, { default: p.default, mode: p.mode, limits: limitsView(p.limits), rules: p.rules.map(ruleView) }]),
    ),
    attestation_records: c.attestations.size,
    revocations: Object.fromEntries(
      c.revocations.live(now).entries.map((e) => [e.name, { reason: e.reason, until: iso(e.until), match: e.match.map(describeRevocation) }]),
    ),
    limits: { ...c.limits, max_chain_length: c.maxChainLength },
    svid_verification: { ...c.svidVerification.floor, ...c.svidVerification.budget },
    drain_timeout_ms: c.drainTimeoutMs,
    revocation_grace_ms: c.revocationGraceMs,
    ...(c.sharedLimits ? { shared_limits: sharedLimitsView(c.sharedLimits) } : {}),
    log: c.log,
    admin: c.admin,
  };
}
