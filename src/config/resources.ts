// Compiling resources (listeners, trust bundles, roles, attestors, attestation records, policies,
// settings) from their validated raw shape, wherever they came from: a file or a control-plane push.
// One module for every section, so a file and a push compile by the same code, section by section.
import type { SharedLimitsSettings } from "../limits/shared.js";
import type { CryptoFloor } from "../spiffe/algorithms.js";
import type { PathBudget } from "../spiffe/pathvalidation.js";
import { createHash } from "node:crypto";
import { compileNegotiation, type NegotiationSettings } from "../negotiation/settings.js";
import { SpiffeId, TrustDomain } from "../spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../spiffe/x509bundle.js";
import { AttestationStore, flattenClaims, type AttestationRecord } from "../policy/attestation.js";
import { compilePolicies } from "../policy/compile.js";
import type { Policy } from "../policy/model.js";
import { MAX_MATCHERS, RevocationList } from "../policy/revocation.js";
import { compileRevocationEntry } from "./revocation.js";
import type { RawResources } from "./schema.js";
import { ConfigError, type ConfigIssue, type ConfigPath, type IssueLocator } from "./source.js";
import { type HostPort, parseHostPort } from "./units.js";

export interface ListenerConfig {
  readonly name: string;
  readonly listen: HostPort;
  readonly upstream: HostPort;
  readonly policy: Policy;
  readonly handshakeTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly maxSessions?: number;
  /** ALPN protocols the workload speaks. */
  readonly alpn: readonly string[];
  /** Send a PROXY protocol v2 header to the workload (absent: none). */
  readonly proxyProtocol?: ProxyProtocolConfig;
  /** Accept multiplexed connections (ALPN h2) under these bounds (absent: h2 is the workload's, as any ALPN). */
  readonly multiplex?: MultiplexConfig;
}

export interface MultiplexConfig {
  readonly maxStreams: number;
  readonly idleTimeoutMs: number;
}

export interface ProxyProtocolConfig {
  readonly version: "v2";
  /** false: addresses only (and CRC32C if asked). */
  readonly tlvs: boolean;
  readonly crc32c: boolean;
  readonly peerCertificate: boolean;
}

export interface OutboundConfig {
  readonly name: string;
  readonly listen: HostPort;
  readonly remote: HostPort;
  readonly expectId: SpiffeId;
  readonly serverName?: string;
  readonly connectTimeoutMs: number;
  /** Present with `transport: multiplexed`: the pool's bounds and each stream's `:authority`. */
  readonly multiplexed?: MultiplexConfig & { readonly target: string };
  readonly negotiate?: { readonly roles: readonly string[]; readonly purpose?: string; readonly attestationToken?: string; readonly approvalToken?: string };
}

export interface SidecarLimits {
  readonly maxSessions: number;
  readonly maxHandshakes: number;
  readonly maxHandshakesPerSource: number;
  readonly sourceRate?: { readonly perSecond: number; readonly burst: number };
  readonly maxHeld: number;
}

export interface Resources {
  /** Identifies this set of resources; logged with each decision. */
  readonly version: string;
  readonly bundles: BundleSet;
  readonly listeners: readonly ListenerConfig[];
  readonly policies: ReadonlyMap<string, Policy>;
  readonly attestations: AttestationStore;
  /** Every entry as configured; the sidecar drops those past their `until` when it builds its state. */
  readonly revocations: RevocationList;
  readonly drainTimeoutMs: number;
  /** How long a live session a new configuration no longer admits may go on. */
  readonly revocationGraceMs: number;
  readonly maxChainLength: number;
  /** The crypto floor and path-building budget of SVID verification. */
  readonly svidVerification: { readonly floor: CryptoFloor; readonly budget: PathBudget };
  readonly limits: SidecarLimits;
  /** Present when negotiation (ALPN parley/1) is configured. */
  readonly negotiation?: NegotiationSettings;
  readonly outbound: readonly OutboundConfig[];
  /** Present when limits shared across the mesh (Redis) are configured. */
  readonly sharedLimits?: SharedLimitsSettings;
}

