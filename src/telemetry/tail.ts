// `parley tail`: decision-log records as a readable, filterable, optionally coloured view, or a summary
// of who was denied and why. Pure: lines in, text out.
import { parseDuration } from "../config/units.js";

export type LogLine = Record<string, unknown> & { event?: string; time?: string };

export interface TailFilter {
  /** Only denials: decision records with decision = deny, and counts of suppressed identical denials. */
  readonly deny?: boolean;
  /** Substring of the peer SPIFFE ID. */
  readonly id?: string;
  /** A reason code, or its prefix (`condition_failed` matches `condition_failed:sni`). */
  readonly reason?: string;
  readonly listener?: string;
  /** Epoch ms: only records at or after it. */
  readonly since?: number;
}

/** `10m` (that long ago, from `now`) or an ISO 8601 time → epoch ms; undefined if neither. */
export function parseSince(text: string, now: number): number | undefined {
  const d = parseDuration(text);
  if (d !== undefined) return now - d;
  const t = Date.parse(text);
  return /^\d{4}-\d\d-\d\d/.test(text) && !Number.isNaN(t) ? t : undefined;
}

/** A parley record: a JSON object with an `event`. Anything else (other JSON included) is not one. */
export function parseLine(line: string): LogLine | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === "object" && !Array.isArray(v) && typeof (v as LogLine).event === "string" ? (v as LogLine) : undefined;
  } catch {
    return undefined;
  }
}

const reasonsOf = (r: LogLine): string[] => (Array.isArray(r.reasons) ? (r.reasons as unknown[]).map(String) : []);

export function matches(r: LogLine, f: TailFilter): boolean {
  if (f.deny && !((r.event === "decision" && r.decision === "deny") || r.event === "denials_suppressed")) return false;
  if (f.id !== undefined && !text(r.peer_id).includes(f.id)) return false;
  if (f.reason !== undefined && !reasonsOf(r).some((x) => x === f.reason || x.startsWith(`${f.reason}:`)) && r.end_reason !== f.reason) return false;
  if (f.listener !== undefined && r.listener !== f.listener) return false;
  if (f.since !== undefined && !(typeof r.time === "string" && Date.parse(r.time) >= f.since)) return false;
  return true;
}

const COLORS = { red: 31, green: 32, yellow: 33, magenta: 35, cyan: 36, dim: 2, bold: 1 } as const;
type Color = keyof typeof COLORS;

function paint(color: boolean): (c: Color, s: string) => string {
  return color ? (c, s) => `\x1b[${COLORS[c]}m${s}\x1b[0m` : (_c, s) => s;
}

function bytes(n: unknown): string {
  const v = Number(n ?? 0);
  return v >= 1048576 ? `${(v / 1048576).toFixed(1)}MiB` : v >= 1024 ? `${(v / 1024).toFixed(1)}KiB` : `${v}B`;
}

