// Compiling policies from their validated raw shape: every name, ID, glob, CIDR, zone and reference
// checked (each problem reported at its path), rules that can never apply found, indexes built.
// Pure: the caller supplies an error sink that knows files and lines.
import { BlockList, isIP } from "node:net";
import { SpiffeId, SpiffeIdError, TrustDomain } from "../spiffe/spiffeid.js";
import { IdentityIndex, parseGlob, type IdentityMatcher } from "./matcher.js";
import { findUnreachable } from "./reachability.js";
import { claimsOf, compileApprovalConditions, compileEar, type RawEar } from "./compile-approval.js";
import type { Action, AttestationRequirement, Conditions, Limits, Mode, Policy, Rule, TaskLimits, TimeWindow } from "./model.js";

export type Path = readonly (string | number)[];
export type ErrorSink = (path: Path, message: string) => void;

export interface RawMatcher {
  id?: string | undefined;
  trust_domain?: string | undefined;
  path_prefix?: string | undefined;
  glob?: string | undefined;
}

export interface RawLimits {
  max_duration?: number | undefined;
  idle_timeout?: number | undefined;
  byte_budget?: number | undefined;
  bandwidth?: number | undefined;
  identity_bandwidth?: number | undefined;
  rate?: { per_second: number; burst?: number | undefined; scope?: "local" | "shared" | undefined } | undefined;
  max_sessions?: number | { max: number; scope?: "local" | "shared" | undefined } | undefined;
  max_wait?: number | undefined;
  per_task?: RawTaskLimits | undefined;
}

export interface RawTaskLimits {
  max_sessions?: number | undefined;
  per_minute?: number | undefined;
  burst?: number | undefined;
  scope?: "local" | "shared" | undefined;
}

export interface RawTimeWindow {
  zone: string;
  days?: string[] | undefined;
  from: string;
  to: string;
}

export interface RawConditions {
  source_cidrs?: string[] | undefined;
  sni?: string[] | undefined;
  alpn?: string[] | undefined;
  listeners?: string[] | undefined;
  time?: RawTimeWindow[] | undefined;
  max_cert_lifetime?: number | undefined;
  max_cert_remaining?: number | undefined;
  acting_for?: string[] | undefined;
  actors?: RawMatcher[] | undefined;
  tctx?: Record<string, RawClaim | RawClaim[]> | undefined;
  rctx?: Record<string, RawClaim | RawClaim[]> | undefined;
}

export type RawClaim = string | number | boolean;

export interface RawRule {
  name: string;
  action: Action;
  mode?: Mode | undefined;
  match?: RawMatcher[] | undefined;
  roles?: string[] | undefined;
  attestation?:
    { attestor: string; claims?: Record<string, RawClaim | RawClaim[]> | undefined; max_age?: number | undefined; ear?: RawEar | undefined } | undefined;
  conditions?: RawConditions | undefined;
  limits?: RawLimits | undefined;
  max_delegation_depth?: number | undefined;
}

export interface RawPolicy {
  default: Action;
  mode: Mode;
  limits?: RawLimits | undefined;
  rules: RawRule[];
}

export interface PolicySources {
  policies: Record<string, RawPolicy>;
  /** Role → identities bound to it. */
  roles: Record<string, RawMatcher[]>;
  /** Names of configured attestors. */
  attestors: readonly string[];
  /** Names of configured verifiers (EAR attestation results), also attestors for rules. */
  verifiers?: readonly string[];
  /** Names of configured listeners, for `conditions.listeners`. */
  listeners: readonly string[];
}

export function compileMatcher(m: RawMatcher, path: Path, error: ErrorSink): IdentityMatcher | undefined {
  try {
    if (m.id !== undefined) {
      const id = SpiffeId.parse(m.id);
      if (id.path === "") throw new Error(`${m.id} has no path; use trust_domain to match a whole trust domain`);
      return { kind: "id", id };
    }
    if (m.trust_domain !== undefined) return { kind: "trust_domain", trustDomain: TrustDomain.parse(m.trust_domain) };
    if (m.path_prefix !== undefined) return { kind: "path_prefix", prefix: SpiffeId.parse(m.path_prefix) };
    return parseGlob(m.glob!);
  } catch (e) {
    error(path, e instanceof SpiffeIdError ? `${e.message} (rule ${e.rule})` : (e as Error).message);
    return undefined;
  }
}

