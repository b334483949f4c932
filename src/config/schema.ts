// The shape of a sidecar configuration file. Unknown keys are errors everywhere: a typo must never
// silently become a default. Durations and sizes become numbers (ms, bytes) here.
import { z } from "zod";
import { parseDuration, parseHostPort, parseSize } from "./units.js";

const duration = z
  .string()
  .refine((s) => parseDuration(s) !== undefined, { error: "expected a duration such as 250ms, 5s, 1m, 2h or 1d" })
  .transform((s) => parseDuration(s)!);
const size = z.union([
  z.number().int().nonnegative(),
  z
    .string()
    .refine((s) => parseSize(s) !== undefined, { error: "expected a size such as 65536, 64KiB, 10MB or 1GiB" })
    .transform((s) => parseSize(s)!),
]);
const perSecond = z.union([
  z.number().int().positive(),
  z
    .string()
    .refine((s) => s.endsWith("/s") && (parseSize(s.slice(0, -2)) ?? 0) > 0, { error: "expected bytes per second such as 1048576 or 10MiB/s" })
    .transform((s) => parseSize(s.slice(0, -2))!),
]);
const hostPort = z.string().refine((s) => parseHostPort(s) !== undefined, {
  error: "expected host:port, e.g. 127.0.0.1:8443 or [::1]:8443",
});
export const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "expected a name of letters, digits, '.', '_' or '-' (at most 63)");
const clock = z.string().regex(/^(([01]\d|2[0-3]):[0-5]\d|24:00)$/, "expected a time of day HH:MM (00:00 to 24:00)");
const instant = z.string().refine((s) => /^\d{4}-\d\d-\d\dT/.test(s) && !Number.isNaN(Date.parse(s)), {
  error: "expected an ISO 8601 timestamp such as 2026-01-31T12:00:00Z",
});
const mode = z.enum(["enforce", "audit"]);
const scalar = z.union([z.string(), z.number(), z.boolean()]);

const matcher = z
  .strictObject({ id: z.string().optional(), trust_domain: z.string().optional(), path_prefix: z.string().optional(), glob: z.string().optional() })
  .refine((m) => [m.id, m.trust_domain, m.path_prefix, m.glob].filter((v) => v !== undefined).length === 1, {
    error: "a matcher has exactly one of id, trust_domain, path_prefix or glob",
  });

const rate = z.strictObject({ per_second: z.number().positive(), burst: z.number().int().positive().optional() });
const scope = z.enum(["local", "shared"]);
/** A session rate: `shared` draws from one bucket per identity for the whole mesh (shared_limits). */
const sessionRate = rate.extend({ scope: scope.optional() });

/** A task's own bound (limits keyed by the approval's `txn`); README, "Per-task limits". */
const perTask = z
  .strictObject({
    max_sessions: z.number().int().positive().optional(),
    per_minute: z.number().positive().optional(),
    burst: z.number().int().positive().optional(),
    scope: scope.optional(),
  })
  .refine((t) => t.max_sessions !== undefined || t.per_minute !== undefined, { error: "per_task needs max_sessions, per_minute or both" })
  .refine((t) => t.burst === undefined || t.per_minute !== undefined, { error: "burst is the burst of per_minute: give per_minute too" });

const limits = z.strictObject({
  max_duration: duration.optional(),
  idle_timeout: duration.optional(),
  byte_budget: size.optional(),
  bandwidth: perSecond.optional(),
  identity_bandwidth: perSecond.optional(),
  rate: sessionRate.optional(),
  /** A number (this sidecar), or `{ max, scope: shared }` (every sidecar of the mesh, leases in Redis). */
  max_sessions: z.union([z.number().int().positive(), z.strictObject({ max: z.number().int().positive(), scope: scope.default("local") })]).optional(),
  max_wait: duration.optional(),
  per_task: perTask.optional(),
});

/** Claim (dotted path) → the accepted value, or a list of accepted values. */
const claimMatch = z.record(z.string(), z.union([scalar, z.array(scalar).min(1)]));