/** A field as text: strings as they are, other JSON values as JSON, absent ones as `absent`. */
function text(v: unknown, absent = ""): string {
  if (v === undefined || v === null) return absent;
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** One record as one line. */
export function formatLine(r: LogLine, color: boolean): string {
  const p = paint(color);
  const time = p("dim", text(r.time).padEnd(24));
  const peer = text(r.peer_id, "-");
  const listener = text(r.listener, "-");
  const detail = r.detail ? ` (${text(r.detail)})` : "";
  const reasons = reasonsOf(r).join(",");
  switch (r.event) {
    case "decision": {
      const allow = r.decision === "allow";
      const tag = allow ? p("green", "ALLOW ") : p("red", "DENY  ");
      const wouldDeny = Array.isArray(r.would_deny_reasons) ? (r.would_deny_reasons as unknown[]).map((x) => text(x)).join(",") : "";
      const audit = r.would_deny ? p("yellow", ` [audit: would deny ${wouldDeny}]`) : "";
      const svid = r.svid_rule ? ` svid=${text(r.svid_rule)}` : "";
      const suppressed = r.suppressed_before ? p("yellow", ` (+${text(r.suppressed_before)} identical suppressed)`) : "";
      return `${time} ${tag} ${listener} ${p("bold", peer)} rule=${text(r.rule, "-")} reasons=${reasons}${svid} from ${text(r.source, "-")}${audit}${suppressed}`;
    }
    case "session_end": {
      const sizes = `up=${bytes(r.bytes_to_upstream)} down=${bytes(r.bytes_to_client)}`;
      return `${time} ${p("cyan", "END   ")} ${listener} ${p("bold", peer)} ${text(r.end_reason)} ${sizes} ${text(r.duration_ms)}ms${detail}`;
    }
    case "revoked":
      return `${time} ${p("magenta", "REVOKE")} ${listener} ${p("bold", peer)} reasons=${reasons} ${text(r.old_version)} → ${text(r.new_version)}`;
    case "handshake_failed":
    case "handshake_refused":
      return `${time} ${p("yellow", "TLS   ")} ${listener} ${text(r.source, "-")} ${text(r.cause)}${detail}`;
    case "denials_suppressed":
      return `${time} ${p("yellow", "QUIET ")} ${listener} ${p("bold", peer)} ${text(r.count)} identical denials (${reasons}) from ${text(r.source_ip)}`;
    default:
      // An event this view does not know: its message, or the record itself when it has none.
      return `${time} ${p("dim", text(r.event).padEnd(6))} ${typeof r.msg === "string" && r.msg ? r.msg : JSON.stringify(r)}`;
  }
}

/** Decisions a record stands for (suppressed identical denials included), and whether they were denials. */
function decisionsIn(r: LogLine): { n: number; deny: boolean } | undefined {
  if (r.event === "denials_suppressed") return { n: Number(r.count ?? 0), deny: true };
  if (r.event !== "decision") return undefined;
  return { n: r.decision === "allow" ? 1 : 1 + Number(r.suppressed_before ?? 0), deny: r.decision !== "allow" };
}

interface Tally {
  decisions: number;
  denied: number;
}

/**
 * Counts for `--summary`. The first line counts every decision read, before any filter, so that
 * `--deny --summary` still says how many of all decisions were denials; when a filter is given, a
 * second line counts what it matched, and the tables are of the matching records.
 */
export class Summary {
  private readonly all: Tally = { decisions: 0, denied: 0 };
  private readonly matched: Tally = { decisions: 0, denied: 0 };
  private readonly deniedIds = new Map<string, number>();
  private readonly reasons = new Map<string, number>();
  private readonly listeners = new Map<string, { allow: number; deny: number }>();

  constructor(private readonly filtered = false) {}

  /** Every record read; `matches` says whether it passed the filter. */
  add(r: LogLine, matches: boolean): void {
    const d = decisionsIn(r);
    if (!d) return;
    this.all.decisions += d.n;
    if (d.deny) this.all.denied += d.n;
    if (!matches) return;
    this.matched.decisions += d.n;
    const l = this.listeners.get(text(r.listener)) ?? { allow: 0, deny: 0 };
    this.listeners.set(text(r.listener), l);
    if (!d.deny) return void (l.allow += d.n);
    this.matched.denied += d.n;
    l.deny += d.n;
    this.bump(this.deniedIds, text(r.peer_id, "(no identity)"), d.n);
    for (const x of reasonsOf(r)) this.bump(this.reasons, x, d.n);
  }

  private bump(m: Map<string, number>, k: string, n: number): void {
    m.set(k, (m.get(k) ?? 0) + n);
  }

  render(color: boolean, top = 10): string {
    const p = paint(color);
    const table = (m: Map<string, number>) =>
      [...m]
        .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
        .slice(0, top)
        .map(([k, n]) => `  ${String(n).padStart(7)}  ${k}`)
        .join("\n") || "  (none)";
    const listeners =
      [...this.listeners]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `  ${k}: ${v.allow} allowed, ${v.deny} denied`)
        .join("\n") || "  (none)";
    const count = (t: Tally) => `${t.decisions} decisions, ${t.denied} denied`;
    return [
      p("bold", `decisions: ${this.all.decisions}, denied: ${this.all.denied}`),
      ...(this.filtered ? [p("bold", `matching the filter: ${count(this.matched)}`)] : []),
      "",
      p("bold", "top denied identities:"),
      table(this.deniedIds),
      "",
      p("bold", "top denial reasons:"),
      table(this.reasons),
      "",
      p("bold", "by listener:"),
      listeners,
      "",
    ].join("\n");
  }
}
