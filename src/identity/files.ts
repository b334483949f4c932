// The sidecar's own X509-SVID and key, read from files and checked before anything binds.
import { createPrivateKey } from "node:crypto";
import type { OwnSvid } from "../workloadapi/message.js";
import type { BundleSet } from "../spiffe/x509bundle.js";
import { derFromPem } from "../spiffe/x509cert.js";
import { SvidVerifier } from "../spiffe/x509svid.js";
import type { CompileContext } from "../config/resources.js";

/** The sidecar's own SVID, however it was obtained. */
export type OwnIdentity = OwnSvid;

export interface IdentityFiles {
  readonly certName: string;
  /** Undefined when the file could not be read (already reported). */
  readonly certPem: string | undefined;
  readonly keyPem: string | undefined;
}

/** Reads the identity files (their content counts in the configuration's version). */
export function readIdentity(c: CompileContext, raw: { cert: string; key: string }): IdentityFiles {
  return { certName: raw.cert, certPem: c.readFile(["identity", "cert"], raw.cert), keyPem: c.readFile(["identity", "key"], raw.key) };
}

/**
 * Checks the own SVID: a valid, unexpired X509-SVID whose key matches. Its chain is checked
 * when its trust domain is among `bundles`.
 */
export function compileIdentity(c: CompileContext, files: IdentityFiles, bundles: BundleSet, now: number): OwnIdentity | undefined {
  const { certPem, keyPem } = files;
  if (certPem === undefined || keyPem === undefined) return undefined;
  let chain: Buffer[];
  try {
    chain = derFromPem(certPem, files.certName);
  } catch (e) {
    c.error(["identity", "cert"], (e as Error).message);
    return undefined;
  }
  const result = new SvidVerifier(bundles).verify(chain, now);
  if (!result.ok && result.rule !== "untrusted_domain") {
    c.error(["identity", "cert"], `not a usable X509-SVID: ${result.message} (${result.rule})`);
    return undefined;
  }
  const leaf = result.ok ? result.svid.leaf : result.leaf!;
  try {
    if (!leaf.x509.checkPrivateKey(createPrivateKey(keyPem))) {
      c.error(["identity", "key"], "private key does not match the certificate");
      return undefined;
    }
  } catch (e) {
    c.error(["identity", "key"], `unreadable private key: ${(e as Error).message}`);
    return undefined;
  }
  const id = result.ok ? result.svid.id : result.id!;
  return { id, certChainPem: certPem, keyPem, notAfter: leaf.notAfter, serial: leaf.serial, fingerprint: leaf.fingerprint };
}