const conditions = z.strictObject({
  source_cidrs: z.array(z.string()).min(1).optional(),
  sni: z.array(z.string()).min(1).optional(),
  alpn: z.array(z.string().min(1)).min(1).optional(),
  listeners: z.array(name).min(1).optional(),
  time: z
    .array(z.strictObject({ zone: z.string(), days: z.array(z.string()).min(1).optional(), from: clock, to: clock }))
    .min(1)
    .optional(),
  max_cert_lifetime: duration.optional(),
  max_cert_remaining: duration.optional(),
  /** Of the task approval (README, "Standard tokens"): whom it acts for, who is in its `act` chain, a Transaction Token's context. */
  acting_for: z.array(z.string().min(1).max(2048)).min(1).optional(),
  actors: z.array(matcher).min(1).optional(),
  tctx: claimMatch.optional(),
  rctx: claimMatch.optional(),
});

const rule = z.strictObject({
  name,
  action: z.enum(["allow", "deny"]),
  mode: mode.optional(),
  match: z.array(matcher).min(1, "omit match to match every verified peer; an empty list matches nobody").optional(),
  roles: z.array(name).min(1).optional(),
  attestation: z
    .strictObject({
      attestor: name,
      claims: claimMatch.optional(),
      max_age: duration.optional(),
      /** An EAR attestation result's appraisal (draft-ietf-rats-ear-04): affirming, or warning when allowed; overall or per submodule. */
      ear: z
        .strictObject({
          allow_warning: z.boolean().default(false),
          submods: z.array(z.string().min(1)).min(1).optional(),
          appraisal_policy_ids: z.array(z.string().min(1)).min(1).optional(),
        })
        .optional(),
    })
    .optional(),
  conditions: conditions.optional(),
  limits: limits.optional(),
  /** At most this many actors in the approval's `act` chain (RFC 8693 §4.1); 16 is the most parley parses. */
  max_delegation_depth: z.number().int().min(0).max(16).optional(),
});

const policy = z.strictObject({
  default: z.enum(["allow", "deny"]).default("deny"),
  mode: mode.default("enforce"),
  limits: limits.optional(),
  rules: z.array(rule).default([]),
});

const MAX_IDLE_MS = 86_400_000;

/** HTTP/2 bounds of a multiplexed connection (README, "Multiplexed hops"). */
const multiplex = z.strictObject({
  /** Streams (sessions) at once on one connection: SETTINGS_MAX_CONCURRENT_STREAMS inbound, the pool's cap outbound. */
  max_streams: z.number().int().min(1).max(1000).default(100),
  /** A connection with no stream for this long is closed (GOAWAY). Zero would never close; over 24 h is no idle bound. */
  idle_timeout: duration.refine((ms) => ms >= 1 && ms <= MAX_IDLE_MS, { error: "expected a duration from 1ms to 24h" }).default(60_000),
});

const listener = z.strictObject({
  name,
  listen: hostPort,
  upstream: hostPort,
  policy: name,
  handshake_timeout: duration.default(5000),
  connect_timeout: duration.default(5000),
  max_sessions: z.number().int().positive().optional(),
  /** ALPN protocols the workload speaks, selected for clients that offer them (parley/1 aside). */
  alpn: z.array(z.string().min(1).max(255)).min(1).default(["http/1.1"]),
  /** A PROXY protocol v2 header to the workload before any client byte (README, "PROXY protocol v2"). */
  proxy_protocol: z
    .union(
      [
        z.literal("v2"),
        z
          .strictObject({
            version: z.literal("v2"),
            /** false: the address block only, for receivers that take no TLVs (nginx before 1.23.2 refuses over 107 bytes). */
            tlvs: z.boolean().default(true),
            /** PP2_TYPE_CRC32C over the whole header. */
            crc32c: z.boolean().default(false),
            /** The peer's leaf certificate (DER) in custom TLV 0xE4. */
            peer_certificate: z.boolean().default(false),
          })
          .refine((p) => p.tlvs || !p.peer_certificate, { error: "peer_certificate is a TLV: it needs tlvs: true" }),
      ],
      { error: "expected v2 or { version: v2, tlvs, crc32c, peer_certificate }" },
    )
    .optional(),
  /** Accept multiplexed connections (ALPN h2, one HTTP/2 CONNECT stream a session); true: the default bounds. */
  multiplex: z.union([z.literal(true), multiplex]).optional(),
});

