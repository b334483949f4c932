// A negotiating session's peer is verified once, by its negotiation, and the decision takes that
// verification on (inbound/negotiation.ts, facts.ts): these tests hold that no chain that fails, and
// none that stops being valid between the negotiation and the decision, ever reaches the workload.
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CertificateAuthority, type Issued } from "../src/certs/issue.js";
import { connect, DeniedError } from "../src/negotiation/client.js";
import { decodeFrame, encodeFrame, FrameType } from "../src/negotiation/frame.js";
import { ManualClock } from "../testkit/clock.js";
import { startHarness, type Harness } from "../testkit/harness.js";
import { AGENT, dialParley, negotiationKeys, negotiationPolicies } from "../testkit/negotiation.js";
import { makePki, type TestPki } from "../testkit/pki.js";

const MINUTE = 60_000;
let pki: TestPki;
let h: Harness;
const clock = new ManualClock();

beforeAll(async () => {
  pki = await makePki();
  const policies = await negotiationPolicies(await negotiationKeys(), { negotiation: "grant_ttl: 1h, frame_timeout: 5s" });
  h = await startHarness(pki, { policies, now: clock.now });
});
afterAll(() => h.close());

const opts = (creds: Issued) => ({ host: "127.0.0.1", port: h.port, cert: creds.chainPem, key: creds.keyPem, ca: pki.a.certPem, roles: ["reader"] });

/** A parley/1 connection whose handshake the sidecar has finished (its session ticket arrived), no request sent yet. */
async function handshaken(creds: Issued): Promise<TLSSocket> {
  const s = dialParley(h.port, pki.a.certPem, creds);
  // TLS 1.3: the server sends its ticket once it has read the client's Finished, and the sidecar starts
  // the session (reads its clock for the negotiation) in that same turn.
  await new Promise((r) => s.once("session", r));
  return s;
}

/** The first frame the sidecar answers on `s`. */
function firstFrame(s: TLSSocket): Promise<ReturnType<typeof decodeFrame>> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    s.on("data", (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const frame = decodeFrame(buf);
      if (frame) resolve(frame);
    });
    s.once("close", () => reject(new Error("closed before a whole frame")));
  });
}

describe("a negotiating peer's chain, verified once", () => {
  it.each<[string, () => Promise<Issued>, string]>([
    ["a leaf of a CA outside the bundle", async () => (await CertificateAuthority.root({ trustDomain: "a.test" })).leaf({ uris: [AGENT] }), "chain_unverified"],
    ["an expired leaf", () => pki.leaf(pki.a, AGENT, { notBefore: new Date(clock.now() - 10 * MINUTE), notAfter: new Date(clock.now() - MINUTE) }), "expired"],
    [
      "a leaf not yet valid",
      () => pki.leaf(pki.a, AGENT, { notBefore: new Date(clock.now() + MINUTE), notAfter: new Date(clock.now() + 10 * MINUTE) }),
      "not_yet_valid",
    ],
  ])("%s is denied with its SVID rule and the workload sees no connection", async (_n, make, rule) => {
    const before = h.echo.accepted();
    const e = await connect(opts(await make())).then(
      () => undefined,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(DeniedError);
    expect(e).toMatchObject({ denial: "denied", rule });
    expect(await h.logs.next("decision", (r) => r.svid_rule === rule)).toMatchObject({ decision: "deny", negotiation_rule: rule });
    expect(h.echo.accepted()).toBe(before);
  });

  it("a certificate that expires after the negotiation began and before the decision is denied there", async () => {
    const agent = await pki.leaf(pki.a, AGENT, { notBefore: new Date(clock.now() - MINUTE), notAfter: new Date(clock.now() + MINUTE) });
    // While the certificate is valid the same request is granted.
    const granted = await connect(opts(agent));
    granted.socket.destroy();
    const before = h.echo.accepted();
    const s = await handshaken(agent);
    clock.advance(2 * MINUTE);
    const answer = firstFrame(s);
    s.write(encodeFrame(FrameType.Request, { roles: ["reader"] }));
    const frame = await answer;
    s.destroy();
    expect(frame?.type).toBe(FrameType.Denial);
    expect(frame?.payload).toMatchObject({ code: "denied", reasons: ["invalid_svid"], message: expect.stringMatching(/expired/) });
    // Denied by the decision on the verification carried over, its window checked again (no negotiation rule).
    const record = await h.logs.next("decision", (r) => r.svid_rule === "expired" && r.negotiation_rule === undefined);
    expect(record).toMatchObject({ decision: "deny", peer_id: AGENT });
    expect(h.echo.accepted()).toBe(before);
  });
});
