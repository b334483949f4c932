// parley's certificate reader against OpenSSL's reading of the same certificates (Node's
// X509Certificate), and name constraint matching form by form (RFC 5280 §4.2.1.10).
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { uriHost, violation, type GeneralName } from "../src/spiffe/names.js";
import { derFromPem, KeyUsageFlags, parseCertificate } from "../src/spiffe/x509cert.js";

let certs: { what: string; der: Buffer }[];

beforeAll(async () => {
  const root = await CertificateAuthority.root({ trustDomain: "a.test", keyType: "rsa-2048" });
  const inter = await root.intermediate({ name: "inter", pathLength: 1 });
  const leaves: Issued[] = [
    await inter.leaf({ uris: ["spiffe://a.test/web"], dnsNames: ["web.a.test"], ips: ["10.1.2.3", "::1"] }),
    await root.leaf({ uris: ["spiffe://a.test/rsa"], keyType: "rsa-2048", notAfter: new Date("2051-01-01T00:00:00Z") }),
  ];
  const dev = readdirSync("certs-dev")
    .filter((f) => f.endsWith(".pem") && !f.includes("key"))
    .flatMap((f) => derFromPem(readFileSync(`certs-dev/${f}`, "utf8"), f).map((der) => ({ what: f, der })));
  certs = [
    ...[root.certPem, inter.certPem].map((p, i) => ({ what: `ca ${i}`, der: derFromPem(p, "ca")[0]! })),
    ...leaves.map((l, i) => ({ what: `leaf ${i}`, der: l.der })),
    ...dev,
  ];
});

describe("the certificate reader agrees with OpenSSL", () => {
  it("on fingerprint, serial, validity, CA flag, names and URI SANs", () => {
    expect(certs.length).toBeGreaterThan(4);
    for (const { what, der } of certs) {
      const mine = parseCertificate(der);
      const node = new X509Certificate(der);
      const ctx = what;
      expect(mine.fingerprint, ctx).toBe(node.fingerprint256.replace(/:/g, "").toLowerCase());
      expect(mine.serial, ctx).toBe(node.serialNumber.toLowerCase());
      expect(mine.notBefore, ctx).toBe(Date.parse(node.validFrom));
      expect(mine.notAfter, ctx).toBe(Date.parse(node.validTo));
      expect(mine.isCA, ctx).toBe(node.ca);
      const uris = (node.subjectAltName ?? "").split(", ").flatMap((s) => (s.startsWith("URI:") ? [s.slice(4)] : []));
      expect(mine.uriSans, ctx).toEqual(uris);
      expect(mine.tbs.length, ctx).toBeLessThan(der.length);
      expect(node.verify(node.publicKey) || node.issuer !== node.subject, ctx).toBe(true);
    }
  });

  it("reads key usage bits, path length, key type and size, and issuer/subject for path building", () => {
    const [root, inter, leaf, rsaLeaf] = certs.map((c) => parseCertificate(c.der));
    expect(root!.keyUsage).toBe(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign);
    expect(root!.key).toEqual({ type: "rsa", bits: 2048 });
    expect(inter!.pathLen).toBe(1);
    expect(inter!.issuer.key).toBe(root!.subject.key);
    expect(leaf!.issuer.key).toBe(inter!.subject.key);
    expect(leaf!.keyUsage).toBe(KeyUsageFlags.digitalSignature);
    expect(leaf!.keyUsageCritical).toBe(true);
    expect(leaf!.key).toEqual({ type: "ec", curve: "1.2.840.10045.3.1.7" });
    expect(leaf!.sans.map((n) => n.kind)).toEqual(["uri", "dns", "ip", "ip"]);
    expect(rsaLeaf!.notAfter).toBe(Date.parse("2051-01-01T00:00:00Z")); // GeneralizedTime past 2049
    expect(rsaLeaf!.authorityKeyId).toBe(root!.subjectKeyId);
  });
});

