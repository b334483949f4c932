// `parley certs dev`: the development PKI the demo runs on. Two trust domains, a sidecar SVID and
// callers the demo policy allows and denies, including one that tries cross-domain confusion.
import { mkdirSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { CertificateAuthority, type Issued, type KeyType } from "./issue.js";

export interface DevIdentity {
  readonly file: string;
  readonly id: string;
  /** What the demo policy does with it, and why. */
  readonly demo: string;
}

export const DEV_IDENTITIES: readonly DevIdentity[] = [
  { file: "frontend", id: "spiffe://parley.demo/ns/web/sa/frontend", demo: "allowed (rule web-frontend: exact ID)" },
  { file: "ops", id: "spiffe://parley.demo/ns/ops/sa/admin", demo: "allowed (rule ops-namespace: path prefix /ns/ops)" },
  { file: "billing", id: "spiffe://partner.demo/billing", demo: "allowed (rule partner-domain: trust domain partner.demo; chain has an intermediate)" },
  { file: "reporter", id: "spiffe://parley.demo/ns/batch/sa/reporter", demo: "denied (no rule names it: identity_not_allowed, default_deny)" },
  { file: "legacy", id: "spiffe://parley.demo/ns/web/sa/legacy", demo: "denied (rule retired-legacy: explicit_deny)" },
  { file: "impostor", id: "spiffe://partner.demo/billing", demo: "denied (partner.demo ID signed by parley.demo's CA: invalid_svid chain_unverified)" },
];

export const SIDECAR_ID = "spiffe://parley.demo/sidecar/echo";
const LEAF_DAYS = 90;

function write(dir: string, name: string, issued: Issued): void {
  writeFileSync(join(dir, `${name}.pem`), issued.chainPem);
  writeFileSync(join(dir, `${name}.key`), issued.keyPem, { mode: 0o600 });
}

export async function generateDevCerts(dir: string, keyType: KeyType = "ec-p256"): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const days = (n: number) => new Date(Date.now() + n * 86_400_000);
  const leaf = { keyType, notAfter: days(LEAF_DAYS) };
  const demoCA = await CertificateAuthority.root({ trustDomain: "parley.demo", keyType });
  const partnerCA = await CertificateAuthority.root({ trustDomain: "partner.demo", keyType });
  const partnerIssuer = await partnerCA.intermediate({ trustDomain: "partner.demo", name: "partner.demo issuing CA", keyType });
  writeFileSync(join(dir, "parley.demo.bundle.pem"), demoCA.certPem);
  writeFileSync(join(dir, "partner.demo.bundle.pem"), partnerCA.certPem);
  write(dir, "sidecar", await demoCA.leaf({ ...leaf, uris: [SIDECAR_ID], dnsNames: ["localhost"], ips: ["127.0.0.1"] }));
  for (const d of DEV_IDENTITIES) {
    const issuer = d.file === "billing" ? partnerIssuer : demoCA;
    write(dir, d.file, await issuer.leaf({ ...leaf, uris: [d.id] }));
  }
  writeFileSync(join(dir, "README.md"), devReadme(keyType));
}

function devReadme(keyType: KeyType): string {
  const rows = DEV_IDENTITIES.map((d) => `| \`${d.file}.pem\` | \`${d.id}\` | ${d.demo} |`).join("\n");
  return `# certs-dev: development certificates (never for production)

Made by \`parley certs dev\` (${keyType}); leaves live ${LEAF_DAYS} days and the demo remakes the set when
one has expired. Trust bundles: \`parley.demo.bundle.pem\`, \`partner.demo.bundle.pem\`. The sidecar's
own SVID is \`sidecar.pem\` (\`${SIDECAR_ID}\`, also valid for \`localhost\` and \`127.0.0.1\`).

| file | SPIFFE ID | under config/demo.yaml |
|---|---|---|
${rows}

Each \`NAME.pem\` holds the certificate chain (leaf first), \`NAME.key\` its PKCS#8 private key.
\`openssl s_client -cert\` sends only the first certificate of the file: add \`-cert_chain NAME.pem\` so that
billing's intermediate goes too (curl sends the whole file).
`;
}

/** True when every dev certificate exists and is valid for at least `marginMs` more. */
export function devCertsFresh(dir: string, marginMs = 86_400_000): boolean {
  const names = ["sidecar", ...DEV_IDENTITIES.map((d) => d.file)];
  for (const n of names) {
    const file = join(dir, `${n}.pem`);
    if (!existsSync(file) || !existsSync(join(dir, `${n}.key`))) return false;
    const cert = new X509Certificate(readFileSync(file));
    if (Date.parse(cert.validTo) - Date.now() < marginMs) return false;
  }
  return true;
}
