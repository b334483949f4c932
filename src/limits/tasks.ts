// A task's own bound: at most N concurrent sessions and M new sessions a minute per task (`txn` of
// the approval token), so one approval cannot be replayed into unbounded sessions. Local by default
// (this sidecar's counts), or shared (`scope: shared`: a lease set and a bucket in Redis keyed by the
// txn). Concurrency is checked before the rate, so a refused session burns no token. A session without
// a txn is not subject to these bounds (the caller does not ask). State: a count per txn with live
// sessions, buckets bounded by KeyedBuckets.
import { createHash } from "node:crypto";
import type { TaskLimits } from "../policy/model.js";
import type { Ticket } from "./admission.js";
import { KeyedBuckets } from "./keyed.js";
import type { Rate } from "./bucket.js";
import type { SharedLimits, SharedVerdict } from "./shared.js";

export type TaskVerdict =
  | { readonly ok: true; readonly ticket: Ticket }
  | { readonly ok: false; readonly reason: "task_limit_exceeded" | "shared_limits_unavailable"; readonly detail: string };

const NOTHING: Ticket = { release: () => undefined };

export class TaskBounds {
  private readonly buckets: KeyedBuckets;
  private readonly sessions = new Map<string, number>();

  constructor(
    private readonly now: () => number,
    maxTasks = 100_000,
  ) {
    this.buckets = new KeyedBuckets(maxTasks);
  }

  /** Live sessions of `txn` counted by this sidecar. */
  sessionsOf(txn: string): number {
    return this.sessions.get(txn) ?? 0;
  }

  /** A ticket for one more session of `txn` under `l`, or the refusal. */
  async admit(task: string, l: TaskLimits, shared: SharedLimits): Promise<TaskVerdict> {
    const txn = keyOf(task);
    let lease: Ticket = NOTHING;
    let localCap = l.maxSessions;
    if (l.shared && l.maxSessions !== undefined) {
      const v = await shared.acquire(`task:sessions:${txn}`, l.maxSessions);
      if (v !== "local" && !v.ok) return refusal(v.unavailable, `task ${txn}: ${v.detail}`);
      if (v !== "local") [lease, localCap] = [v.value, undefined];
    }
    if (localCap !== undefined && this.sessionsOf(txn) >= localCap) return refusal(false, `task ${txn} already has ${localCap} sessions`);
    if (l.rate) {
      const over = this.overRate(txn, l.rate, l.shared ? await shared.take(`task:rate:${txn}`, l.rate) : "local");
      if (over) {
        lease.release();
        return refusal(over.unavailable, `task ${txn}: ${over.detail}`);
      }
    }
    return { ok: true, ticket: this.count(txn, lease) };
  }

  /** Why the task's rate refused its token, or undefined when one was taken: by Redis, or here (`local`). */
  private overRate(txn: string, rate: Rate, v: SharedVerdict<undefined>): { readonly unavailable: boolean; readonly detail: string } | undefined {
    if (v !== "local") return v.ok ? undefined : v;
    if (this.buckets.take(txn, rate, this.now())) return undefined;
    return { unavailable: false, detail: `over ${rate.perSecond * 60}/min (burst ${rate.burst})` };
  }

  private count(txn: string, lease: Ticket): Ticket {
    this.sessions.set(txn, this.sessionsOf(txn) + 1);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        lease.release();
        const n = this.sessionsOf(txn) - 1;
        if (n <= 0) this.sessions.delete(txn);
        else this.sessions.set(txn, n);
      },
    };
  }
}

/** A txn as a key: itself, or past 256 characters its SHA-256 (a token's claim has no length bound). */
function keyOf(txn: string): string {
  return txn.length <= 256 ? txn : `sha256:${createHash("sha256").update(txn).digest("hex")}`;
}

function refusal(unavailable: boolean, detail: string): TaskVerdict {
  return { ok: false, reason: unavailable ? "shared_limits_unavailable" : "task_limit_exceeded", detail };
}