const outbound = z.strictObject({
  name,
  /** Plaintext from the local application; keep it on loopback. */
  listen: hostPort,
  /** The remote sidecar (mTLS). */
  remote: hostPort,
  /** The remote's SPIFFE ID must be exactly this. */
  expect_id: z.string(),
  server_name: z.string().optional(),
  connect_timeout: duration.default(5000),
  /** tls: one mTLS connection a session; multiplexed: HTTP/2 CONNECT streams over pooled mTLS connections. */
  transport: z.enum(["tls", "multiplexed"]).default("tls"),
  /** The `:authority` of each CONNECT stream (multiplexed); default the remote address. */
  target: hostPort.optional(),
  /** The pool's bounds (multiplexed). */
  multiplex: multiplex.optional(),
  /** Negotiate (ALPN parley/1) on the application's behalf. Token values are files, re-read on reload. */
  negotiate: z
    .strictObject({
      roles: z.array(name).default([]),
      purpose: z.string().max(512).optional(),
      attestation_token: z.string().optional(),
      approval_token: z.string().optional(),
    })
    .optional(),
});

const jwks = z.looseObject({ keys: z.array(z.record(z.string(), z.unknown())) });

/** An issuer of standard tokens: `issuer` is the `iss` its tokens carry when they carry one (default: its name). */
const standardIssuer = z.strictObject({ description: z.string().optional(), issuer: z.string().min(1).max(2048).optional(), jwks });

const attestationRecord = z.strictObject({
  subject: z.string(),
  attestor: name,
  claims: z.record(z.string(), z.unknown()).default({}),
  issued_at: instant,
  expires_at: instant,
  cert_fingerprint: z
    .string()
    .regex(/^[0-9a-fA-F]{64}$/, "expected the SHA-256 of the certificate's DER, 64 hex digits")
    .optional(),
});

const hex64 = z.string().regex(/^[0-9a-fA-F]{64}$/, "expected the SHA-256 of the certificate's DER, 64 hex digits");
const tokenValue = z.string().min(1).max(256);
/** What one revocation matcher names: exactly one key (README, "Revocations"). */
const revocationMatcher = z
  .strictObject({
    txn: tokenValue.optional(),
    jti: tokenValue.optional(),
    grant: tokenValue.optional(),
    id: z.string().optional(),
    path_prefix: z.string().optional(),
    cert_fingerprint: hex64.optional(),
    attestor: name.optional(),
  })
  .refine((m) => Object.values(m).filter((v) => v !== undefined).length === 1, {
    error: "a revocation matcher has exactly one of txn, jti, grant, id, path_prefix, cert_fingerprint or attestor",
  });
export const revocation = z.strictObject({
  reason: z.string().min(1).max(512),
  /** The entry is ignored from this instant on, and dropped. */
  until: instant,
  match: z.array(revocationMatcher).min(1),
});

const trustDomain = z
  .strictObject({ bundle: z.string().min(1).optional(), bundle_pem: z.string().min(1).optional() })
  .refine((t) => (t.bundle === undefined) !== (t.bundle_pem === undefined), {
    error: "a trust domain has exactly one of bundle (a file) or bundle_pem (inline PEM)",
  });

const fileIdentity = z.strictObject({ cert: z.string().min(1), key: z.string().min(1) });
/**
 * The SVID and trust bundles from the SPIFFE Workload API. `workload_api:` with nothing under it (YAML
 * null) means every default: the endpoint from SPIFFE_ENDPOINT_SOCKET, the first SVID.
 */
