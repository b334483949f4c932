import { describe, expect, it } from "vitest";
import { SpiffeId, SpiffeIdError, TrustDomain, type SpiffeIdRule } from "../src/spiffe/spiffeid.js";

describe("SpiffeId.parse accepts", () => {
  it.each([
    ["spiffe://example.org", "example.org", ""],
    ["spiffe://example.org/workload", "example.org", "/workload"],
    ["spiffe://a-b_c.0/ns/Prod/sa/x.y-z_9", "a-b_c.0", "/ns/Prod/sa/x.y-z_9"],
    ["spiffe://td/..a/.b/c..", "td", "/..a/.b/c.."],
  ])("%s", (input, td, path) => {
    const id = SpiffeId.parse(input);
    expect(id.trustDomain.name).toBe(td);
    expect(id.path).toBe(path);
    expect(id.toString()).toBe(input);
  });
});

describe("SpiffeId.parse rejects, naming the rule", () => {
  const cases: Array<[string, SpiffeIdRule]> = [
    ["", "empty"],
    ["http://example.org/x", "scheme"],
    ["SPIFFE://example.org/x", "scheme"],
    ["spiffe:/example.org/x", "scheme"],
    ["example.org/x", "scheme"],
    ["spiffe://", "trust_domain_missing"],
    ["spiffe:///path", "trust_domain_missing"],
    ["spiffe://Example.org/x", "trust_domain_chars"],
    ["spiffe://example.org:8080/x", "trust_domain_chars"],
    ["spiffe://user@example.org/x", "trust_domain_chars"],
    ["spiffe://exa%41mple.org/x", "trust_domain_chars"],
    ["spiffe://example.org?q=1", "trust_domain_chars"],
    ["spiffe://exämple.org/x", "trust_domain_chars"],
    [`spiffe://${"a".repeat(256)}/x`, "trust_domain_too_long"],
    [`spiffe://example.org/${"a".repeat(2040)}`, "too_long"],
    ["spiffe://example.org/a//b", "path_empty_segment"],
    ["spiffe://example.org//", "path_empty_segment"],
    ["spiffe://example.org/", "path_trailing_slash"],
    ["spiffe://example.org/a/", "path_trailing_slash"],
    ["spiffe://example.org/./a", "path_dot_segment"],
    ["spiffe://example.org/a/..", "path_dot_segment"],
    ["spiffe://example.org/a%20b", "path_chars"],
    ["spiffe://example.org/a?x=1", "path_chars"],
    ["spiffe://example.org/a#frag", "path_chars"],
    ["spiffe://example.org/a b", "path_chars"],
    ["spiffe://example.org/a:b", "path_chars"],
    ["spiffe://a/b, URI:spiffe://a/c", "path_chars"],
  ];
  it.each(cases)("%s → %s", (input, rule) => {
    const r = SpiffeId.tryParse(input);
    expect(r).toBeInstanceOf(SpiffeIdError);
    expect((r as SpiffeIdError).rule).toBe(rule);
    expect(() => SpiffeId.parse(input)).toThrow(/invalid SPIFFE ID/);
  });
});

describe("TrustDomain", () => {
  it("parses a bare name or takes the domain of an ID", () => {
    expect(TrustDomain.parse("example.org").name).toBe("example.org");
    expect(TrustDomain.parse("spiffe://example.org/x").name).toBe("example.org");
    expect(TrustDomain.parse("example.org").idString()).toBe("spiffe://example.org");
  });
  it("rejects bad names", () => {
    expect(() => TrustDomain.parse("Example.org")).toThrow(SpiffeIdError);
    expect(() => TrustDomain.parse("")).toThrow(/trust domain is missing/);
  });
});

describe("path prefixes match on segment boundaries", () => {
  const id = SpiffeId.parse("spiffe://td/ns/prod/sa/web");
  it.each([
    [[], true],
    [["ns"], true],
    [["ns", "prod"], true],
    [["ns", "pro"], false],
    [["ns", "prod", "sa", "web", "x"], false],
  ])("%j → %s", (prefix, want) => expect(id.hasPathPrefix(prefix)).toBe(want));
});
