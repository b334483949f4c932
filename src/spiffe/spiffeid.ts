// SPIFFE IDs and trust domain names, parsed exactly per the SPIFFE-ID standard.
// A parsed value is a type: code that holds a SpiffeId never re-checks a string.

/** The rule of the SPIFFE-ID standard that an input broke. Stable: tests and logs use it. */
import { ParleyError } from "../errors/catalogue.js";
export type SpiffeIdRule =
  | "empty"
  | "too_long"
  | "scheme"
  | "trust_domain_missing"
  | "trust_domain_chars"
  | "trust_domain_too_long"
  | "path_empty_segment"
  | "path_dot_segment"
  | "path_trailing_slash"
  | "path_chars";

const RULE_TEXT: Record<SpiffeIdRule, string> = {
  empty: "cannot be empty",
  too_long: "a SPIFFE ID URI must not exceed 2048 bytes",
  scheme: "scheme is missing or invalid: it must be exactly 'spiffe://'",
  trust_domain_missing: "trust domain is missing",
  trust_domain_chars: "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores",
  trust_domain_too_long: "trust domain must not exceed 255 bytes",
  path_empty_segment: "path cannot contain empty segments",
  path_dot_segment: "path cannot contain dot segments",
  path_trailing_slash: "path cannot have a trailing slash",
  path_chars: "path segment characters are limited to letters, numbers, dots, dashes, and underscores",
};

export class SpiffeIdError extends ParleyError {
  constructor(
    readonly rule: SpiffeIdRule,
    readonly input: string,
  ) {
    super("PARLEY_ERR_SPIFFE_ID", `invalid SPIFFE ID ${JSON.stringify(input.length > 120 ? input.slice(0, 120) + "…" : input)}: ${RULE_TEXT[rule]}`);
  }
}

const SCHEME = "spiffe://";
const MAX_ID_BYTES = 2048;
const MAX_TD_BYTES = 255;

// Character classes as 128-entry tables: parsing runs on every new peer certificate.
const TD_CHARS = charTable("abcdefghijklmnopqrstuvwxyz0123456789.-_");
const PATH_CHARS = charTable("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_");

function charTable(chars: string): Uint8Array {
  const t = new Uint8Array(128);
  for (const c of chars) t[c.charCodeAt(0)] = 1;
  return t;
}

function allIn(table: Uint8Array, s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c >= 128 || table[c] === 0) return false;
  }
  return true;
}

export class TrustDomain {
  private constructor(readonly name: string) {}

  /** Parses a bare trust domain name (`example.org`) or a SPIFFE ID and takes its trust domain. */
  static parse(input: string): TrustDomain {
    if (input.startsWith(SCHEME)) return SpiffeId.parse(input).trustDomain;
    checkTrustDomain(input, input);
    return new TrustDomain(input);
  }

  /** @internal used by SpiffeId.parse after it has checked the name. */
  static trusted(name: string): TrustDomain {
    return new TrustDomain(name);
  }

  /** The trust domain's own ID, `spiffe://<name>`. */
  idString(): string {
    return SCHEME + this.name;
  }

  equals(other: TrustDomain): boolean {
    return this.name === other.name;
  }

  toString(): string {
    return this.name;
  }
}

function checkTrustDomain(name: string, input: string): void {
  if (name.length === 0) throw new SpiffeIdError("trust_domain_missing", input);
  if (!allIn(TD_CHARS, name, 0, name.length)) throw new SpiffeIdError("trust_domain_chars", input);
  if (name.length > MAX_TD_BYTES) throw new SpiffeIdError("trust_domain_too_long", input);
}

/** Checks a path (`""` or `/seg/seg`) and returns its segments. */
function checkPath(path: string, input: string): string[] {
  if (path === "") return [];
  const segments = path.slice(1).split("/");
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    if (seg === "") {
      throw new SpiffeIdError(i === segments.length - 1 ? "path_trailing_slash" : "path_empty_segment", input);
    }
    if (seg === "." || seg === "..") throw new SpiffeIdError("path_dot_segment", input);
    if (!allIn(PATH_CHARS, seg, 0, seg.length)) throw new SpiffeIdError("path_chars", input);
  }
  return segments;
}

export class SpiffeId {
  private constructor(
    readonly trustDomain: TrustDomain,
    /** `""` or `/seg/seg`, already validated. */
    readonly path: string,
    readonly segments: readonly string[],
    private readonly text: string,
  ) {}

  static parse(input: string): SpiffeId {
    if (input.length === 0) throw new SpiffeIdError("empty", input);
    if (Buffer.byteLength(input, "utf8") > MAX_ID_BYTES) throw new SpiffeIdError("too_long", input);
    if (!input.startsWith(SCHEME)) throw new SpiffeIdError("scheme", input);
    const rest = input.slice(SCHEME.length);
    const slash = rest.indexOf("/");
    const tdName = slash === -1 ? rest : rest.slice(0, slash);
    const path = slash === -1 ? "" : rest.slice(slash);
    checkTrustDomain(tdName, input);
    const segments = checkPath(path, input);
    return new SpiffeId(TrustDomain.trusted(tdName), path, segments, input);
  }

  /** Like parse, but returns the broken rule instead of throwing. */
  static tryParse(input: string): SpiffeId | SpiffeIdError {
    try {
      return SpiffeId.parse(input);
    } catch (e) {
      if (e instanceof SpiffeIdError) return e;
      throw e;
    }
  }

  /** True when this ID's path starts with the given segments, on segment boundaries. */
  hasPathPrefix(prefix: readonly string[]): boolean {
    if (prefix.length > this.segments.length) return false;
    for (let i = 0; i < prefix.length; i++) if (prefix[i] !== this.segments[i]) return false;
    return true;
  }

  equals(other: SpiffeId): boolean {
    return this.text === other.text;
  }

  toString(): string {
    return this.text;
  }

  toJSON(): string {
    return this.text;
  }
}
