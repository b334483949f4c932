// The control-plane protocol on the wire: loading the proto, and converting resources between the
// YAML shape (what files and the schema speak) and the typed messages of parley.control.v1. Longer
// than most modules on purpose: both directions of every message sit side by side, so a field is
// added in one place (test/control-fields.test.ts fails when one is missed).
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { PROTO_ROOT } from "../assets/paths.js";

export const PROTO_FILE = "parley/control/v1/control.proto";

/** Field names as in the .proto (snake_case), like the YAML; unset fields absent. */
export const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: false, oneofs: true, includeDirs: [PROTO_ROOT] };

export function loadControlService(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as { parley: { control: { v1: { ControlPlane: grpc.ServiceClientConstructor } } } };
  return pkg.parley.control.v1.ControlPlane;
}

type Obj = Record<string, unknown>;

// ---- google.protobuf.Struct / Value ----

export type WireValue =
  | { nullValue: "NULL_VALUE" | 0 }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { structValue: WireStruct }
  | { listValue: { values?: WireValue[] } };
export interface WireStruct {
  fields?: Record<string, WireValue>;
}

export function toValue(v: unknown): WireValue {
  if (v === null || v === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v as Record<string, unknown>) };
}

export function toStruct(o: Record<string, unknown>): WireStruct {
  return { fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, toValue(v)])) };
}

/** Values nested deeper than this are cut to null: a push cannot exhaust the stack. */
const MAX_VALUE_DEPTH = 32;

export function fromValue(v: WireValue | undefined, depth = 0): unknown {
  if (!v || typeof v !== "object" || depth > MAX_VALUE_DEPTH) return null;
  if ("numberValue" in v) return v.numberValue;
  if ("stringValue" in v) return v.stringValue;
  if ("boolValue" in v) return v.boolValue;
  if ("structValue" in v) return fromStruct(v.structValue, depth + 1);
  if ("listValue" in v) return (v.listValue.values ?? []).map((x) => fromValue(x, depth + 1));
  return null;
}

export function fromStruct(s: WireStruct | undefined, depth = 0): Record<string, unknown> {
  const fields = s?.fields;
  if (!fields || typeof fields !== "object") return {};
  return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, fromValue(v, depth)]));
}

// ---- resources ----

export interface WireResource {
  name: string;
  /** The kind's name, as the oneof member is named: lets a sidecar name (and skip) a kind it does not know. */
  type?: string;
  /** Set by the decoder: which member of the oneof is present (absent when the kind is unknown to this build). */
  kind?: string | undefined;
  [kind: string]: unknown;
}

/** Every kind this build knows, in the order of the oneof. */
export const RESOURCE_KINDS = [
  "listener",
  "policy",
  "trust_bundle",
  "role",
  "attestor",
  "attestation",
  "settings",
  "approver",
  "revocation",
  "token_service",
  "verifier",
  "outbound",
] as const;
export type ResourceKind = (typeof RESOURCE_KINDS)[number];
const KNOWN_KINDS: ReadonlySet<string> = new Set(RESOURCE_KINDS);

/**
 * proto-loader with `oneofs: true` also marks each proto3 `optional` field's synthetic oneof: a
 * `_max_sessions: "max_sessions"` member beside `max_sessions`. No field of the protocol starts with
 * `_`, so such a member (whose value is its own name without the underscore) is dropped everywhere.
 */
export function dropSyntheticOneofs(v: unknown, depth = 0): unknown {
  if (v === null || typeof v !== "object" || depth > MAX_VALUE_DEPTH) return v;
  if (Array.isArray(v)) return v.map((x) => dropSyntheticOneofs(x, depth + 1));
  const out: Obj = {};
  for (const [k, x] of Object.entries(v as Obj)) {
    if (k.startsWith("_") && x === k.slice(1)) continue;
    out[k] = dropSyntheticOneofs(x, depth + 1);
  }
  return out;
}

