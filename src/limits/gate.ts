// The admission of one allowed session under every bound its obligations name, local and shared, in
// this order: the identity's shared rate (Redis; with a shared max_sessions too, token and lease in one
// round trip), the task's bounds (./tasks.ts, only with a txn), the sidecar's own admission
// (./admission.ts: local rate, concurrency per identity, listener and in all, with any allowed wait),
// then the identity's shared lease if not taken yet. Everything taken before a refusal is given back
// (slots, leases), except rate tokens. A shared bound whose backend is unavailable takes the failure
// mode: refused, or checked with this sidecar's own state (`local`). Shared bounds never hold a
// session waiting: over them it is refused at once.
import type { Limits } from "../policy/model.js";
import type { Admission, AdmissionRefusal, Ticket } from "./admission.js";
import type { Rate } from "./bucket.js";
import type { LimitCounts } from "./events.js";
import type { SharedLimits } from "./shared.js";
import type { TaskBounds } from "./tasks.js";

export interface GateRequest {
  readonly identity: string;
  readonly listener: string;
  /** The task of the session's approval, if it has one. */
  readonly txn?: string | undefined;
  readonly limits: Limits;
  readonly maxPerListener?: number | undefined;
  readonly maxGlobal: number;
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
  /** The rate to check locally: not shared, or the fallback. */
  readonly localRate?: Rate | undefined;
  /** The shared cap still to acquire a lease for (after the local admission). */
  readonly leaseCap?: number | undefined;
  /** The shared cap checked by this sidecar alone (backend unavailable, mode `local`). */
  readonly fallbackCap?: number | undefined;
  readonly lease?: Ticket;
}

/** The identity's shared rate, with its shared lease in the same round trip when both are shared. */
async function identityShared(d: GateDeps, identity: string, l: Limits): Promise<IdentityShared | Refusal> {
  const cap = l.maxSessionsShared ? l.maxSessions : undefined;
  const rate = l.rate;
  if (!rate?.shared) return { ok: true, localRate: rate, leaseCap: cap };
  const over = `${identity} is over the shared ${rate.perSecond}/s (burst ${rate.burst})`;
  if (cap === undefined) {
    const v = await d.shared.take(`rate:${identity}`, rate);
    if (v === "local") return { ok: true, localRate: rate };
    return v.ok ? { ok: true } : { ok: false, reason: v.unavailable ? "shared_limits_unavailable" : "rate_limited", detail: v.unavailable ? v.detail : over };
  }
  const v = await d.shared.admit(`rate:${identity}`, rate, `sessions:${identity}`, cap);
  if (v === "rate") return { ok: false, reason: "rate_limited", detail: over };
  if (v === "concurrency") return { ok: false, reason: "concurrency_limited", detail: `${identity}: all ${cap} shared sessions are in use` };
  if (v === "local") return { ok: true, localRate: rate, fallbackCap: cap };
  return v.ok ? { ok: true, lease: v.value } : { ok: false, reason: "shared_limits_unavailable", detail: v.detail };
}

/** The sidecar's own admission of `r`, with the rate left to check locally. */
function admitLocally(d: GateDeps, r: GateRequest, rate: Rate | undefined) {
  const l = r.limits;
  return d.admission.admit(r.identity, r.listener, {
    ...(rate ? { rate } : {}),
    ...(l.maxSessions !== undefined && !l.maxSessionsShared ? { maxPerIdentity: l.maxSessions } : {}),
    ...(r.maxPerListener !== undefined ? { maxPerListener: r.maxPerListener } : {}),
    maxGlobal: r.maxGlobal,
    ...(l.maxWaitMs !== undefined ? { maxWaitMs: l.maxWaitMs } : {}),
  });
}

export async function admitSession(d: GateDeps, r: GateRequest): Promise<GateResult> {
  const l = r.limits;
  // Most sessions have no shared and no task bound: their admission is the sidecar's own, with no
  // ticket wrapper and no await before it (this runs once per connection).
  if (!l.rate?.shared && !l.maxSessionsShared && (r.txn === undefined || !l.perTask)) return admitLocally(d, r, l.rate);
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
  const a = await admitLocally(d, r, id.localRate);
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
