// What a node file may say beyond resources, and what of a merged set a node is served:
//   - `identity:` binds the node to the SPIFFE IDs allowed to claim it: one ID as a string, one
//     matcher of the policy language ({id|trust_domain|path_prefix|glob}), or a list of them;
//   - attestation records go only to nodes whose policies can use them: a policy one of the node's
//     listeners enforces, with a rule that requires the record's attestor and whose identities
//     (match, roles, or every peer) can include the record's subject.
import type { YamlSource } from "../../config/source.js";
import { SpiffeId } from "../../spiffe/spiffeid.js";
import { compileMatcher, type RawMatcher } from "../../policy/compile.js";
import { IdentityIndex, type IdentityMatcher } from "../../policy/matcher.js";
import type { ConfigIssue } from "../../config/source.js";

type Obj = Record<string, unknown>;

/** Parses a node file's `identity`; problems are located in the file. */
export function parseIdentity(value: unknown, src: YamlSource): { matchers: IdentityMatcher[]; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const items = Array.isArray(value) ? value : [value];
  const matchers: IdentityMatcher[] = [];
  items.forEach((item, i) => {
    const path = Array.isArray(value) ? ["identity", i] : ["identity"];
    const raw: unknown = typeof item === "string" ? { id: item } : item;
    const entries: Array<[string, unknown]> = raw !== null && typeof raw === "object" ? Object.entries(raw) : [];
    const [key, val] = entries[0] ?? ["", undefined];
    if (entries.length !== 1 || !["id", "trust_domain", "path_prefix", "glob"].includes(key) || typeof val !== "string") {
      issues.push(src.issue(path, "expected a SPIFFE ID, or a matcher with exactly one of id, trust_domain, path_prefix or glob"));
      return;
    }
    const m = compileMatcher(raw as RawMatcher, path, (p, message) => issues.push(src.issue(p, message)));
    if (m) matchers.push(m);
  });
  if (items.length === 0) issues.push(src.issue(["identity"], "an empty list binds the node to nobody; leave identity out to refuse every claim"));
  return { matchers, issues };
}

function ruleMatchers(rule: Obj, roles: Obj): Array<IdentityMatcher | undefined> | "malformed" {
  const raw = [
    ...((rule.match as RawMatcher[] | undefined) ?? []),
    ...((rule.roles as string[] | undefined) ?? []).flatMap((r) => (roles[r] as RawMatcher[] | undefined) ?? []),
  ];
  if (rule.match === undefined && rule.roles === undefined) return [undefined]; // every verified peer
  const bad: string[] = [];
  const out = raw.map((m) => compileMatcher(m, [], (_, message) => bad.push(message)));
  return bad.length > 0 ? "malformed" : out;
}

/** The merged set with only the attestation records the node's policies can use. */
export function scopeAttestations(merged: Obj): Obj {
  const records = (merged.attestations as Obj[] | undefined) ?? [];
  if (records.length === 0) return merged;
  const enforced = new Set(((merged.listeners as Obj[] | undefined) ?? []).map((l) => String(l.policy)));
  const policies = (merged.policies as Obj | undefined) ?? {};
  const byAttestor = new Map<string, IdentityIndex<true>>();
  for (const name of enforced) {
    for (const rule of ((policies[name] as Obj | undefined)?.rules as Obj[] | undefined) ?? []) {
      const attestor = (rule.attestation as Obj | undefined)?.attestor;
      if (typeof attestor !== "string") continue;
      const ms = ruleMatchers(rule, (merged.roles as Obj | undefined) ?? {});
      if (ms === "malformed") return merged; // validation reports it; nothing is filtered on a guess
      let index = byAttestor.get(attestor);
      if (!index) byAttestor.set(attestor, (index = new IdentityIndex<true>()));
      for (const m of ms) index.add(m, true);
    }
  }
  const usable = (r: Obj) => {
    const index = byAttestor.get(String(r.attestor));
    if (!index) return false;
    try {
      return index.lookup(SpiffeId.parse(String(r.subject))).length > 0;
    } catch {
      return true; // an invalid subject is kept, for validation to refuse with its path
    }
  };
  return { ...merged, attestations: records.filter(usable) };
}
