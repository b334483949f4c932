// The one set of checks both outbound transports (tls and multiplexed) make of a remote sidecar
// before anything of the application's goes to it: SVID, expected ID, revocations, protocol.
import { beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority } from "../src/certs/issue.js";
import { RevocationList } from "../src/policy/revocation.js";
import { checkRemote, type RemoteRoute } from "../src/proxy/outbound/remote.js";
import { SpiffeId, TrustDomain } from "../src/spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../src/spiffe/x509bundle.js";
import { derFromPem, fingerprintOf } from "../src/spiffe/x509cert.js";
import { SvidVerifier } from "../src/spiffe/x509svid.js";

const REMOTE = SpiffeId.parse("spiffe://a.test/remote");
let route: RemoteRoute;
let chain: Buffer[];
let foreign: Buffer[];
let fingerprint: string;

beforeAll(async () => {
  const a = await CertificateAuthority.root({ trustDomain: "a.test" });
  const c = await CertificateAuthority.root({ trustDomain: "a.test" });
  const remote = await a.leaf({ uris: [REMOTE.toString()] });
  chain = derFromPem(remote.chainPem, "remote");
  foreign = derFromPem((await c.leaf({ uris: [REMOTE.toString()] })).chainPem, "foreign");
  const verifier = new SvidVerifier(new BundleSet([X509Bundle.fromPem(TrustDomain.parse("a.test"), a.certPem, "a")]));
  route = { verifier, expectId: REMOTE, revocations: new RevocationList() };
  fingerprint = fingerprintOf(chain[0]!);
});

const negotiating = (selected: string | false | null) => ({ wanted: "parley/1", selected, hint: "is negotiation on at its listener?" });

describe("checkRemote", () => {
  it("passes the expected remote, naming what a revocation can name of it", () => {
    const r = checkRemote(chain, route, Date.now(), negotiating("parley/1"));
    expect(r).toEqual({ ok: true, subject: { peer: REMOTE, certFingerprint: fingerprint } });
  });

  it("refuses a remote whose chain does not lead to its trust domain's bundle", () => {
    expect(checkRemote(foreign, route, Date.now())).toMatchObject({
      ok: false,
      reason: "remote_invalid_svid",
      detail: expect.stringMatching(/\(chain_unverified\)$/),
    });
  });

  it("refuses a valid SVID that is not the expected ID", () => {
    const other = { ...route, expectId: SpiffeId.parse("spiffe://a.test/other") };
    expect(checkRemote(chain, other, Date.now())).toEqual({
      ok: false,
      reason: "remote_id_mismatch",
      detail: "the remote is spiffe://a.test/remote, not spiffe://a.test/other",
    });
  });

  it("refuses a remote a revocation in force names, until the entry's until", () => {
    const now = Date.now();
    const revocations = new RevocationList([
      { name: "leaked", reason: "key leaked", until: now + 1000, match: [{ kind: "cert_fingerprint", value: fingerprint }] },
    ]);
    expect(checkRemote(chain, { ...route, revocations }, now)).toMatchObject({
      ok: false,
      reason: "certificate_revoked",
      detail: expect.stringMatching(/leaked.*key leaked/),
    });
    expect(checkRemote(chain, { ...route, revocations }, now + 1000).ok).toBe(true);
  });

  it("refuses a negotiating route's remote that did not select the protocol, after its identity", () => {
    expect(checkRemote(chain, route, Date.now(), negotiating(false))).toEqual({
      ok: false,
      reason: "remote_not_negotiating",
      detail: "the remote did not select parley/1: is negotiation on at its listener?",
    });
    expect(checkRemote(foreign, route, Date.now(), negotiating(false))).toMatchObject({ reason: "remote_invalid_svid" });
  });
});
