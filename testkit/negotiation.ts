// What the negotiation suites share: the signing keys of an attestor, an approver and an impostor,
// the sidecar's grant key (file and public PEM), a policy that needs attestation for `writer` and
// grants `reader` to its trust domain, and the tokens those keys sign for an agent's certificate.
import { createHash, generateKeyPairSync, type KeyObject, X509Certificate } from "node:crypto";
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";
import type { Issued } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { MemoryLog, writeFiles } from "./harness.js";

export const OWN = "spiffe://a.test/sidecar";
export const AGENT = "spiffe://a.test/agent";

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;

export interface NegotiationKeys {
  readonly attestor: KeyPair;
  readonly approver: KeyPair;
  /** Signs like an attestor or approver but is trusted by no one. */
  readonly impostor: KeyPair;
  readonly grantPublicPem: string;
  /** The grant key's file, for `negotiation.grant_key`. */
  readonly grantKeyFile: string;
}

export async function negotiationKeys(): Promise<NegotiationKeys> {
  const grantKey = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const files = writeFiles({ "grant.pem": grantKey.privateKey.export({ type: "pkcs8", format: "pem" }) as string });
  return {
    attestor: await generateKeyPair("ES256"),
    approver: await generateKeyPair("ES256"),
    impostor: await generateKeyPair("ES256"),
    grantPublicPem: grantKey.publicKey.export({ type: "spki", format: "pem" }) as string,
    grantKeyFile: files["grant.pem"]!,
  };
}

const jwk = async (k: CryptoKey | KeyObject, kid: string): Promise<JWK> => ({ ...(await exportJWK(k)), kid, use: "sig" });

/** The policies section (YAML under `policies:`) with `rulesFirst` ahead of the shared rules, and the sidecar's `negotiation` settings. */
export async function negotiationPolicies(k: NegotiationKeys, o: { rulesFirst?: string; negotiation: string }): Promise<string> {
  return `
  main:
    rules:${o.rulesFirst ?? ""}
      - name: attested-writer
        action: allow
        match: [{ id: ${AGENT} }]
        roles: [writer]
        attestation: { attestor: node, claims: { env: prod, image.signed: true }, max_age: 5m }
      - name: readers
        action: allow
        match: [{ trust_domain: a.test }]
        roles: [reader]
roles:
  reader: [{ trust_domain: a.test }]
  writer: [{ id: spiffe://a.test/nobody }]
attestors:
  node: { jwks: ${JSON.stringify({ keys: [await jwk(k.attestor.publicKey, "node-1")] })} }
approvers:
  tickets: { jwks: ${JSON.stringify({ keys: [await jwk(k.approver.publicKey, "tickets-1")] })} }
negotiation: { grant_key: ${k.grantKeyFile}, ${o.negotiation} }`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);
/** RFC 8705 §3.1's `x5t#S256` of a certificate. */
export const thumbprint = (i: Issued) => createHash("sha256").update(new X509Certificate(i.certPem).raw).digest("base64url");

/** An attestation of `subject` (prod, signed image) by `key`, bound to its certificate; `over` replaces claims. */
export function signAttestation(key: KeyPair["privateKey"], subject: Issued, over: Record<string, unknown> = {}, header: Record<string, unknown> = {}) {
  return new SignJWT({ env: "prod", image: { signed: true }, cnf: { "x5t#S256": thumbprint(subject) }, ...over })
    .setProtectedHeader({ alg: "ES256", kid: "node-1", ...header })
    .setIssuer((over.iss as string) ?? "node")
    .setSubject(AGENT)
    .setAudience((over.aud as string) ?? OWN)
    .setIssuedAt((over.iat as number) ?? nowSeconds())
    .setExpirationTime((over.exp as number) ?? nowSeconds() + 600)
    .sign(key);
}

/** An approval of `scope` for the agent, by `key`, expiring at `exp`. */
export function signApproval(key: KeyPair["privateKey"], scope: string, exp: number) {
  return new SignJWT({ scope })
    .setProtectedHeader({ alg: "ES256", kid: "tickets-1" })
    .setIssuer("tickets")
    .setSubject(AGENT)
    .setAudience(OWN)
    .setExpirationTime(exp)
    .sign(key);
}

/** A TLS connection as `creds` to the sidecar on `port` (its CA `ca`), offering ALPN parley/1; the handshake completes asynchronously. */
export function dialParley(port: number, ca: string, creds: Issued): TLSSocket {
  return tlsConnect({ host: "127.0.0.1", port, servername: "localhost", ca, cert: creds.chainPem, key: creds.keyPem, ALPNProtocols: ["parley/1"] });
}

/**
 * An outbound sidecar as `agent` (trusting `bundlePem` for a.test) with one route, `to-main`, to
 * 127.0.0.1:`remotePort`; `route` holds the rest of the route's keys (expect_id, transport, negotiate…).
 */
export async function startOutboundAgent(agent: Issued, bundlePem: string, remotePort: number, route: string) {
  const f = writeFiles({ "cert.pem": agent.chainPem, "key.pem": agent.keyPem, "a.pem": bundlePem });
  const cfg = writeFiles({
    "out.yaml": `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
outbound:
  - { name: to-main, listen: "127.0.0.1:0", remote: "127.0.0.1:${remotePort}", ${route} }
policies: {}
admin: { listen: false }
`,
  })["out.yaml"]!;
  const logs = new MemoryLog();
  const sidecar = new Sidecar(loadConfig(cfg), { log: logs.log });
  await sidecar.start();
  return { sidecar, logs, port: sidecar.outboundAddresses()["to-main"]!.port };
}