describe("name constraints", () => {
  const dns = (value: string): GeneralName => ({ kind: "dns", value });
  const uri = (value: string): GeneralName => ({ kind: "uri", value });
  const email = (value: string): GeneralName => ({ kind: "email", value });
  const ip = (...bytes: number[]): GeneralName => ({ kind: "ip", bytes: Buffer.from(bytes) });
  const permits = (name: GeneralName, c: GeneralName) => violation([name], { permitted: [c], excluded: [] }) === undefined;
  const excludes = (name: GeneralName, c: GeneralName) => violation([name], { permitted: [], excluded: [c] }) !== undefined;

  it("dNSName: the name and names with labels added on the left; a leading period, subdomains only", () => {
    expect(permits(dns("example.com"), dns("example.com"))).toBe(true);
    expect(permits(dns("www.Example.com"), dns("example.com"))).toBe(true);
    expect(permits(dns("wwwexample.com"), dns("example.com"))).toBe(false);
    expect(permits(dns("example.com"), dns(".example.com"))).toBe(false);
    expect(excludes(dns("a.b.example.com"), dns(".example.com"))).toBe(true);
  });

  it("URI: on the host of the authority; no host, no match", () => {
    expect(uriHost("spiffe://a.test/web")).toBe("a.test");
    expect(uriHost("https://user@Host.example:8443/x")).toBe("host.example");
    expect(uriHost("urn:uuid:1234")).toBeUndefined();
    expect(permits(uri("spiffe://a.test/web"), uri("a.test"))).toBe(true);
    expect(permits(uri("spiffe://sub.a.test/web"), uri("a.test"))).toBe(false);
    expect(permits(uri("spiffe://sub.a.test/web"), uri(".a.test"))).toBe(true);
    expect(permits(uri("urn:uuid:1234"), uri("a.test"))).toBe(false);
  });

  it("rfc822Name: a mailbox, a host, or a domain", () => {
    expect(permits(email("ops@example.com"), email("ops@example.com"))).toBe(true);
    expect(permits(email("dev@example.com"), email("ops@example.com"))).toBe(false);
    expect(permits(email("dev@EXAMPLE.com"), email("example.com"))).toBe(true);
    expect(permits(email("dev@mail.example.com"), email(".example.com"))).toBe(true);
    expect(permits(email("dev@example.com"), email(".example.com"))).toBe(false);
  });

  it("iPAddress: address and mask of the same family", () => {
    expect(permits(ip(10, 1, 2, 3), ip(10, 0, 0, 0, 255, 0, 0, 0))).toBe(true);
    expect(permits(ip(11, 1, 2, 3), ip(10, 0, 0, 0, 255, 0, 0, 0))).toBe(false);
    expect(permits(ip(...new Array<number>(16).fill(0)), ip(10, 0, 0, 0, 255, 0, 0, 0))).toBe(false);
  });

  it("forms not constrained pass; forms parley does not process refuse", () => {
    expect(violation([dns("anything.example")], { permitted: [uri("a.test")], excluded: [] })).toBeUndefined();
    expect(violation([dns("x.example")], { permitted: [{ kind: "other", tag: 0xa0 }], excluded: [] })).toMatch(/does not process/);
  });
});

describe("the parsed certificate's shape", () => {
  it("is one V8 hidden class for every certificate: CA, leaf, RSA, EC, with and without key usage", () => {
    // %HaveSameMap needs --allow-natives-syntax, so in a child node; the same maps keep the verification path's property reads monomorphic.
    const script = `
      const { parseCertificate } = await import("./src/spiffe/x509cert.ts");
      const { CertificateAuthority } = await import("./src/certs/issue.ts");
      const { X509Certificate } = await import("node:crypto");
      const ca = await CertificateAuthority.root({ trustDomain: "a.test" });
      const inter = await ca.intermediate({ name: "inter", pathLength: 0 });
      const leaves = [await inter.leaf({ uris: ["spiffe://a.test/x"], dnsNames: ["x.a.test"] }), await ca.leaf({ uris: ["spiffe://a.test/y"], keyType: "rsa-2048", keyUsage: null })];
      const parsed = [ca.certPem, inter.certPem, ...leaves.map((l) => l.certPem)].map((p) => parseCertificate(new X509Certificate(p).raw));
      const same = new Function("a", "b", "return %HaveSameMap(a, b)");
      console.log(JSON.stringify(parsed.slice(1).map((p) => same(parsed[0], p))));`;
    const r = spawnSync(process.execPath, ["--allow-natives-syntax", "--import", "tsx", "--input-type=module", "-e", script], {
      encoding: "utf8",
      timeout: 15_000,
    });
    expect([r.status, r.stderr]).toEqual([0, ""]);
    expect(JSON.parse(r.stdout)).toEqual([true, true, true]);
  });
});