/** Scalars only: anything else is absent (the schema then names what is missing). */
const str = (v: unknown) => (typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? String(v) : undefined);
const arr = (v: unknown): unknown[] | undefined => (Array.isArray(v) && v.length > 0 ? v : undefined);

/** Drops undefined members, so absent stays absent on both sides. */
function clean<T extends Obj>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

function matcherOut(m: Obj): Obj {
  return clean({ id: str(m.id), trust_domain: str(m.trust_domain), path_prefix: str(m.path_prefix), glob: str(m.glob) });
}

function limitsOut(l: Obj | undefined): Obj | undefined {
  if (!l) return undefined;
  // YAML's `max_sessions: { max, scope }` is the wire's max_sessions + max_sessions_scope.
  const sessions = typeof l.max_sessions === "object" && l.max_sessions !== null ? (l.max_sessions as Obj) : undefined;
  return clean({
    max_duration: str(l.max_duration),
    idle_timeout: str(l.idle_timeout),
    byte_budget: str(l.byte_budget),
    bandwidth: str(l.bandwidth),
    identity_bandwidth: str(l.identity_bandwidth),
    rate: l.rate === undefined ? undefined : clean({ ...(l.rate as Obj), scope: undefined }),
    rate_scope: str((l.rate as Obj | undefined)?.scope),
    max_sessions: sessions ? sessions.max : l.max_sessions,
    max_sessions_scope: str(sessions?.scope),
    max_wait: str(l.max_wait),
    per_task: l.per_task,
  });
}

const REVOCATION_KEYS = ["txn", "jti", "grant", "id", "path_prefix", "cert_fingerprint", "attestor"] as const;

function revocationMatchOut(m: Obj): Obj {
  return clean(Object.fromEntries(REVOCATION_KEYS.map((k) => [k, str(m[k])])));
}

function revocationMatchIn(m: Obj): Obj {
  return clean(Object.fromEntries(REVOCATION_KEYS.map((k) => [k, m[k]])));
}

const SETTINGS_LIMITS = ["max_chain_length", "max_sessions", "max_handshakes", "max_handshakes_per_source", "source_rate", "max_held"] as const;

/** Claim (dotted path) → accepted values, as ClaimValues. */
function claimsOut(claims: unknown): Obj | undefined {
  if (claims === undefined) return undefined;
  return Object.fromEntries(Object.entries(claims as Obj).map(([k, v]) => [k, { values: (Array.isArray(v) ? v : [v]).map(toValue) }]));
}

function claimsIn(claims: unknown): Obj | undefined {
  if (claims === undefined) return undefined;
  return Object.fromEntries(
    Object.entries(asObj(claims)).map(([k, v]) => {
      const values = list(asObj(v).values).map((x) => fromValue(x as WireValue));
      return [k, values.length === 1 ? values[0] : values];
    }),
  );
}

function ruleOut(r: Obj): Obj {
  const a = r.attestation as Obj | undefined;
  const c = r.conditions as Obj | undefined;
  return clean({
    name: str(r.name),
    action: str(r.action),
    mode: str(r.mode),
    match: ((r.match as Obj[] | undefined) ?? []).map(matcherOut),
    roles: (r.roles as string[] | undefined) ?? [],
    attestation: a
      ? clean({
          attestor: str(a.attestor),
          claims: claimsOut(a.claims) ?? {},
          max_age: str(a.max_age),
          ear: a.ear,
        })
      : undefined,
    conditions: c
      ? clean({
          source_cidrs: c.source_cidrs,
          sni: c.sni,
          alpn: c.alpn,
          listeners: c.listeners,
          time: c.time,
          max_cert_lifetime: str(c.max_cert_lifetime),
          max_cert_remaining: str(c.max_cert_remaining),
          acting_for: c.acting_for,
          actors: (c.actors as Obj[] | undefined)?.map(matcherOut),
          tctx: claimsOut(c.tctx),
          rctx: claimsOut(c.rctx),
        })
      : undefined,
    limits: limitsOut(r.limits as Obj | undefined),
    max_delegation_depth: r.max_delegation_depth,
  });
}

