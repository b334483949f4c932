// Negotiation settings (ALPN parley/1): the grant signing key and the issuers of attestation and
// approval tokens, compiled from the configuration's `negotiation`, `attestors`, `approvers`,
// `token_services` (Transaction Tokens) and `verifiers` (EAR attestation results).
import { createPrivateKey, type KeyObject } from "node:crypto";
import type { JSONWebKeySet } from "jose";
import type { CompileContext } from "../config/resources.js";
import type { RawResources } from "../config/schema.js";
import { issuersFrom, ringFrom, type IssuerRing, type Issuers } from "./tokens.js";

export interface NegotiationSettings {
  readonly grantKey: KeyObject;
  readonly grantTtlMs: number;
  readonly frameTimeoutMs: number;
  readonly attestors: Issuers;
  readonly approvers: Issuers;
  readonly tokenServices: IssuerRing;
  readonly verifiers: IssuerRing;
}

export function compileNegotiation(c: CompileContext, raw: RawResources): NegotiationSettings | undefined {
  const n = raw.negotiation;
  if (!n) return undefined;
  const path = ["negotiation", "grant_key"];
  const pem = c.readFile(path, n.grant_key);
  if (pem === undefined) return undefined;
  let grantKey: KeyObject;
  try {
    grantKey = createPrivateKey(pem);
  } catch (e) {
    c.error(path, `unreadable private key: ${(e as Error).message}`);
    return undefined;
  }
  if (grantKey.asymmetricKeyType !== "ec" || grantKey.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    c.error(path, "the grant key must be an EC P-256 private key (grants are ES256)");
    return undefined;
  }
  const keySets = (o: Record<string, { jwks?: unknown }>, section: string) => {
    try {
      return issuersFrom(Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v.jwks as JSONWebKeySet | undefined])));
    } catch (e) {
      c.error([section], `bad JWKS: ${(e as Error).message}`);
      return new Map() as Issuers;
    }
  };
  // A rule's `attestation.attestor` and a revocation's `attestor` name either kind: one name, one issuer.
  for (const name of Object.keys(raw.verifiers))
    if (name in raw.attestors) c.error(["verifiers", name], `${name} is also an attestor: a verifier and an attestor need distinct names`);
  const ring = (section: "token_services" | "verifiers"): IssuerRing => {
    try {
      return ringFrom(raw[section]);
    } catch (e) {
      c.error([section], `bad JWKS: ${(e as Error).message}`);
      return new Map();
    }
  };
  return {
    grantKey,
    grantTtlMs: n.grant_ttl,
    frameTimeoutMs: n.frame_timeout,
    attestors: keySets(raw.attestors, "attestors"),
    approvers: keySets(raw.approvers, "approvers"),
    tokenServices: ring("token_services"),
    verifiers: ring("verifiers"),
  };
}