const workloadApi = z
  .strictObject({ endpoint: z.string().min(1).optional(), hint: z.string().min(1).optional() })
  .nullable()
  .transform((w) => w ?? {});
const identity = z.union([fileIdentity, z.strictObject({ workload_api: workloadApi })]);
const LOG_DEFAULT = {
  level: "info" as const,
  categories: { decisions: true, sessions: true, handshakes: true, control: true },
  deny_cap: { burst: 10, window: 10_000 },
  buffer: 4 * 1024 * 1024,
};
const log = z
  .strictObject({
    level: z.enum(["debug", "info", "warn", "error", "silent"]).default("info"),
    /** Switch record kinds off (their metrics still count). */
    categories: z
      .strictObject({
        decisions: z.boolean().default(true),
        sessions: z.boolean().default(true),
        handshakes: z.boolean().default(true),
        control: z.boolean().default(true),
      })
      .default(LOG_DEFAULT.categories),
    /** Identical denials (same listener, peer, reasons, source address): at most `burst` records per `window`. */
    deny_cap: z.union([z.literal(false), z.strictObject({ burst: z.number().int().positive(), window: duration })]).default(LOG_DEFAULT.deny_cap),
    /** Bytes of records held while stdout's reader falls behind; past it, records are dropped and counted. */
    buffer: size.refine((n) => n >= 65536, { error: "at least 64KiB" }).default(LOG_DEFAULT.buffer),
  })
  .default(LOG_DEFAULT);

const admin = z
  .strictObject({
    /** Loopback by default: the admin server is for the pod, not the network. */
    listen: z.union([hostPort, z.literal(false)]).default("127.0.0.1:15000"),
    /** Allow write methods (revoking a session). */
    write: z.boolean().default(false),
  })
  .default({ listen: "127.0.0.1:15000", write: false });

/** What a control plane may push: everything but the sidecar's own identity and its bootstrap. */
export const resourcesShape = {
  trust_domains: z.record(z.string(), trustDomain),
  listeners: z.array(listener).default([]),
  /** Outbound listeners: plaintext in from the local app, mTLS out to a remote sidecar. */
  outbound: z.array(outbound).default([]),
  roles: z.record(name, z.array(matcher).min(1)).default({}),
  attestors: z.record(name, z.strictObject({ description: z.string().optional(), jwks: jwks.optional() })).default({}),
  /** Issuers of task-approval tokens, with their keys. */
  approvers: z.record(name, z.strictObject({ description: z.string().optional(), jwks })).default({}),
  /** OAuth Transaction Token Services (draft-ietf-oauth-transaction-tokens-10): their Txn-Tokens are task approvals. */
  token_services: z.record(name, standardIssuer).default({}),
  /** RATS verifiers (draft-ietf-rats-ear-04): their EAR attestation results are attestation evidence. */
  verifiers: z.record(name, standardIssuer).default({}),
  /** Negotiation (ALPN parley/1): on when present. */
  negotiation: z
    .strictObject({
      /** The sidecar's grant-signing key: an EC P-256 private key (PEM file). */
      grant_key: z.string().min(1),
      grant_ttl: duration.default(600_000),
      frame_timeout: duration.default(2000),
    })
    .optional(),
  attestations: z.array(attestationRecord).default([]),
  /** Limits kept in Redis and shared by every sidecar (README, "Shared limits"). */
  shared_limits: z
    .strictObject({
      url: z.string().regex(/^rediss?:\/\/\S+$/, "expected a redis:// or rediss:// URL"),
      key_prefix: z.string().min(1).max(64).default("parley:"),
      on_unavailable: z.enum(["deny", "local"]).default("deny"),
      timeout: duration.default(50),
      /** PEM file of the CAs that sign the Redis server's certificate (rediss:// only); default: Node's CA store. */
      ca: z.string().min(1).optional(),
      /** How long a session's lease outlives its sidecar's last renewal (renewed every third of it). */
      lease_ttl: duration.refine((ms) => ms >= 1000, { error: "lease_ttl must be at least 1s" }).default(15_000),
      /** Consecutive failures or timeouts that open the circuit breaker, and its probe interval. */
      breaker: z
        .strictObject({ failures: z.number().int().min(1).max(1000).default(3), probe_interval: duration.default(1000) })
        .default({ failures: 3, probe_interval: 1000 }),
    })
    .optional(),
  /** Named revocations: sessions they match are denied, and ended at once when live. */
  revocations: z.record(name, revocation).default({}),
  policies: z.record(name, policy),
  drain_timeout: duration.default(10_000),
  revocation_grace: duration.default(0),
  limits: z
    .strictObject({
      max_chain_length: z.number().int().min(1).max(16).default(8),
      /** Sessions of the whole sidecar. */
      max_sessions: z.number().int().positive().default(10_000),
      /** TLS handshakes in flight, in all and per source address. */
      max_handshakes: z.number().int().positive().default(256),
      max_handshakes_per_source: z.number().int().positive().default(64),
      /** New connections per second per source address (before any cryptography). */
      source_rate: rate.optional(),
      /** Sessions held waiting for a rate token or a slot, in all. */
      max_held: z.number().int().nonnegative().default(1024),
    })
    .default({ max_chain_length: 8, max_sessions: 10_000, max_handshakes: 256, max_handshakes_per_source: 64, max_held: 1024 }),
  /** The floor under peer certificates' algorithms and keys, and the work path building may do. */
  svid_verification: z
    .strictObject({
      min_rsa_bits: z.number().int().min(1024).max(16_384).default(2048),
      allow_sha1: z.boolean().default(false),
      max_signature_checks: z.number().int().min(2).max(256).default(12),
      max_path_candidates: z.number().int().min(2).max(1024).default(64),
    })
    .default({ min_rsa_bits: 2048, allow_sha1: false, max_signature_checks: 12, max_path_candidates: 64 }),
};

