// The admission of one allowed session under every bound its obligations name, local and shared, in
// this order: the identity's shared rate (Redis; with a shared max_sessions too, token and lease in one
// round trip), the task's bounds (./tasks.ts, only with a txn), the sidecar's own admission
// (./admission.ts: local rate, concurrency per identity, listener and in all, with any allowed wait;
// its bounds built once per rule and listener, ./plan.ts),
// then the identity's shared lease if not taken yet. Everything taken before a refusal is given back
// (slots, leases), except rate tokens. A shared bound whose backend is unavailable takes the failure
// mode: refused, or checked with this sidecar's own state (`local`). Shared bounds never hold a
// session waiting: over them it is refused at once.
import type { Limits } from "../policy/model.js";
import type { Admission, AdmissionRefusal, Ticket } from "./admission.js";
import type { Rate } from "./bucket.js";
import type { LimitCounts } from "./events.js";
import type { AdmissionPlan } from "./plan.js";
import type { SharedLimits } from "./shared.js";
import type { TaskBounds } from "./tasks.js";

export interface GateRequest {
  readonly identity: string;
  readonly listener: string;
  /** The task of the session's approval, if it has one. */
  readonly txn?: string | undefined;
  readonly limits: Limits;
  /** The sidecar's own bounds of the session's rule and listener, built with the listener's state. */
  readonly plan: AdmissionPlan;
}

export type GateRefusal = AdmissionRefusal | "shared_limits_unavailable" | "task_limit_exceeded";

export type GateResult =
  | { readonly ok: true; readonly ticket: Ticket; readonly waitedMs: number }
  | { readonly ok: false; readonly reason: GateRefusal; readonly detail: string; readonly waitedMs: number };

export interface GateDeps {
  readonly admission: Admission;
  readonly shared: SharedLimits;
  readonly tasks: TaskBounds;
  readonly counts: LimitCounts;
}

type Refusal = { readonly ok: false; readonly reason: GateRefusal; readonly detail: string };

/** What the identity's shared bounds left to do locally, and the lease they took. */
interface IdentityShared {
  readonly ok: true;
  /** Whether the rate is checked locally: not shared, or the fallback. */
  readonly localRate: boolean;
  /** The shared cap still to acquire a lease for (after the local admission). */
  readonly leaseCap?: number | undefined;
  /** The shared cap checked by this sidecar alone (backend unavailable, mode `local`). */
  readonly fallbackCap?: number | undefined;
  readonly lease?: Ticket;
}

/** The refusal of `identity` over the shared `rate`: its text is built only when it happens. */
function overSharedRate(identity: string, rate: Rate): Refusal {
  return { ok: false, reason: "rate_limited", detail: `${identity} is over the shared ${rate.perSecond}/s (burst ${rate.burst})` };
}

/** The identity's shared rate, with its shared lease in the same round trip when both are shared. */
async function identityShared(d: GateDeps, identity: string, l: Limits): Promise<IdentityShared | Refusal> {
  const cap = l.maxSessionsShared ? l.maxSessions : undefined;
  const rate = l.rate;
  if (!rate?.shared) return { ok: true, localRate: true, leaseCap: cap };
  if (cap === undefined) {
    const v = await d.shared.take(`rate:${identity}`, rate);
    if (v === "local") return { ok: true, localRate: true };
    if (v.ok) return { ok: true, localRate: false };
    return v.unavailable ? { ok: false, reason: "shared_limits_unavailable", detail: v.detail } : overSharedRate(identity, rate);
  }
  const v = await d.shared.admit(`rate:${identity}`, rate, `sessions:${identity}`, cap);
  if (v === "rate") return overSharedRate(identity, rate);
  if (v === "concurrency") return { ok: false, reason: "concurrency_limited", detail: `${identity}: all ${cap} shared sessions are in use` };
  if (v === "local") return { ok: true, localRate: true, fallbackCap: cap };
  return v.ok ? { ok: true, localRate: false, lease: v.value } : { ok: false, reason: "shared_limits_unavailable", detail: v.detail };
}

export async function admitSession(d: GateDeps, r: GateRequest): Promise<GateResult> {
  const l = r.limits;
  // Most sessions have no shared and no task bound: their admission is the sidecar's own, with no
  // ticket wrapper and no await before it (this runs once per connection).
  if (!l.rate?.shared && !l.maxSessionsShared && (r.txn === undefined || !l.perTask)) return d.admission.admit(r.identity, r.listener, r.plan.withRate);
  const held: Ticket[] = [];
  const refuse = (reason: GateRefusal, detail: string, waitedMs = 0): GateResult => {
    for (const t of held) t.release();
    if (reason !== "shared_limits_unavailable") d.counts.hit(reason);
    return { ok: false, reason, detail, waitedMs };
  };
  const id = await identityShared(d, r.identity, l);
  if (!id.ok) return refuse(id.reason, id.detail);
  if (id.lease) held.push(id.lease);
  let fallbackCap = id.fallbackCap;
  if (r.txn !== undefined && l.perTask) {
    const t = await d.tasks.admit(r.txn, l.perTask, d.shared);
    if (!t.ok) return refuse(t.reason, t.detail);
    held.push(t.ticket);
  }
  const a = await d.admission.admit(r.identity, r.listener, id.localRate ? r.plan.withRate : r.plan.withoutRate);
  if (!a.ok) {
    for (const t of held) t.release(); // the admission counted its own refusal
    return a;
  }
  held.push(a.ticket);
  if (id.leaseCap !== undefined) {
    const v = await d.shared.acquire(`sessions:${r.identity}`, id.leaseCap);
    if (v === "local") fallbackCap = id.leaseCap;
    else if (!v.ok) return refuse(v.unavailable ? "shared_limits_unavailable" : "concurrency_limited", `${r.identity}: ${v.detail}`, a.waitedMs);
    else held.push(v.value);
  }
  // The fallback counts this sidecar's sessions of the identity, this one included.
  if (fallbackCap !== undefined && d.admission.sessionsOf(r.identity) > fallbackCap)
    return refuse("concurrency_limited", `${r.identity} already has ${fallbackCap} sessions`, a.waitedMs);
  return { ok: true, ticket: { release: () => held.forEach((t) => t.release()) }, waitedMs: a.waitedMs };
}
