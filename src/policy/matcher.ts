// Identity matchers (which SPIFFE IDs a rule or role binding speaks of) and the index that finds, for
// one ID, every value whose matcher matches it without scanning them all.
import { ParleyError } from "../errors/catalogue.js";
import { SpiffeId, TrustDomain } from "../spiffe/spiffeid.js";

export type IdentityMatcher =
  | { readonly kind: "id"; readonly id: SpiffeId }
  | { readonly kind: "trust_domain"; readonly trustDomain: TrustDomain }
  /** The ID itself and every ID below it, on segment boundaries (`/ns/prod` does not match `/ns/production`). */
  | { readonly kind: "path_prefix"; readonly prefix: SpiffeId }
  /** Whole-segment wildcards: `*` is exactly one segment, a final `**` one or more. */
  | { readonly kind: "glob"; readonly trustDomain: TrustDomain; readonly segments: readonly string[]; readonly text: string };

export class GlobError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_GLOB", message);
  }
}

const SEGMENT = /^[A-Za-z0-9._-]+$/;

/** Parses `spiffe://td/ns/*\/sa/**`. Wildcards stand for whole segments; `**` only at the end. */
export function parseGlob(text: string): IdentityMatcher {
  const m = /^spiffe:\/\/([^/]+)(\/.*)?$/.exec(text);
  if (!m) throw new GlobError(`bad glob ${text}: expected spiffe://<trust-domain>/<segments>`);
  const trustDomain = TrustDomain.parse(m[1]!);
  const segments = (m[2] ?? "").split("/").slice(1);
  if (segments.length === 0) throw new GlobError(`bad glob ${text}: no path; use trust_domain to match a whole trust domain`);
  segments.forEach((s, i) => {
    if (s === "**" && i !== segments.length - 1) throw new GlobError(`bad glob ${text}: '**' may only be the last segment`);
    if (s !== "*" && s !== "**" && (!SEGMENT.test(s) || s === "." || s === "..")) {
      throw new GlobError(`bad glob ${text}: segment '${s}' must be '*', '**' or letters, digits, '.', '-', '_' (no partial wildcards)`);
    }
  });
  return { kind: "glob", trustDomain, segments, text };
}

export function describeMatcher(m: IdentityMatcher): string {
  switch (m.kind) {
    case "id":
      return `id ${m.id}`;
    case "trust_domain":
      return `trust_domain ${m.trustDomain}`;
    case "path_prefix":
      return `path_prefix ${m.prefix}`;
    case "glob":
      return `glob ${m.text}`;
  }
}

interface Node<T> {
  readonly children: Map<string, Node<T>>;
  star?: Node<T>;
  /** Values matching exactly this path. */
  readonly exact: T[];
  /** Values matching this path and everything below it. */
  readonly prefix: T[];
  /** Values matching one or more segments below this path. */
  readonly below: T[];
}

const node = <T>(): Node<T> => ({ children: new Map(), exact: [], prefix: [], below: [] });

/**
 * A segment trie per trust domain. Lookup cost depends on the ID's depth and the wildcards on its
 * way, not on how many matchers were inserted.
 */
export class IdentityIndex<T> {
  private readonly domains = new Map<string, Node<T>>();
  private readonly everyone: T[] = [];

  /** `matcher` undefined: the value applies to every ID. */
  add(matcher: IdentityMatcher | undefined, value: T): void {
    if (!matcher) return void this.everyone.push(value);
    const td = matcher.kind === "id" ? matcher.id.trustDomain : matcher.kind === "path_prefix" ? matcher.prefix.trustDomain : matcher.trustDomain;
    let n = this.domains.get(td.name);
    if (!n) this.domains.set(td.name, (n = node()));
    switch (matcher.kind) {
      case "trust_domain":
        return void n.prefix.push(value);
      case "id":
        return void this.walk(n, matcher.id.segments).exact.push(value);
      case "path_prefix":
        return void this.walk(n, matcher.prefix.segments).prefix.push(value);
      case "glob": {
        const last = matcher.segments[matcher.segments.length - 1];
        const head = last === "**" ? matcher.segments.slice(0, -1) : matcher.segments;
        const end = this.walk(n, head);
        return void (last === "**" ? end.below : end.exact).push(value);
      }
    }
  }

  private walk(n: Node<T>, segments: readonly string[]): Node<T> {
    for (const s of segments) {
      if (s === "*") n = n.star ??= node();
      else {
        let c = n.children.get(s);
        if (!c) n.children.set(s, (c = node()));
        n = c;
      }
    }
    return n;
  }

  /** Every value whose matcher matches `id` (each once, in no particular order). */
  lookup(id: SpiffeId): T[] {
    const out = new Set<T>(this.everyone);
    const root = this.domains.get(id.trustDomain.name);
    if (root) this.collect(root, id.segments, 0, out);
    return [...out];
  }

  private collect(n: Node<T>, segs: readonly string[], i: number, out: Set<T>): void {
    for (const v of n.prefix) out.add(v);
    if (i === segs.length) {
      for (const v of n.exact) out.add(v);
      return;
    }
    for (const v of n.below) out.add(v);
    const c = n.children.get(segs[i]!);
    if (c) this.collect(c, segs, i + 1, out);
    if (n.star) this.collect(n.star, segs, i + 1, out);
  }
}
