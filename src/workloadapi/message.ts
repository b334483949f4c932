// Reading Workload API messages (SPIFFE Workload API §5.1, §6.1). Each message is the full current
// state (§4.3); one that cannot be used throws and is discarded by the caller (§4.5).
import { createPrivateKey } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { PROTO_ROOT } from "../assets/paths.js";
import { splitDer } from "../spiffe/der.js";
import { SpiffeId, TrustDomain } from "../spiffe/spiffeid.js";
import { parseSpiffeBundle, type JwtAuthority } from "../spiffe/spiffebundle.js";
import { BundleSet, X509Bundle } from "../spiffe/x509bundle.js";
import { SvidVerifier } from "../spiffe/x509svid.js";
import { WorkloadApiError } from "./endpoint.js";

/** The sidecar's own X509-SVID, however it was obtained. */
export interface OwnSvid {
  readonly id: SpiffeId;
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly notAfter: number;
  /** The leaf's serial number, lowercase hex. */
  readonly serial: string;
  /** SHA-256 of the leaf's DER, lowercase hex. */
  readonly fingerprint: string;
}

export interface X509Svid {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}
export interface X509Message {
  svids: X509Svid[];
  federated_bundles: Record<string, Buffer>;
}
export interface JwtMessage {
  bundles: Record<string, Buffer>;
}

export function loadWorkloadService(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync("spiffe/workloadapi.proto", { keepCase: true, longs: String, defaults: true, includeDirs: [PROTO_ROOT] });
  return (grpc.loadPackageDefinition(def) as unknown as { SpiffeWorkloadAPI: grpc.ServiceClientConstructor }).SpiffeWorkloadAPI;
}

function pem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END ${label}-----\n`;
}

/** One X509SVIDResponse → the chosen SVID and the X.509 roots by trust domain. Throws on bad content. */
export function readX509Message(m: X509Message, hint: string | undefined, now: number): { svid: OwnSvid; roots: Map<string, Buffer[]> } {
  // Decoded with defaults, so every field is present; an empty one is a default value (API §4.5).
  const chosen = hint ? m.svids.find((s) => s.hint === hint) : m.svids[0];
  if (!chosen) throw new WorkloadApiError(hint && m.svids.length ? `no SVID with hint ${hint}` : "response carries no SVID");
  const id = SpiffeId.parse(chosen.spiffe_id);
  const roots = new Map<string, Buffer[]>();
  const ownRoots = splitDer(chosen.bundle);
  roots.set(id.trustDomain.name, ownRoots);
  for (const [tdId, der] of Object.entries(m.federated_bundles)) roots.set(TrustDomain.parse(tdId).name, splitDer(der));
  const chain = splitDer(chosen.x509_svid);
  if (chain.length === 0) throw new WorkloadApiError("x509_svid is empty");
  // The SVID must verify against its own trust domain's bundle, and its key must match.
  const own = new BundleSet([X509Bundle.fromDer(id.trustDomain, ownRoots, `bundle of ${id.trustDomain.name}`)]);
  const check = new SvidVerifier(own).verify(chain, now);
  if (!check.ok) throw new WorkloadApiError(`SVID ${id.toString()} does not verify: ${check.message} (${check.rule})`);
  if (!check.svid.id.equals(id)) throw new WorkloadApiError(`spiffe_id ${id.toString()} differs from the certificate's ${check.svid.id.toString()}`);
  const keyPem = pem("PRIVATE KEY", chosen.x509_svid_key);
  const leaf = check.svid.leaf;
  if (!leaf.x509.checkPrivateKey(createPrivateKey(keyPem))) throw new WorkloadApiError("x509_svid_key does not match the SVID");
  const certChainPem = chain.map((d) => pem("CERTIFICATE", d)).join("");
  return { svid: { id, certChainPem, keyPem, notAfter: leaf.notAfter, serial: leaf.serial, fingerprint: leaf.fingerprint }, roots };
}

/** One JWTBundlesResponse → JWT authorities by trust domain. Throws on bad content. */
export function readJwtMessage(m: JwtMessage): Map<string, JwtAuthority[]> {
  const byDomain = new Map<string, JwtAuthority[]>();
  for (const [tdId, json] of Object.entries(m.bundles).sort()) {
    byDomain.set(TrustDomain.parse(tdId).name, [...parseSpiffeBundle(json.toString("utf8"), `JWT bundle of ${tdId}`).jwtAuthorities]);
  }
  return byDomain;
}