function compileLimits(l: RawLimits | undefined): Limits {
  if (!l) return {};
  return {
    ...(l.max_duration !== undefined ? { maxDurationMs: l.max_duration } : {}),
    ...(l.idle_timeout !== undefined ? { idleTimeoutMs: l.idle_timeout } : {}),
    ...(l.byte_budget !== undefined ? { byteBudget: l.byte_budget } : {}),
    ...(l.bandwidth !== undefined ? { bandwidthBps: l.bandwidth } : {}),
    ...(l.identity_bandwidth !== undefined ? { identityBandwidthBps: l.identity_bandwidth } : {}),
    ...(l.rate !== undefined
      ? {
          rate: {
            perSecond: l.rate.per_second,
            burst: l.rate.burst ?? Math.max(1, Math.ceil(l.rate.per_second)),
            ...(l.rate.scope === "shared" ? { shared: true as const } : {}),
          },
        }
      : {}),
    ...(typeof l.max_sessions === "number" ? { maxSessions: l.max_sessions } : {}),
    ...(typeof l.max_sessions === "object"
      ? { maxSessions: l.max_sessions.max, ...(l.max_sessions.scope === "shared" ? { maxSessionsShared: true as const } : {}) }
      : {}),
    ...(l.max_wait !== undefined ? { maxWaitMs: l.max_wait } : {}),
    ...(l.per_task !== undefined ? { perTask: compileTaskLimits(l.per_task) } : {}),
  };
}

/** `per_minute` M: a bucket of M/60 tokens a second holding `burst` (default M). */
function compileTaskLimits(t: RawTaskLimits): TaskLimits {
  return {
    ...(t.max_sessions !== undefined ? { maxSessions: t.max_sessions } : {}),
    ...(t.per_minute !== undefined ? { rate: { perSecond: t.per_minute / 60, burst: t.burst ?? Math.max(1, Math.ceil(t.per_minute)) } } : {}),
    ...(t.scope === "shared" ? { shared: true as const } : {}),
  };
}

const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(":").map(Number);
  return h! * 60 + m!;
}

function compileWindow(w: RawTimeWindow, path: Path, error: ErrorSink): TimeWindow | undefined {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: w.zone });
  } catch {
    error([...path, "zone"], `unknown time zone ${w.zone}; use an IANA name such as Europe/Paris or UTC`);
    return undefined;
  }
  const days = new Set<number>();
  for (const d of w.days ?? DAYS) {
    const i = DAYS.indexOf(d.toLowerCase().slice(0, 3));
    if (i < 0 || d.length < 3) {
      error([...path, "days"], `unknown day ${d}; use mon, tue, wed, thu, fri, sat, sun`);
      return undefined;
    }
    days.add(i);
  }
  const from = minutesOf(w.from);
  const to = minutesOf(w.to);
  if (from === to) {
    error(path, "time window is empty: from equals to");
    return undefined;
  }
  return { zone: w.zone, days, from, to };
}

function compileCidrs(cidrs: string[], path: Path, error: ErrorSink): Conditions["sourceCidrs"] {
  const list = new BlockList();
  cidrs.forEach((c, i) => {
    const [addr, bits, extra] = c.split("/");
    const family = isIP(addr ?? "");
    const max = family === 6 ? 128 : 32;
    const n = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
    if (family === 0 || extra !== undefined || !(n >= 0 && n <= max)) {
      error([...path, i], `bad CIDR ${c}: expected an IPv4 or IPv6 address with an optional /prefix (0-32 or 0-128)`);
      return;
    }
    list.addSubnet(addr!, n, family === 6 ? "ipv6" : "ipv4");
  });
  return { list, text: cidrs };
}

