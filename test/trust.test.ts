// Trust material: DER runs, the SPIFFE bundle format, and JWT-SVID validation.
import { exportJWK, generateKeyPair, SignJWT, UnsecuredJWT } from "jose";
import { createSecretKey } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { splitDer } from "../src/spiffe/der.js";
import { verifyJwtSvid } from "../src/spiffe/jwtsvid.js";
import { TrustDomain } from "../src/spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../src/spiffe/x509bundle.js";
import { derFromPem } from "../src/spiffe/x509cert.js";
import { SvidVerifier } from "../src/spiffe/x509svid.js";
import { configYaml, writeFiles } from "../testkit/harness.js";
import { makePki } from "../testkit/pki.js";

let ca: CertificateAuthority;
let jwtKeys: Awaited<ReturnType<typeof generateKeyPair>>;
let otherKeys: Awaited<ReturnType<typeof generateKeyPair>>;
let bundleJson: string;
const td = TrustDomain.parse("a.test");

beforeAll(async () => {
  ca = await CertificateAuthority.root({ trustDomain: "a.test" });
  jwtKeys = await generateKeyPair("ES256");
  otherKeys = await generateKeyPair("ES256");
  bundleJson = JSON.stringify({
    keys: [
      { use: "x509-svid", kty: "EC", crv: "P-256", x5c: [derFromPem(ca.certPem, "ca")[0]!.toString("base64")], x: "ignored", y: "ignored" },
      { use: "jwt-svid", kid: "k1", ...(await exportJWK(jwtKeys.publicKey)) },
      { use: "jwt-svid", kid: "k2", kty: "FOO" },
      { use: "x509-ca", kty: "EC" },
    ],
    spiffe_sequence: 7,
    spiffe_refresh_hint: 300,
    some_future_member: { anything: true },
  });
});

describe("DER runs", () => {
  it("split into one certificate each, and refuse a truncated run", async () => {
    const inter = await ca.intermediate({ trustDomain: "a.test" });
    const leaf = await inter.leaf({ uris: ["spiffe://a.test/x"] });
    const ders = derFromPem(leaf.chainPem + ca.certPem, "chain");
    const run = Buffer.concat(ders);
    expect(splitDer(run).map((b) => b.toString("hex"))).toEqual(ders.map((b) => b.toString("hex")));
    expect(() => splitDer(run.subarray(0, run.length - 10))).toThrow(/runs past the end/);
    expect(() => splitDer(Buffer.from([0x02, 0x01, 0x00]))).toThrow(/expected a DER SEQUENCE/);
  });
});

describe("SPIFFE bundle format", () => {
  it("reads X.509 and JWT authorities and the sequence; skips unknown use and kty; ignores unknown members", async () => {
    const b = X509Bundle.fromDocument(td, bundleJson, "bundle.json");
    expect(b.roots).toHaveLength(1);
    expect(b.jwtAuthorities.map((a) => a.kid)).toEqual(["k1"]);
    expect(b.sequence).toBe(7);
    const leaf = await ca.leaf({ uris: ["spiffe://a.test/w"] });
    expect(new SvidVerifier(new BundleSet([b])).verify(derFromPem(leaf.chainPem, "l"), Date.now()).ok).toBe(true);
  });

  it("an empty keys list means the trust domain trusts nothing", async () => {
    const b = X509Bundle.fromDocument(td, '{"keys": []}', "empty.json");
    const leaf = await ca.leaf({ uris: ["spiffe://a.test/w"] });
    const r = new SvidVerifier(new BundleSet([b])).verify(derFromPem(leaf.chainPem, "l"), Date.now());
    expect(r.ok ? "ok" : r.rule).toBe("chain_unverified");
  });

  it.each([
    ["not JSON", "{nope", /not JSON/],
    ["keys not an array", '{"keys": {}}', /"keys" must be an array/],
    ["x509-svid with two certificates", JSON.stringify({ keys: [{ use: "x509-svid", kty: "EC", x5c: ["AA==", "AA=="] }] }), /exactly one certificate/],
    ["jwt-svid without kid", JSON.stringify({ keys: [{ use: "jwt-svid", kty: "EC", crv: "P-256", x: "a", y: "b" }] }), /must have a kid/],
  ])("refuses %s", (_n, text, want) => {
    expect(() => X509Bundle.fromDocument(td, text, "b.json")).toThrow(want);
  });

  it("is accepted by the configuration loader beside PEM bundles", async () => {
    const pki = await makePki();
    const f = writeFiles({
      "cert.pem": pki.server.chainPem,
      "key.pem": pki.server.keyPem,
      "a.pem": pki.a.certPem,
      "b.json": bundleJson.replace(/a\.test/g, "b.test"),
    });
    const yaml = configYaml({ cert: f["cert.pem"]!, key: f["key.pem"]!, a: f["a.pem"]!, b: f["b.json"]! }, 9);
    const c = loadConfig(writeFiles({ "c.yaml": yaml })["c.yaml"]!);
    expect(c.bundles.forTrustDomain(TrustDomain.parse("b.test"))!.jwtAuthorities).toHaveLength(1);
  });
});