/** A listener's or route's `multiplex`: `true` is the message present and empty (the defaults); absent stays absent. */
function multiplexOut(m: unknown): Obj | undefined {
  if (m === undefined) return undefined;
  const o = asObj(m);
  return clean({ max_streams: o.max_streams, idle_timeout: str(o.idle_timeout) });
}

/** An outbound route's body: the file's keys but `negotiate`, which is not pushed (README, "Control plane"). */
function outboundOut(o: Obj): Obj {
  return clean({
    listen: str(o.listen),
    remote: str(o.remote),
    expect_id: str(o.expect_id),
    server_name: str(o.server_name),
    connect_timeout: str(o.connect_timeout),
    transport: str(o.transport),
    target: str(o.target),
    multiplex: multiplexOut(o.multiplex),
  });
}

/**
 * YAML-shaped resources (bundles already inline as `bundle_pem`) → wire resources, in a stable order
 * so the same content always makes the same bytes (and version).
 */
export function resourcesToWire(raw: Obj): WireResource[] {
  const out: WireResource[] = [];
  const sorted = (o: unknown) => Object.entries((o as Obj | undefined) ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const l of ((raw.listeners as Obj[] | undefined) ?? []).slice().sort((a, b) => String(a.name).localeCompare(String(b.name)))) {
    out.push({
      name: String(l.name),
      type: "listener",
      listener: clean({
        listen: str(l.listen),
        upstream: str(l.upstream),
        policy: str(l.policy),
        handshake_timeout: str(l.handshake_timeout),
        connect_timeout: str(l.connect_timeout),
        max_sessions: l.max_sessions,
        proxy_protocol: l.proxy_protocol === "v2" ? { version: "v2" } : l.proxy_protocol,
        multiplex: multiplexOut(l.multiplex),
        alpn: arr(l.alpn),
      }),
    });
  }
  for (const o of ((raw.outbound as Obj[] | undefined) ?? []).slice().sort((a, b) => String(a.name).localeCompare(String(b.name)))) {
    out.push({ name: String(o.name), type: "outbound", outbound: outboundOut(o) });
  }
  for (const [name, p] of sorted(raw.policies)) {
    const pol = p as Obj;
    out.push({
      name,
      type: "policy",
      policy: clean({
        default: str(pol.default),
        mode: str(pol.mode),
        limits: limitsOut(pol.limits as Obj | undefined),
        rules: ((pol.rules as Obj[] | undefined) ?? []).map(ruleOut),
      }),
    });
  }
  for (const [name, td] of sorted(raw.trust_domains))
    out.push({ name, type: "trust_bundle", trust_bundle: { x509_authorities_pem: str((td as Obj).bundle_pem) ?? "" } });
  for (const [name, ms] of sorted(raw.roles)) out.push({ name, type: "role", role: { match: (ms as Obj[]).map(matcherOut) } });
  const jwksJson = (v: unknown) => (v === undefined ? undefined : JSON.stringify(v));
  for (const [name, a] of sorted(raw.attestors))
    out.push({ name, type: "attestor", attestor: clean({ description: str((a as Obj | null)?.description), jwks_json: jwksJson((a as Obj | null)?.jwks) }) });
  for (const [name, a] of sorted(raw.approvers))
    out.push({ name, type: "approver", approver: clean({ description: str((a as Obj).description), jwks_json: jwksJson((a as Obj).jwks) }) });
  for (const kind of ["token_service", "verifier"] as const) {
    for (const [name, a] of sorted(raw[kind === "token_service" ? "token_services" : "verifiers"])) {
      const body = clean({ description: str((a as Obj).description), issuer: str((a as Obj).issuer), jwks_json: jwksJson((a as Obj).jwks) });
      out.push({ name, type: kind, [kind]: body });
    }
  }
  ((raw.attestations as Obj[] | undefined) ?? []).forEach((a, i) => {
    out.push({
      name: `${str(a.subject) ?? ""}#${str(a.attestor) ?? ""}#${i}`,
      type: "attestation",
      attestation: clean({
        subject: str(a.subject),
        attestor: str(a.attestor),
        claims: toStruct((a.claims as Obj | undefined) ?? {}),
        issued_at: str(a.issued_at),
        expires_at: str(a.expires_at),
        cert_fingerprint: str(a.cert_fingerprint),
      }),
    });
  });
  for (const [name, r] of sorted(raw.revocations)) {
    const rev = r as Obj;
    out.push({
      name,
      type: "revocation",
      revocation: clean({ reason: str(rev.reason), until: str(rev.until), match: ((rev.match as Obj[] | undefined) ?? []).map(revocationMatchOut) }),
    });
  }
  const limits = (raw.limits as Obj | undefined) ?? {};
  const settings = clean({
    drain_timeout: str(raw.drain_timeout),
    revocation_grace: str(raw.revocation_grace),
    ...Object.fromEntries(SETTINGS_LIMITS.map((k) => [k, limits[k]])),
    shared_limits: sharedLimitsOut(raw.shared_limits as Obj | undefined),
  });
  if (Object.keys(settings).length > 0) out.push({ name: "settings", type: "settings", settings });
  return out;
}