/** Collects issues while compiling, reads files named by the data, and hashes what it saw. */
export class CompileContext {
  readonly issues: ConfigIssue[] = [];
  private readonly hash = createHash("sha256");

  constructor(
    readonly at: IssueLocator,
    /** Reads a file the data names; absent when the data may not name files (pushes). */
    private readonly reader?: (name: string) => string,
  ) {}

  error(path: ConfigPath, message: string, key?: string): void {
    this.issues.push(this.at.issue(path, message, key));
  }

  /** Feeds content into the version hash. */
  saw(text: string): void {
    this.hash.update(text);
  }

  readFile(path: ConfigPath, name: string): string | undefined {
    if (!this.reader) {
      this.error(path, "files cannot be named here; send the content inline");
      return undefined;
    }
    try {
      const text = this.reader(name);
      this.saw(text);
      return text;
    } catch (e) {
      this.error(path, `cannot read ${name}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return undefined;
    }
  }

  /** The hash of everything seen so far (more may be fed after). */
  digest(): string {
    return this.hash.copy().digest("hex").slice(0, 16);
  }

  throwIfAny(): void {
    if (this.issues.length > 0) throw new ConfigError(this.issues);
  }
}

/** Compiles `raw`; `version` undefined = the content hash. Throws ConfigError with every issue. */
export function compileResources(raw: RawResources, c: CompileContext, version?: string): Resources {
  const bundles = compileBundles(c, raw);
  const attestations = compileAttestations(c, raw);
  const revocations = compileRevocations(c, raw);
  const compiled = compilePolicies(
    {
      policies: raw.policies,
      roles: raw.roles,
      attestors: Object.keys(raw.attestors),
      verifiers: Object.keys(raw.verifiers),
      listeners: raw.listeners.map((l) => l.name),
    },
    "",
    (path, message) => c.error(path, message),
  );
  c.throwIfAny();
  const v = version ?? c.digest();
  const policies = new Map([...compiled].map(([name, p]) => [name, { ...p, version: v }]));
  const listeners = compileListeners(c, raw, policies);
  const negotiation = compileNegotiation(c, raw);
  const outbound = compileOutbound(c, raw);
  const sharedLimits = compileSharedLimits(c, raw);
  c.throwIfAny();
  return {
    ...(sharedLimits ? { sharedLimits } : {}),
    outbound,
    ...(negotiation ? { negotiation } : {}),
    version: v,
    bundles,
    listeners,
    policies,
    attestations,
    revocations,
    drainTimeoutMs: raw.drain_timeout,
    revocationGraceMs: raw.revocation_grace,
    maxChainLength: raw.limits.max_chain_length,
    svidVerification: {
      floor: { minRsaBits: raw.svid_verification.min_rsa_bits, allowSha1: raw.svid_verification.allow_sha1 },
      budget: { maxSignatureChecks: raw.svid_verification.max_signature_checks, maxCandidates: raw.svid_verification.max_path_candidates },
    },
    limits: {
      maxSessions: raw.limits.max_sessions,
      maxHandshakes: raw.limits.max_handshakes,
      maxHandshakesPerSource: raw.limits.max_handshakes_per_source,
      ...(raw.limits.source_rate
        ? {
            sourceRate: {
              perSecond: raw.limits.source_rate.per_second,
              burst: raw.limits.source_rate.burst ?? Math.max(1, Math.ceil(raw.limits.source_rate.per_second)),
            },
          }
        : {}),
      maxHeld: raw.limits.max_held,
    },
  };
}

/** The shared_limits section; a limit marked `scope: shared` without it is an error, not a silent local one. */
function compileSharedLimits(c: CompileContext, raw: RawResources): SharedLimitsSettings | undefined {
  const s = raw.shared_limits;
  if (!s) {
    for (const [name, p] of Object.entries(raw.policies)) {
      sharedScopes(p.limits).forEach((at) => c.error(["policies", name, "limits", ...at], "a shared limit needs a shared_limits section"));
      p.rules.forEach((r, i) => {
        sharedScopes(r.limits).forEach((at) => c.error(["policies", name, "rules", i, "limits", ...at], "a shared limit needs a shared_limits section"));
      });
    }
    return undefined;
  }
  try {
    // The path, if any, names the database by number (node-redis refuses anything else).
    if (!/^(\/\d*)?$/.test(new URL(s.url).pathname)) c.error(["shared_limits", "url"], "the URL's path must be a database number such as /0");
  } catch {
    c.error(["shared_limits", "url"], `not a URL: ${s.url}`);
  }
  if (s.ca !== undefined && !s.url.startsWith("rediss://")) c.error(["shared_limits", "ca"], "a CA is for TLS: use a rediss:// URL");
  const caPem = s.ca === undefined ? undefined : c.readFile(["shared_limits", "ca"], s.ca);
  return {
    url: s.url,
    ...(caPem !== undefined ? { caPem } : {}),
    keyPrefix: s.key_prefix,
    onUnavailable: s.on_unavailable,
    timeoutMs: s.timeout,
    leaseTtlMs: s.lease_ttl,
    breakerFailures: s.breaker.failures,
    breakerProbeMs: s.breaker.probe_interval,
  };
}

type RawLimitsOf = NonNullable<RawResources["policies"][string]["limits"]>;

/** Where `l` marks a limit `scope: shared`. */
function sharedScopes(l: RawLimitsOf | undefined): string[][] {
  const at: string[][] = [];
  if (l?.rate?.scope === "shared") at.push(["rate", "scope"]);
  if (typeof l?.max_sessions === "object" && l.max_sessions.scope === "shared") at.push(["max_sessions", "scope"]);
  if (l?.per_task?.scope === "shared") at.push(["per_task", "scope"]);
  return at;
}

function compileBundles(c: CompileContext, raw: RawResources): BundleSet {
  const out: X509Bundle[] = [];
  for (const [name, td] of Object.entries(raw.trust_domains)) {
    let trustDomain: TrustDomain;
    try {
      trustDomain = TrustDomain.parse(name);
    } catch (e) {
      c.error(["trust_domains"], (e as Error).message, name);
      continue;
    }
    const path = ["trust_domains", name, td.bundle !== undefined ? "bundle" : "bundle_pem"];
    const pem = td.bundle !== undefined ? c.readFile(path, td.bundle) : td.bundle_pem!;
    if (pem === undefined) continue;
    if (td.bundle === undefined) c.saw(pem);
    try {
      out.push(X509Bundle.fromDocument(trustDomain, pem, td.bundle ?? `bundle of ${name}`));
    } catch (e) {
      c.error(path, (e as Error).message);
    }
  }
  return new BundleSet(out);
}

function compileAttestations(c: CompileContext, raw: RawResources): AttestationStore {
  const records: AttestationRecord[] = [];
  raw.attestations.forEach((a, i) => {
    const path = ["attestations", i];
    const subject = SpiffeId.tryParse(a.subject);
    if (!(subject instanceof SpiffeId)) return void c.error([...path, "subject"], subject.message);
    if (!(a.attestor in raw.attestors))
      return void c.error([...path, "attestor"], `unknown attestor ${a.attestor}; defined: ${Object.keys(raw.attestors).join(", ") || "none"}`);
    const issuedAt = Date.parse(a.issued_at);
    const expiresAt = Date.parse(a.expires_at);
    if (expiresAt <= issuedAt) return void c.error([...path, "expires_at"], "expires_at must be after issued_at");
    records.push({
      subject: subject.toString(),
      attestor: a.attestor,
      claims: flattenClaims(a.claims),
      issuedAt,
      expiresAt,
      ...(a.cert_fingerprint ? { certFingerprint: a.cert_fingerprint.toLowerCase() } : {}),
      source: "config",
    });
  });
  return new AttestationStore(records);
}

function compileRevocations(c: CompileContext, raw: RawResources): RevocationList {
  const entries = Object.entries(raw.revocations).map(([name, r]) => compileRevocationEntry(c, name, r, ["revocations", name]));
  const count = entries.reduce((n, e) => n + e.match.length, 0);
  if (count > MAX_MATCHERS) c.error(["revocations"], `${count} revocation matchers; at most ${MAX_MATCHERS} (drop entries past their until)`);
  return new RevocationList(entries);
}

function compileListeners(c: CompileContext, raw: RawResources, policies: ReadonlyMap<string, Policy>): ListenerConfig[] {
  const names = new Set<string>();
  const addrs = new Set<string>();
  const out: ListenerConfig[] = [];
  if (raw.listeners.length === 0 && raw.outbound.length === 0) c.error(["listeners"], "at least one listener (inbound, or outbound) is required");
  raw.listeners.forEach((l, i) => {
    const path = ["listeners", i];
    if (names.has(l.name)) c.error([...path, "name"], `duplicate listener name ${l.name}`);
    names.add(l.name);
    const listen = parseHostPort(l.listen)!;
    if (listen.port !== 0 && addrs.has(l.listen)) c.error([...path, "listen"], `address ${l.listen} is used by another listener`);
    addrs.add(l.listen);
    const policy = policies.get(l.policy);
    if (!policy) {
      c.error([...path, "policy"], `unknown policy ${l.policy}; defined: ${[...policies.keys()].join(", ") || "none"}`);
      return;
    }
    out.push({
      name: l.name,
      listen,
      upstream: parseHostPort(l.upstream)!,
      policy,
      handshakeTimeoutMs: l.handshake_timeout,
      connectTimeoutMs: l.connect_timeout,
      ...(l.max_sessions !== undefined ? { maxSessions: l.max_sessions } : {}),
      alpn: l.alpn,
      ...(l.proxy_protocol ? { proxyProtocol: proxyProtocolOf(l.proxy_protocol) } : {}),
      ...(l.multiplex ? { multiplex: multiplexOf(l.multiplex) } : {}),
    });
  });
  return out;
}

function multiplexOf(m: true | { max_streams: number; idle_timeout: number }): MultiplexConfig {
  return m === true ? { maxStreams: 100, idleTimeoutMs: 60_000 } : { maxStreams: m.max_streams, idleTimeoutMs: m.idle_timeout };
}

function proxyProtocolOf(p: NonNullable<RawResources["listeners"][number]["proxy_protocol"]>): ProxyProtocolConfig {
  return p === "v2"
    ? { version: "v2", tlvs: true, crc32c: false, peerCertificate: false }
    : { version: p.version, tlvs: p.tlvs, crc32c: p.crc32c, peerCertificate: p.peer_certificate };
}

function compileOutbound(c: CompileContext, raw: RawResources): OutboundConfig[] {
  const inbound = new Set(raw.listeners.map((l) => l.name));
  const out: OutboundConfig[] = [];
  raw.outbound.forEach((o, i) => {
    const path = ["outbound", i];
    if (inbound.has(o.name) || out.some((x) => x.name === o.name)) c.error([...path, "name"], `listener name ${o.name} is already used`);
    const id = SpiffeId.tryParse(o.expect_id);
    if (!(id instanceof SpiffeId)) return void c.error([...path, "expect_id"], id.message);
    const token = (k: "attestation_token" | "approval_token") => {
      const f = o.negotiate?.[k];
      return f === undefined ? undefined : c.readFile([...path, "negotiate", k], f)?.trim();
    };
    const n = o.negotiate;
    if (o.transport !== "multiplexed" && (o.target !== undefined || o.multiplex))
      c.error([...path, "transport"], "target and multiplex apply to transport: multiplexed only");
    const attestationToken = token("attestation_token");
    const approvalToken = token("approval_token");
    out.push({
      name: o.name,
      listen: parseHostPort(o.listen)!,
      remote: parseHostPort(o.remote)!,
      expectId: id,
      ...(o.server_name ? { serverName: o.server_name } : {}),
      connectTimeoutMs: o.connect_timeout,
      ...(o.transport === "multiplexed" ? { multiplexed: { ...multiplexOf(o.multiplex ?? true), target: o.target ?? o.remote } } : {}),
      ...(n
        ? {
            negotiate: {
              roles: n.roles,
              ...(n.purpose ? { purpose: n.purpose } : {}),
              ...(attestationToken ? { attestationToken } : {}),
              ...(approvalToken ? { approvalToken } : {}),
            },
          }
        : {}),
    });
  });
  return out;
}
