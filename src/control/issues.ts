// What a NACK says, and how much of it: each problem as text and as structure (resource kind, resource
// name, field path inside the resource), capped in count and size on both ends of the stream so that
// neither side can make the other log or keep megabytes.
import type { ConfigIssue } from "../config/source.js";
import type { ResourceKind } from "./wire.js";

/** Problems carried in one NACK (and kept per node by the server); the total is sent beside them. */
export const MAX_ISSUES = 20;
/** Bytes of one issue line, and of one NACK message. */
export const MAX_ISSUE_BYTES = 512;

/** google.rpc.Code values a NACK uses (google/rpc/code.proto). */
export const NackCode = {
  /** The push is invalid: nothing of it can run anywhere. */
  INVALID_ARGUMENT: 3,
  /** The push is valid but cannot be put in force here (a listen address cannot be bound). */
  FAILED_PRECONDITION: 9,
  /** The sidecar failed in a way that says nothing about the push. */
  INTERNAL: 13,
} as const;

/** One problem, structured: the ErrorDetail.details entry. */
export interface WireIssue {
  kind: string;
  resource: string;
  field: string;
  message: string;
}

/** Cuts `text` to at most `max` UTF-8 bytes, marking the cut. */
export function clip(text: string, max = MAX_ISSUE_BYTES): string {
  if (Buffer.byteLength(text) <= max) return text;
  const cut = Buffer.from(text)
    .subarray(0, max - 16)
    .toString("utf8")
    .replace(/\uFFFD$/, "");
  return `${cut}… (truncated)`;
}

/** The first MAX_ISSUES items, each clipped; `count` is how many there were. */
export function capped<T>(items: readonly T[], clipOne: (t: T) => T): { items: T[]; count: number } {
  return { items: items.slice(0, MAX_ISSUES).map(clipOne), count: items.length };
}

export function clipIssue(i: WireIssue): WireIssue {
  return { kind: clip(i.kind, 64), resource: clip(i.resource, 256), field: clip(i.field, 256), message: clip(i.message) };
}

type Obj = Record<string, unknown>;

/** YAML section → resource kind, for the sections keyed by resource name. */
const MAP_KIND: Record<string, ResourceKind> = {
  policies: "policy",
  trust_domains: "trust_bundle",
  roles: "role",
  attestors: "attestor",
  approvers: "approver",
  token_services: "token_service",
  verifiers: "verifier",
};
/** YAML names that differ from the proto's, inside a resource body. */
const FIELD_RENAME: Record<string, string> = { bundle_pem: "x509_authorities_pem", jwks: "jwks_json" };

function field(rest: string): string {
  const path = rest.replace(/^\./, "");
  return FIELD_RENAME[path] ?? path;
}

/**
 * Where an issue of a converted push lies, in the push's own terms. `path` is the schema's path in the
 * YAML shape (`policies.web.rules[0].match[0].glob`); `raw` is that shape, for the names of list items.
 */
export function locateIssue(issue: ConfigIssue, raw: Obj): WireIssue {
  const p = issue.path;
  const at = (kind: string, resource: string, f: string): WireIssue => ({ kind, resource, field: f, message: issue.message });
  const listed = /^(listeners|outbound|attestations)\[(\d+)\](.*)$/.exec(p);
  if (listed) {
    const [, section = "", index = "0", rest = ""] = listed;
    const item = ((raw[section] as Array<Record<string, string | undefined>> | undefined) ?? [])[Number(index)];
    if (section === "attestations") return at("attestation", `${item?.subject ?? ""}#${item?.attestor ?? ""}#${index}`, field(rest));
    return at(section === "listeners" ? "listener" : "outbound", item?.name ?? "", field(rest));
  }
  for (const [section, kind] of Object.entries(MAP_KIND)) {
    if (!p.startsWith(`${section}.`)) continue;
    const names = Object.keys((raw[section] as Obj | undefined) ?? {});
    // Names may hold dots (trust domains): take the longest name the path starts with.
    const rest = p.slice(section.length + 1);
    const name = names.filter((n) => rest === n || rest.startsWith(`${n}.`) || rest.startsWith(`${n}[`)).sort((a, b) => b.length - a.length)[0];
    if (name === undefined) return at(kind, "", rest);
    const f = field(rest.slice(name.length));
    return at(kind, name, kind === "role" && f.startsWith("[") ? `match${f}` : f);
  }
  if (/^(drain_timeout|revocation_grace|limits)\b/.test(p)) return at("settings", "settings", p.replace(/^limits\./, ""));
  return at("", "", p);
}