/** Pushed data is untrusted: anything that should be an object and is not becomes an empty one, which
 * the schema then reports as missing what it needs. */
function asObj(v: unknown): Obj {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Obj) : {};
}

/** A proto3 `optional` field comes with a synthetic oneof `_<field>` naming it (LOADER_OPTIONS.oneofs): not data. */
function fieldsOnly(o: Obj): Obj {
  return Object.fromEntries(Object.entries(o).filter(([k, v]) => !(k.startsWith("_") && v === k.slice(1))));
}

function list(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function matcherIn(m: Obj): Obj {
  return clean({ id: m.id, trust_domain: m.trust_domain, path_prefix: m.path_prefix, glob: m.glob });
}

/** The wire's `max_sessions` + `max_sessions_scope` are YAML's `max_sessions: { max, scope }`; `rate_scope` is `rate.scope`. */
function limitsIn(l: Obj | undefined): Obj | undefined {
  if (!l) return undefined;
  const { max_sessions_scope: scope, rate_scope: rateScope, ...rest } = l;
  return clean({
    ...rest,
    ...(scope !== undefined ? { max_sessions: { max: rest.max_sessions, scope } } : {}),
    ...(rateScope !== undefined ? { rate: { ...asObj(rest.rate), scope: rateScope } } : {}),
  });
}

/** The YAML `shared_limits` (breaker nested) ⇄ the wire's flat SharedLimits message. */
function sharedLimitsOut(s: Obj | undefined): Obj | undefined {
  if (!s) return undefined;
  const b = asObj(s.breaker);
  return clean({
    url: str(s.url),
    key_prefix: str(s.key_prefix),
    on_unavailable: str(s.on_unavailable),
    timeout: str(s.timeout),
    lease_ttl: str(s.lease_ttl),
    breaker_failures: b.failures,
    breaker_probe_interval: str(b.probe_interval),
  });
}

function sharedLimitsIn(s: Obj): Obj {
  const breaker = clean({ failures: s.breaker_failures, probe_interval: s.breaker_probe_interval });
  return clean({
    url: s.url,
    key_prefix: s.key_prefix,
    on_unavailable: s.on_unavailable,
    timeout: s.timeout,
    lease_ttl: s.lease_ttl,
    breaker: Object.keys(breaker).length > 0 ? breaker : undefined,
  });
}

function ruleIn(rule: unknown): Obj {
  const r = asObj(rule);
  const a = r.attestation === undefined ? undefined : asObj(r.attestation);
  const c = r.conditions === undefined ? undefined : asObj(r.conditions);
  return clean({
    name: r.name,
    action: r.action,
    mode: r.mode,
    match: arr(r.match)?.map((m) => matcherIn(asObj(m))),
    roles: arr(r.roles),
    attestation: a
      ? clean({
          attestor: a.attestor,
          claims: claimsIn(a.claims) ?? {},
          max_age: a.max_age,
          ear: a.ear === undefined ? undefined : earIn(asObj(a.ear)),
        })
      : undefined,
    conditions: c
      ? clean({
          source_cidrs: arr(c.source_cidrs),
          sni: arr(c.sni),
          alpn: arr(c.alpn),
          listeners: arr(c.listeners),
          time: arr(c.time)?.map((w) => clean({ ...asObj(w), days: arr(asObj(w).days) })),
          max_cert_lifetime: c.max_cert_lifetime,
          max_cert_remaining: c.max_cert_remaining,
          acting_for: arr(c.acting_for),
          actors: arr(c.actors)?.map((m) => matcherIn(asObj(m))),
          tctx: mapIn(c.tctx),
          rctx: mapIn(c.rctx),
        })
      : undefined,
    limits: limitsIn(r.limits === undefined ? undefined : asObj(r.limits)),
    max_delegation_depth: r.max_delegation_depth,
  });
}

/** An absent proto map decodes as {}: absent again in the YAML shape. */
function mapIn(m: unknown): Obj | undefined {
  const claims = m === undefined ? undefined : claimsIn(m);
  return claims && Object.keys(claims).length > 0 ? claims : undefined;
}

function earIn(e: Obj): Obj {
  return clean({ allow_warning: e.allow_warning, submods: arr(e.submods), appraisal_policy_ids: arr(e.appraisal_policy_ids) });
}

export interface FromWire {
  /** The YAML shape, for the schema. */
  raw: Obj;
  /** Structural problems (each makes the push a NACK). */
  problems: string[];
  /** Resources of kinds this build does not know, skipped: `type/name`. */
  skipped: string[];
}

/** Which kind a resource is, or why it has none this build can use. */
function kindOf(r: WireResource): { kind: ResourceKind } | { skip: string } | { problem: string } {
  const type = typeof r.type === "string" ? r.type : "";
  // `kind` is the decoder's oneof marker; objects never encoded (tests, tools) have the member alone.
  const marked = typeof r.kind === "string" ? r.kind : KNOWN_KINDS.has(type) ? type : undefined;
  const kind = marked !== undefined && r[marked] !== undefined ? marked : undefined;
  if (kind !== undefined && KNOWN_KINDS.has(kind)) {
    if (type !== "" && type !== kind) return { problem: `resource ${JSON.stringify(r.name)}: type ${JSON.stringify(type)} but a ${kind} body` };
    return { kind: kind as ResourceKind };
  }
  // A oneof member this build's descriptors lack arrives as no member at all; its `type` names it.
  if (type !== "" && !KNOWN_KINDS.has(type)) return { skip: `${type}/${r.name}` };
  return { problem: `resource ${JSON.stringify(r.name)}: no kind set${type ? ` (type ${type})` : ""}` };
}

/** Wire resources → the YAML shape the schema validates. Structural problems are returned, not thrown. */
export function resourcesFromWire(resources: readonly WireResource[]): FromWire {
  const problems: string[] = [];
  const skipped: string[] = [];
  const listeners: Obj[] = [];
  const policies: Obj = {};
  const trust_domains: Obj = {};
  const roles: Obj = {};
  const attestors: Obj = {};
  const approvers: Obj = {};
  const token_services: Obj = {};
  const verifiers: Obj = {};
  /** A JWK Set sent as JSON; unparsable text is kept as a string for the schema to refuse. */
  const jwksOf = (v: unknown) => {
    if (typeof v !== "string") return undefined;
    try {
      return JSON.parse(v) as unknown;
    } catch {
      return v;
    }
  };
  const attestations: Obj[] = [];
  const revocations: Obj = {};
  const outbound: Obj[] = [];
  let settings: Obj | undefined;
  const seen = new Set<string>();
  for (const r of resources) {
    const k = kindOf(r);
    if ("skip" in k) {
      skipped.push(k.skip);
      continue;
    }
    if ("problem" in k) {
      problems.push(k.problem);
      continue;
    }
    const kind = k.kind;
    const key = `${kind}/${r.name}`;
    if (seen.has(key)) problems.push(`${key}: duplicate resource`);
    seen.add(key);
    if (typeof r.name !== "string" || r.name === "") problems.push(`${kind} resource without a name`);
    const body = asObj(dropSyntheticOneofs(r[kind]));
    switch (kind) {
      case "listener":
        listeners.push(
          clean({
            name: r.name,
            ...fieldsOnly(body),
            proxy_protocol: body.proxy_protocol === undefined ? undefined : fieldsOnly(asObj(body.proxy_protocol)),
            // Present (even empty) = on; the schema fills in the defaults and bounds what is set.
            multiplex: body.multiplex === undefined ? undefined : fieldsOnly(asObj(body.multiplex)),
            alpn: arr(body.alpn),
          }),
        );
        break;
      case "policy":
        policies[r.name] = clean({
          default: body.default,
          mode: body.mode,
          limits: limitsIn(body.limits === undefined ? undefined : asObj(body.limits)),
          rules: list(body.rules).map(ruleIn),
        });
        break;
      case "trust_bundle":
        trust_domains[r.name] = { bundle_pem: body.x509_authorities_pem ?? "" };
        break;
      case "role":
        roles[r.name] = list(body.match).map((m) => matcherIn(asObj(m)));
        break;
      case "attestor":
        attestors[r.name] = clean({ description: body.description, jwks: jwksOf(body.jwks_json) });
        break;
      case "approver":
        approvers[r.name] = clean({ description: body.description, jwks: jwksOf(body.jwks_json) });
        break;
      case "token_service":
      case "verifier":
        (kind === "verifier" ? verifiers : token_services)[r.name] = clean({
          description: body.description,
          issuer: body.issuer,
          jwks: jwksOf(body.jwks_json),
        });
        break;
      case "attestation":
        attestations.push(clean({ ...body, claims: fromStruct(asObj(body.claims) as WireStruct) }));
        break;
      case "revocation":
        revocations[r.name] = clean({ reason: body.reason, until: body.until, match: list(body.match).map((m) => revocationMatchIn(asObj(m))) });
        break;
      case "outbound":
        outbound.push(clean({ name: r.name, ...body, multiplex: body.multiplex === undefined ? undefined : asObj(body.multiplex) }));
        break;
      case "settings":
        if (settings) problems.push("settings: more than one settings resource");
        settings = body;
        break;
    }
  }
  const raw: Obj = { listeners, policies, trust_domains, roles, attestors, approvers, attestations, revocations };
  // Newer sections only when used, so a push without them reads as before.
  if (Object.keys(token_services).length > 0) raw.token_services = token_services;
  if (Object.keys(verifiers).length > 0) raw.verifiers = verifiers;
  if (outbound.length > 0) raw.outbound = outbound;
  if (settings?.drain_timeout !== undefined) raw.drain_timeout = settings.drain_timeout;
  if (settings?.revocation_grace !== undefined) raw.revocation_grace = settings.revocation_grace;
  const limits = clean(Object.fromEntries(SETTINGS_LIMITS.map((k) => [k, settings?.[k]])));
  if (Object.keys(limits).length > 0) raw.limits = limits;
  if (settings?.shared_limits !== undefined) raw.shared_limits = sharedLimitsIn(asObj(settings.shared_limits));
  return { raw, problems, skipped };
}
