// The admission of one allowed session under every bound its obligations name, local and shared, in
// this order: the identity's shared rate (Redis), the task's bounds (./tasks.ts, only with a txn), the
// sidecar's own admission (./admission.ts: local rate, concurrency per identity, listener and in all,
// with any allowed wait), then the identity's shared concurrency lease. Everything taken before a
// refusal is given back, except rate tokens (spent, as a refused local session spends none only
// because the local bucket is checked last). A shared bound whose backend is unavailable takes the
// failure mode: refused, or checked with this sidecar's own state (`local`). Shared bounds never hold
// a session waiting: over them it is refused at once.
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

export async function admitSession(d: GateDeps, r: GateRequest): Promise<GateResult> {
  const l = r.limits;
  const held: Ticket[] = [];
  const refuse = (reason: GateRefusal, detail: string, waitedMs = 0): GateResult => {
    for (const t of held) t.release();
    if (reason !== "shared_limits_unavailable") d.counts.hit(reason);
    return { ok: false, reason, detail, waitedMs };
  };
  let localRate: Rate | undefined = l.rate && !l.rate.shared ? l.rate : undefined;
  if (l.rate?.shared) {
    const v = await d.shared.take(`rate:${r.identity}`, l.rate);
    if (v === "local") localRate = l.rate;
    else if (!v.ok) return refuse(v.unavailable ? "shared_limits_unavailable" : "rate_limited", v.unavailable ? v.detail : `${r.identity} is ${v.detail}`);
  }
  if (r.txn !== undefined && l.perTask) {
    const t = await d.tasks.admit(r.txn, l.perTask, d.shared);
    if (!t.ok) return refuse(t.reason, t.detail);
    held.push(t.ticket);
  }
  const sharedCap = l.maxSessionsShared ? l.maxSessions : undefined;
  const a = await d.admission.admit(r.identity, r.listener, {
    ...(localRate ? { rate: localRate } : {}),
    ...(l.maxSessions !== undefined && sharedCap === undefined ? { maxPerIdentity: l.maxSessions } : {}),
    ...(r.maxPerListener !== undefined ? { maxPerListener: r.maxPerListener } : {}),
    maxGlobal: r.maxGlobal,
    ...(l.maxWaitMs !== undefined ? { maxWaitMs: l.maxWaitMs } : {}),
  });
  if (!a.ok) {
    for (const t of held) t.release(); // the admission counted its own refusal
    return a;
  }
  held.push(a.ticket);
  if (sharedCap !== undefined) {
    const v = await d.shared.acquire(`sessions:${r.identity}`, sharedCap);
    // The fallback counts this sidecar's sessions of the identity, this one included.
    if (v === "local" && d.admission.sessionsOf(r.identity) > sharedCap)
      return refuse("concurrency_limited", `${r.identity} already has ${sharedCap} sessions`, a.waitedMs);
    if (v !== "local" && !v.ok) return refuse(v.unavailable ? "shared_limits_unavailable" : "concurrency_limited", `${r.identity}: ${v.detail}`, a.waitedMs);
    if (v !== "local") held.push(v.value);
  }
  return { ok: true, ticket: { release: () => held.forEach((t) => t.release()) }, waitedMs: a.waitedMs };
}
