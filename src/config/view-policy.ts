// Policies as `GET /config` shows them: the configuration file's keys (README, "Configuration"), every
// default filled in, shorthands in their long form, durations as integer milliseconds under the file's
// key plus `_ms`, times of day as the file's HH:MM, matchers as "KIND VALUE" text (KIND a matcher key).
import { describeMatcher } from "../policy/matcher.js";
import type { ClaimValue } from "../policy/attestation.js";
import type { Conditions, Limits, Policy, Rule, TaskLimits, TimeWindow } from "../policy/model.js";

const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const scope = (shared: true | undefined) => (shared ? "shared" : "local");
/** Drops the keys whose value is undefined: absent settings are not shown. */
export const defined = (o: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
const claims = (m: ReadonlyMap<string, readonly ClaimValue[]> | undefined) => m && Object.fromEntries(m);

/** A rate of per_minute M compiles to M/60 a second; printed back to 12 digits so 7 stays 7. */
const perMinute = (perSecond: number) => Number((perSecond * 60).toPrecision(12));

function taskView(t: TaskLimits): Record<string, unknown> {
  return defined({ max_sessions: t.maxSessions, per_minute: t.rate && perMinute(t.rate.perSecond), burst: t.rate?.burst, scope: scope(t.shared) });
}

/** A policy's or rule's `limits`; `max_sessions` and `rate` always in their object form, with scope. */
export function limitsView(l: Limits): Record<string, unknown> {
  return defined({
    max_duration_ms: l.maxDurationMs,
    idle_timeout_ms: l.idleTimeoutMs,
    byte_budget: l.byteBudget,
    bandwidth: l.bandwidthBps,
    identity_bandwidth: l.identityBandwidthBps,
    rate: l.rate && { per_second: l.rate.perSecond, burst: l.rate.burst, scope: scope(l.rate.shared) },
    max_sessions: l.maxSessions !== undefined ? { max: l.maxSessions, scope: scope(l.maxSessionsShared) } : undefined,
    max_wait_ms: l.maxWaitMs,
    per_task: l.perTask && taskView(l.perTask),
  });
}

const clock = (minutes: number) => `${String(Math.floor(minutes / 60)).padStart(2, "0")}:${String(minutes % 60).padStart(2, "0")}`;

function windowView(w: TimeWindow): Record<string, unknown> {
  return { zone: w.zone, days: [...w.days].sort((x, y) => x - y).map((d) => DAYS[d]), from: clock(w.from), to: clock(w.to) };
}

/** An actor matcher's text is its JSON as written (one key); shown as "KIND VALUE", as `match` is. */
function actorText(json: string): string {
  const [kind, value] = Object.entries(JSON.parse(json) as Record<string, string>)[0]!;
  return `${kind} ${value}`;
}

function conditionsView(c: Conditions): Record<string, unknown> {
  return defined({
    source_cidrs: c.sourceCidrs?.text,
    sni: c.sni,
    alpn: c.alpn,
    listeners: c.listeners,
    time: c.time?.map(windowView),
    max_cert_lifetime_ms: c.maxCertLifetimeMs,
    max_cert_remaining_ms: c.maxCertRemainingMs,
    acting_for: c.actingFor,
    actors: c.actors?.text.map(actorText),
    tctx: claims(c.tctx),
    rctx: claims(c.rctx),
  });
}

function ruleView(r: Rule): Record<string, unknown> {
  const a = r.attestation;
  return defined({
    name: r.name,
    action: r.action,
    mode: r.mode,
    match: r.match.length === 0 ? ["every verified peer"] : r.match.map(describeMatcher),
    roles: r.roles.length ? r.roles : undefined,
    attestation: a && {
      ...defined({ attestor: a.attestor, claims: claims(a.claims), max_age_ms: a.maxAgeMs }),
      ...(a.ear ? { ear: defined({ allow_warning: a.ear.allowWarning, submods: a.ear.submods, appraisal_policy_ids: a.ear.appraisalPolicyIds }) } : {}),
    },
    conditions: conditionsView(r.conditions),
    limits: limitsView(r.limits),
    max_delegation_depth: r.maxDelegationDepth,
  });
}

export function policyView(p: Policy): Record<string, unknown> {
  return { default: p.default, mode: p.mode, limits: limitsView(p.limits), rules: p.rules.map(ruleView) };
}