export const resourcesSchema = z.strictObject(resourcesShape);

/** A static configuration file: identity, log, and the resources. */
export const configSchema = z.strictObject({ identity, log, admin, ...resourcesShape });

/** A bootstrap file: identity (files or the Workload API) and where the control plane is; resources come from it. */
export const bootstrapSchema = z.strictObject({
  identity,
  log,
  admin,
  control_plane: z.strictObject({
    address: hostPort,
    // The control plane's own rule (src/control/server/server.ts NODE_ID): up to 256 bytes.
    node_id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$/, "expected a node id of letters, digits, '.', '_' or '-' (at most 256)"),
    cluster: z.string().optional(),
    /**
     * TLS to the control plane: a CA bundle to verify it; `expect_id` is the SPIFFE ID its certificate
     * must carry (checked in place of the host name); `mtls` presents the sidecar's own SVID.
     */
    tls: z
      .strictObject({ ca: z.string().min(1), server_name: z.string().optional(), expect_id: z.string().min(1).optional(), mtls: z.boolean().default(false) })
      .optional(),
    max_staleness: duration.default(300_000),
    on_stale: z.enum(["fail_closed", "fail_open"]).default("fail_closed"),
    backoff: z.strictObject({ initial: duration.default(250), max: duration.default(30_000) }).default({ initial: 250, max: 30_000 }),
  }),
  /** Before the first push: `wait` binds nothing; a path serves that static configuration meanwhile. */
  initial: z.union([z.literal("wait"), z.strictObject({ static: z.string().min(1) })]).default("wait"),
});

export type RawResources = z.output<typeof resourcesSchema>;
export type RawConfig = z.output<typeof configSchema>;
export type RawBootstrap = z.output<typeof bootstrapSchema>;
export type LogSettings = RawConfig["log"];
export type AdminSettings = RawConfig["admin"];
export type WorkloadApiSettings = { endpoint?: string | undefined; hint?: string | undefined };
