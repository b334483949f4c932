// Finding rules that can never apply: a rule every identity of which an earlier unconditional rule
// (deny rules count as earlier than all allow rules) already claims is reported at compile time.
import { IdentityIndex, type IdentityMatcher } from "./matcher.js";
import type { Rule } from "./model.js";
import type { ErrorSink } from "./compile.js";

/** The literal segments every ID matched by `m` starts with. */
function fixedLead(m: IdentityMatcher): readonly string[] {
  switch (m.kind) {
    case "trust_domain":
      return [];
    case "id":
      return m.id.segments;
    case "path_prefix":
      return m.prefix.segments;
    case "glob": {
      const wild = m.segments.findIndex((s) => s === "*" || s === "**");
      return wild < 0 ? m.segments : m.segments.slice(0, wild);
    }
  }
}

function trustDomainOf(m: IdentityMatcher): string {
  return (m.kind === "id" ? m.id.trustDomain : m.kind === "path_prefix" ? m.prefix.trustDomain : m.trustDomain).name;
}

/** True when every ID `b` matches is matched by `a` (conservative: false when unsure). */
function covers(a: IdentityMatcher, b: IdentityMatcher): boolean {
  if (trustDomainOf(a) !== trustDomainOf(b)) return false;
  switch (a.kind) {
    case "trust_domain":
      return true;
    case "id":
      return b.kind === "id" && a.id.equals(b.id);
    case "glob":
      return b.kind === "glob" && a.text === b.text;
    case "path_prefix": {
      const lead = fixedLead(b);
      return a.prefix.segments.length <= lead.length && a.prefix.segments.every((s, i) => s === lead[i]);
    }
  }
}

/** An enforce rule with no requirements applies to every identity it matches. */
function unconditional(r: Rule): boolean {
  return r.mode === "enforce" && r.roles.length === 0 && !r.attestation && Object.keys(r.conditions).length === 0;
}

/**
 * The unconditional rules seen so far, to find a rule that can never apply: one every identity of which
 * an unconditional rule already claims. Exact-ID matchers are looked up in an index; the rest scan.
 */
class Shadows {
  private readonly index = new IdentityIndex<Rule>();
  private readonly rules: Rule[] = [];

  add(r: Rule): void {
    if (!unconditional(r)) return;
    this.rules.push(r);
    if (r.match.length === 0) this.index.add(undefined, r);
    for (const m of r.match) this.index.add(m, r);
  }

  private coveredBy(m: IdentityMatcher): Rule | undefined {
    if (m.kind === "id") return this.index.lookup(m.id)[0];
    return this.rules.find((e) => e.match.length === 0 || e.match.some((em) => covers(em, m)));
  }

  /** An earlier rule that pre-empts `r` on every identity it matches, if any. */
  shadowing(r: Rule): Rule | undefined {
    if (r.match.length === 0) return this.rules.find((e) => e.match.length === 0);
    let first: Rule | undefined;
    for (const m of r.match) {
      const by = this.coveredBy(m);
      if (!by) return undefined;
      first ??= by;
    }
    return first;
  }
}

/** Deny rules are tried before every allow rule, wherever they stand in the file. */
export function findUnreachable(rules: readonly Rule[], name: string, error: ErrorSink): void {
  const denies = new Shadows();
  const allows = new Shadows();
  const report = (r: Rule, by: Rule) =>
    error(["policies", name, "rules", r.order], `rule ${r.name} is unreachable: rule ${by.name} always applies first to every identity it matches`);
  for (const r of rules.filter((x) => x.action === "deny")) {
    const by = denies.shadowing(r);
    if (by) report(r, by);
    denies.add(r);
  }
  for (const r of rules.filter((x) => x.action === "allow")) {
    const by = denies.shadowing(r) ?? allows.shadowing(r);
    if (by) report(r, by);
    allows.add(r);
  }
}