describe("JWT-SVID validation", () => {
  const now = Date.now();
  const bundles = () => new BundleSet([X509Bundle.fromDocument(td, bundleJson, "b")]);
  const sign = (claims: Record<string, unknown>, key = jwtKeys.privateKey, kid = "k1", alg = "ES256") =>
    new SignJWT(claims).setProtectedHeader({ alg, kid, typ: "JWT" }).sign(key);
  const good = { sub: "spiffe://a.test/agent", aud: ["parley"], exp: Math.floor(now / 1000) + 300 };
  const check = async (token: string) => {
    const r = await verifyJwtSvid(token, { audience: "parley", bundles: bundles(), now });
    return r.ok ? "ok" : r.rule;
  };

  it("accepts a token signed by the sub's trust domain for this audience", async () => {
    const r = await verifyJwtSvid(await sign(good), { audience: "parley", bundles: bundles(), now });
    expect(r.ok && r.id.toString()).toBe("spiffe://a.test/agent");
  });

  it.each<[string, () => Promise<string>, string]>([
    ["expired beyond the leeway", () => sign({ ...good, exp: Math.floor(now / 1000) - 120 }), "expired"],
    ["another audience", () => sign({ ...good, aud: ["someone-else"] }), "audience_mismatch"],
    ["no exp", () => sign({ sub: good.sub, aud: good.aud }), "missing_claim"],
    ["no aud", () => sign({ sub: good.sub, exp: good.exp }), "missing_claim"],
    ["a sub that is not a SPIFFE ID", () => sign({ ...good, sub: "agent" }), "subject_invalid"],
    ["a sub of an unknown trust domain", () => sign({ ...good, sub: "spiffe://c.test/x" }), "untrusted_domain"],
    ["an unknown kid", () => sign(good, jwtKeys.privateKey, "nope"), "unknown_key"],
    ["a key of another authority under a known kid", () => sign(good, otherKeys.privateKey), "bad_signature"],
    ["alg none", async () => new UnsecuredJWT(good).encode(), "alg_not_allowed"],
    ["HS256", () => sign(good, createSecretKey(Buffer.alloc(32, 1)) as never, "k1", "HS256"), "alg_not_allowed"],
    [
      "a tampered payload",
      async () => {
        const [h, , s] = (await sign(good)).split(".");
        return `${h}.${Buffer.from(JSON.stringify({ ...good, sub: "spiffe://a.test/admin" })).toString("base64url")}.${s}`;
      },
      "bad_signature",
    ],
    ["not a JWS", async () => "abc", "malformed"],
  ])("refuses %s", async (_n, make, rule) => {
    expect(await check(await make())).toBe(rule);
  });

  it("allows a small clock skew", async () => {
    expect(await check(await sign({ ...good, exp: Math.floor(now / 1000) - 10 }))).toBe("ok");
  });
});
