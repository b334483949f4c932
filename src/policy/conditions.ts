// Environmental conditions of a rule: where the connection comes from, what it negotiated, which
// listener took it, when, and how long-lived the peer's certificate is.
import { isIPv4 } from "node:net";
import { approvalFailures, type ApprovalFacts } from "./approval.js";
import type { Conditions, TimeWindow } from "./model.js";

export interface ConditionContext {
  readonly sourceAddress: string;
  readonly sni: string | null;
  readonly alpn: string | null;
  readonly listener: string;
  readonly now: number;
  /** Leaf validity, when a certificate is known. */
  readonly cert?: { readonly notBefore: number; readonly notAfter: number } | undefined;
  /** The verified task approval, when the session negotiated one. */
  readonly approval?: ApprovalFacts | undefined;
}

export interface ConditionFailure {
  readonly name: string;
  readonly detail: string;
}

const MAPPED_V4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;

function inCidrs(c: NonNullable<Conditions["sourceCidrs"]>, address: string): boolean {
  const v4 = MAPPED_V4.exec(address)?.[1] ?? address;
  return isIPv4(v4) ? c.list.check(v4, "ipv4") : c.list.check(address, "ipv6");
}

function sniMatches(patterns: readonly string[], sni: string | null): boolean {
  if (sni === null) return false;
  const name = sni.toLowerCase();
  return patterns.some((p) => (p.startsWith("*.") ? name.endsWith(p.slice(1)) && !name.slice(0, -p.length + 1).includes(".") : p === name));
}

const WEEKDAY: Record<string, number> = { Sun: 0, Mon: 1, Tue: 2, Wed: 3, Thu: 4, Fri: 5, Sat: 6 };
const formatters = new Map<string, Intl.DateTimeFormat>();

/** Day of week and minutes after midnight at `now` in `zone`. */
export function localTime(zone: string, now: number): { day: number; minutes: number } {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", { timeZone: zone, weekday: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    formatters.set(zone, f);
  }
  let day = 0;
  let hour = 0;
  let minute = 0;
  for (const p of f.formatToParts(now)) {
    if (p.type === "weekday") day = WEEKDAY[p.value] ?? 0;
    else if (p.type === "hour") hour = Number(p.value);
    else if (p.type === "minute") minute = Number(p.value);
  }
  return { day, minutes: hour * 60 + minute };
}

export function inWindow(w: TimeWindow, now: number): boolean {
  const { day, minutes } = localTime(w.zone, now);
  if (w.from < w.to) return w.days.has(day) && minutes >= w.from && minutes < w.to;
  // Spans midnight: the evening part belongs to `day`, the morning part to the day before.
  if (minutes >= w.from) return w.days.has(day);
  return minutes < w.to && w.days.has((day + 6) % 7);
}

/** Every condition that does not hold; empty when all hold. `details` gets a sentence per failure. */
export function failedConditions(c: Conditions, ctx: ConditionContext): ConditionFailure[] {
  const out: ConditionFailure[] = [];
  if (c.sourceCidrs && !inCidrs(c.sourceCidrs, ctx.sourceAddress)) {
    out.push({ name: "source_cidr", detail: `source ${ctx.sourceAddress} is not in ${c.sourceCidrs.text.join(", ")}` });
  }
  if (c.sni && !sniMatches(c.sni, ctx.sni)) out.push({ name: "sni", detail: `SNI ${ctx.sni ?? "(none)"} is not one of ${c.sni.join(", ")}` });
  if (c.alpn && (ctx.alpn === null || !c.alpn.includes(ctx.alpn)))
    out.push({ name: "alpn", detail: `ALPN ${ctx.alpn ?? "(none)"} is not one of ${c.alpn.join(", ")}` });
  if (c.listeners && !c.listeners.includes(ctx.listener))
    out.push({ name: "listener", detail: `listener ${ctx.listener} is not one of ${c.listeners.join(", ")}` });
  if (c.time && !c.time.some((w) => inWindow(w, ctx.now)))
    out.push({ name: "time", detail: `${new Date(ctx.now).toISOString()} is outside every time window` });
  if (c.maxCertLifetimeMs !== undefined) {
    const life = ctx.cert ? ctx.cert.notAfter - ctx.cert.notBefore : undefined;
    if (life === undefined || life > c.maxCertLifetimeMs) {
      out.push({
        name: "max_cert_lifetime",
        detail: life === undefined ? "no certificate to judge" : `certificate lifetime ${Math.round(life / 1000)} s exceeds ${c.maxCertLifetimeMs / 1000} s`,
      });
    }
  }
  if (c.maxCertRemainingMs !== undefined) {
    const left = ctx.cert ? ctx.cert.notAfter - ctx.now : undefined;
    if (left === undefined || left > c.maxCertRemainingMs) {
      out.push({
        name: "max_cert_remaining",
        detail:
          left === undefined ? "no certificate to judge" : `certificate has ${Math.round(left / 1000)} s left, more than ${c.maxCertRemainingMs / 1000} s`,
      });
    }
  }
  out.push(...approvalFailures(c, ctx.approval));
  return out;
}
