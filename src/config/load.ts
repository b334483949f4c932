// Loading a sidecar configuration: YAML → schema → validated, compiled runtime data. Every problem is
// collected with its file and line; nothing is half-applied.
import { createHash, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { SpiffeId, TrustDomain } from "../identity/spiffeid.js";
import { BundleSet, X509Bundle } from "../identity/x509bundle.js";
import { derFromPem } from "../identity/x509cert.js";
import { SvidVerifier } from "../identity/x509svid.js";
import { AttestationStore, flattenClaims, type AttestationRecord } from "../policy/attestation.js";
import { compilePolicies } from "../policy/compile.js";
import type { Policy } from "../policy/model.js";
import { configSchema, type RawConfig } from "./schema.js";
import { ConfigError, type ConfigIssue, type ConfigPath, YamlSource } from "./source.js";
import { type HostPort, parseHostPort } from "./units.js";

export interface ListenerConfig {
  readonly name: string;
  readonly listen: HostPort;
  readonly upstream: HostPort;
  readonly policy: Policy;
  readonly handshakeTimeoutMs: number;
  readonly connectTimeoutMs: number;
}

export interface OwnIdentity {
  readonly id: SpiffeId;
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly notAfter: number;
}

export interface SidecarConfig {
  readonly file: string;
  /** Content hash of the file and every file it names; logged with each decision. */
  readonly version: string;
  readonly identity: OwnIdentity;
  readonly bundles: BundleSet;
  readonly listeners: readonly ListenerConfig[];
  readonly policies: ReadonlyMap<string, Policy>;
  readonly attestations: AttestationStore;
  readonly drainTimeoutMs: number;
  /** How long a live session the new configuration no longer admits may go on. */
  readonly revocationGraceMs: number;
  /** The configuration file and every file it names, resolved: what a watcher watches. */
  readonly files: readonly string[];
  readonly maxChainLength: number;
  readonly logLevel: RawConfig["log"]["level"];
}

/** Collects issues while compiling; throws them all at the end. */
class Compiler {
  readonly issues: ConfigIssue[] = [];
  readonly files: string[] = [];
  private readonly hash = createHash("sha256");

  constructor(readonly src: YamlSource) {
    this.hash.update(src.text);
  }

  error(path: ConfigPath, message: string, key?: string): void {
    this.issues.push(this.src.issue(path, message, key));
  }

  /** Reads a file named by the config, relative to the config file. */
  readFile(path: ConfigPath, name: string): string | undefined {
    const full = resolve(dirname(this.src.file), name);
    this.files.push(full);
    try {
      const text = readFileSync(full, "utf8");
      this.hash.update(text);
      return text;
    } catch (e) {
      this.error(path, `cannot read ${full}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      return undefined;
    }
  }

  version(): string {
    return this.hash.digest("hex").slice(0, 16);
  }
}

export function loadConfig(file: string, now: number = Date.now()): SidecarConfig {
  const src = YamlSource.read(file);
  const parsed = configSchema.safeParse(src.toJS());
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.flatMap((i) =>
        i.code === "unrecognized_keys"
          ? i.keys.map((k) => src.issue(i.path, "unknown key", k))
          : [src.issue(i.path, i.message)],
      ),
    );
  }
  const raw = parsed.data;
  const c = new Compiler(src);
  const bundles = compileBundles(c, raw);
  const identity = compileIdentity(c, raw, bundles, now);
  const attestations = compileAttestations(c, raw);
  const compiled = compilePolicies(
    { policies: raw.policies, roles: raw.roles, attestors: Object.keys(raw.attestors), listeners: raw.listeners.map((l) => l.name) },
    "",
    (path, message) => c.error(path, message),
  );
  const version = c.version();
  const policies = new Map([...compiled].map(([name, p]) => [name, { ...p, version }]));
  const listeners = compileListeners(c, raw, policies);
  if (c.issues.length > 0) throw new ConfigError(c.issues);
  return {
    file,
    version,
    identity: identity!,
    bundles,
    listeners,
    policies,
    attestations,
    drainTimeoutMs: raw.drain_timeout,
    revocationGraceMs: raw.revocation_grace,
    files: [resolve(file), ...c.files],
    maxChainLength: raw.limits.max_chain_length,
    logLevel: raw.log.level,
  };
}

function compileBundles(c: Compiler, raw: RawConfig): BundleSet {
  const out: X509Bundle[] = [];
  for (const [name, td] of Object.entries(raw.trust_domains)) {
    let trustDomain: TrustDomain;
    try {
      trustDomain = TrustDomain.parse(name);
    } catch (e) {
      c.error(["trust_domains"], (e as Error).message, name);
      continue;
    }
    const path = ["trust_domains", name, "bundle"];
    const pem = c.readFile(path, td.bundle);
    if (pem === undefined) continue;
    try {
      out.push(X509Bundle.fromPem(trustDomain, pem, td.bundle));
    } catch (e) {
      c.error(path, (e as Error).message);
    }
  }
  return new BundleSet(out);
}

function compileIdentity(c: Compiler, raw: RawConfig, bundles: BundleSet, now: number): OwnIdentity | undefined {
  const certPem = c.readFile(["identity", "cert"], raw.identity.cert);
  const keyPem = c.readFile(["identity", "key"], raw.identity.key);
  if (certPem === undefined || keyPem === undefined) return undefined;
  let chain: Buffer[];
  try {
    chain = derFromPem(certPem, raw.identity.cert);
  } catch (e) {
    c.error(["identity", "cert"], (e as Error).message);
    return undefined;
  }
  // The sidecar's own certificate must itself be a valid SVID; its chain is checked when its trust
  // domain is among the configured bundles.
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
  return { id: result.ok ? result.svid.id : result.id!, certChainPem: certPem, keyPem, notAfter: leaf.notAfter };
}

function compileAttestations(c: Compiler, raw: RawConfig): AttestationStore {
  const records: AttestationRecord[] = [];
  raw.attestations.forEach((a, i) => {
    const path = ["attestations", i];
    const subject = SpiffeId.tryParse(a.subject);
    if (!(subject instanceof SpiffeId)) return c.error([...path, "subject"], subject.message);
    if (!(a.attestor in raw.attestors)) return c.error([...path, "attestor"], `unknown attestor ${a.attestor}; defined: ${Object.keys(raw.attestors).join(", ") || "none"}`);
    const issuedAt = Date.parse(a.issued_at);
    const expiresAt = Date.parse(a.expires_at);
    if (expiresAt <= issuedAt) return c.error([...path, "expires_at"], "expires_at must be after issued_at");
    records.push({
      subject: subject.toString(),
      attestor: a.attestor,
      claims: flattenClaims(a.claims),
      issuedAt,
      expiresAt,
      ...(a.cert_fingerprint ? { certFingerprint: a.cert_fingerprint.toLowerCase() } : {}),
      source: "config",
    });
  });
  return new AttestationStore(records);
}

function compileListeners(c: Compiler, raw: RawConfig, policies: ReadonlyMap<string, Policy>): ListenerConfig[] {
  const names = new Set<string>();
  const addrs = new Set<string>();
  const out: ListenerConfig[] = [];
  raw.listeners.forEach((l, i) => {
    const path = ["listeners", i];
    if (names.has(l.name)) c.error([...path, "name"], `duplicate listener name ${l.name}`);
    names.add(l.name);
    const listen = parseHostPort(l.listen)!;
    if (listen.port !== 0 && addrs.has(l.listen)) c.error([...path, "listen"], `address ${l.listen} is used by another listener`);
    addrs.add(l.listen);
    const policy = policies.get(l.policy);
    if (!policy) {
      c.error([...path, "policy"], `unknown policy ${l.policy}; defined: ${[...policies.keys()].join(", ") || "none"}`);
      return;
    }
    out.push({
      name: l.name,
      listen,
      upstream: parseHostPort(l.upstream)!,
      policy,
      handshakeTimeoutMs: l.handshake_timeout,
      connectTimeoutMs: l.connect_timeout,
    });
  });
  return out;
}