function compileConditions(c: RawConditions | undefined, path: Path, src: PolicySources, error: ErrorSink): Conditions {
  if (!c) return {};
  const out: { -readonly [K in keyof Conditions]: Conditions[K] } = {};
  if (c.source_cidrs) {
    const cidrs = compileCidrs(c.source_cidrs, [...path, "source_cidrs"], error);
    if (cidrs) out.sourceCidrs = cidrs;
  }
  if (c.sni) {
    c.sni.forEach((s, i) => {
      if (!/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(s)) {
        error([...path, "sni", i], `bad SNI pattern ${s}: a lowercase DNS name, optionally starting with '*.'`);
      }
    });
    out.sni = c.sni;
  }
  if (c.alpn) out.alpn = c.alpn;
  if (c.listeners) {
    c.listeners.forEach((l, i) => {
      if (!src.listeners.includes(l)) error([...path, "listeners", i], `unknown listener ${l}; defined: ${src.listeners.join(", ")}`);
    });
    out.listeners = c.listeners;
  }
  if (c.time) {
    const windows = c.time.map((w, i) => compileWindow(w, [...path, "time", i], error));
    out.time = windows.filter((w): w is TimeWindow => w !== undefined);
  }
  if (c.max_cert_lifetime !== undefined) out.maxCertLifetimeMs = c.max_cert_lifetime;
  if (c.max_cert_remaining !== undefined) out.maxCertRemainingMs = c.max_cert_remaining;
  return { ...out, ...compileApprovalConditions(c, path, (m, p) => compileMatcher(m, p, error)) };
}

function compileAttestation(a: RawRule["attestation"], path: Path, src: PolicySources, error: ErrorSink): AttestationRequirement | undefined {
  if (!a) return undefined;
  const known = [...src.attestors, ...(src.verifiers ?? [])];
  if (!known.includes(a.attestor)) error([...path, "attestor"], `unknown attestor ${a.attestor}; defined: ${known.join(", ") || "none"}`);
  const ear = a.ear && compileEar(a.ear, a.attestor, src.verifiers ?? [], [...path, "ear"], error);
  return { attestor: a.attestor, claims: claimsOf(a.claims ?? {}), ...(a.max_age !== undefined ? { maxAgeMs: a.max_age } : {}), ...(ear ? { ear } : {}) };
}

function compilePolicy(name: string, p: RawPolicy, src: PolicySources, roles: IdentityIndex<string>, version: string, error: ErrorSink): Policy {
  const seen = new Set<string>();
  const rules: Rule[] = [];
  p.rules.forEach((r, i) => {
    const path = ["policies", name, "rules", i];
    if (seen.has(r.name)) error([...path, "name"], `duplicate rule name ${r.name}`);
    seen.add(r.name);
    const match = (r.match ?? []).map((m, j) => compileMatcher(m, [...path, "match", j], error));
    (r.roles ?? []).forEach((role, j) => {
      if (!(role in src.roles)) error([...path, "roles", j], `unknown role ${role}; defined: ${Object.keys(src.roles).join(", ") || "none"}`);
    });
    const rule: Rule = {
      name: r.name,
      order: i,
      action: r.action,
      mode: r.mode ?? "enforce",
      match: match.filter((m): m is IdentityMatcher => m !== undefined),
      roles: r.roles ?? [],
      ...(r.attestation ? { attestation: compileAttestation(r.attestation, [...path, "attestation"], src, error)! } : {}),
      conditions: compileConditions(r.conditions, [...path, "conditions"], src, error),
      limits: compileLimits(r.limits),
      ...(r.max_delegation_depth !== undefined ? { maxDelegationDepth: r.max_delegation_depth } : {}),
    };
    if (match.every((m) => m !== undefined)) rules.push(rule);
  });
  findUnreachable(rules, name, error);
  const index = new IdentityIndex<Rule>();
  for (const r of rules) {
    if (r.match.length === 0) index.add(undefined, r);
    for (const m of r.match) index.add(m, r);
  }
  return { name, default: p.default, mode: p.mode, rules, limits: compileLimits(p.limits), index, roles, version };
}

/** Compiles role bindings and every policy; problems go to `error`, what compiled is returned. */
export function compilePolicies(src: PolicySources, version: string, error: ErrorSink): Map<string, Policy> {
  const roles = new IdentityIndex<string>();
  for (const [role, matchers] of Object.entries(src.roles)) {
    matchers.forEach((m, i) => {
      const compiled = compileMatcher(m, ["roles", role, i], error);
      if (compiled) roles.add(compiled, role);
    });
  }
  const out = new Map<string, Policy>();
  for (const [name, p] of Object.entries(src.policies)) out.set(name, compilePolicy(name, p, src, roles, version, error));
  return out;
}
