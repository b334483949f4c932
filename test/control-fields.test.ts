// Every field the protocol declares survives the whole path: a push generated from the proto's own
// descriptors (every field of every message a ConfigResponse can reach, so a field added to the proto
// without a sample here fails this test) goes into parley's control plane as files, out of it over
// real gRPC, into parley's sidecar, and is ACKed.
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as protoLoader from "@grpc/proto-loader";
import { pino } from "pino";
import { beforeAll, describe, expect, it } from "vitest";
import { PROTO_ROOT } from "../src/assets/paths.js";
import { loadBootstrap } from "../src/config/load.js";
import { startControlPlane } from "../src/control/server/plane.js";
import { PROTO_FILE, resourcesFromWire, toStruct, toValue, type WireResource } from "../src/control/wire.js";
import { startEcho } from "../src/demo/echo.js";
import { MemoryLog, startControlled, tempDir, waitFor } from "../testkit/harness.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
beforeAll(async () => {
  pki = await makePki();
});

interface FieldDesc {
  name: string;
  label: string;
  type: string;
  typeName: string;
  oneofIndex: number;
  proto3Optional: boolean;
}
interface MessageDesc {
  field: FieldDesc[];
  nestedType: Array<MessageDesc & { name: string; options?: { mapEntry?: boolean } }>;
  oneofDecl: Array<{ name: string }>;
}

const PKG = "parley.control.v1";
const defs = protoLoader.loadSync(PROTO_FILE, { keepCase: true, includeDirs: [PROTO_ROOT] });
const message = (name: string) => (defs[`${PKG}.${name}`] as unknown as { type: MessageDesc }).type;

/** A JWK Set with one real P-256 key. */
function jwksJson(kid: string): string {
  const jwk = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey.export({ format: "jwk" });
  return JSON.stringify({ keys: [{ ...jwk, kid, alg: "ES256", use: "sig" }] });
}

/** One valid value per scalar field (and per message the generator cannot build field by field). */
function samples(upstream: number): Record<string, unknown> {
  return {
    "Listener.listen": "127.0.0.1:0",
    "Listener.upstream": `127.0.0.1:${upstream}`,
    "Listener.policy": "main",
    "Listener.handshake_timeout": "3s",
    "Listener.connect_timeout": "2s",
    "Listener.max_sessions": 50,
    "Listener.alpn": ["h2", "http/1.1"],
    "Outbound.listen": "127.0.0.1:0",
    "Outbound.remote": "127.0.0.1:9",
    "Outbound.expect_id": "spiffe://a.test/remote",
    "Outbound.server_name": "remote.a.test",
    "Outbound.connect_timeout": "2s",
    "Outbound.transport": "multiplexed",
    "Outbound.target": "remote.a.test:8080",
    "ProxyProtocol.version": "v2",
    "ProxyProtocol.tlvs": true,
    "ProxyProtocol.crc32c": true,
    "ProxyProtocol.peer_certificate": false,
    "Multiplex.max_streams": 7,
    "Multiplex.idle_timeout": "30s",
    "Policy.default": "deny",
    "Policy.mode": "enforce",
    "Rule.name": "attested",
    "Rule.action": "allow",
    "Rule.mode": "audit",
    "Rule.roles": ["readers"],
    "Limits.max_duration": "1h",
    "Limits.idle_timeout": "10m",
    "Limits.byte_budget": "1GiB",
    "Limits.bandwidth": "10MiB/s",
    "Limits.identity_bandwidth": "20MiB/s",
    "Limits.max_sessions": 10,
    "Limits.max_wait": "100ms",
    "Rate.per_second": 100,
    "Rate.burst": 200,
    "Limits.rate_scope": "shared",
    "Limits.max_sessions_scope": "shared",
    "PerTask.max_sessions": 4,
    "PerTask.per_minute": 30,
    "PerTask.burst": 10,
    "PerTask.scope": "shared",
    "SharedLimits.url": "redis://127.0.0.1:1",
    "SharedLimits.key_prefix": "mesh:",
    "SharedLimits.on_unavailable": "local",
    "SharedLimits.timeout": "20ms",
    "SharedLimits.lease_ttl": "5s",
    "SharedLimits.breaker_failures": 2,
    "SharedLimits.breaker_probe_interval": "500ms",
    "Matcher.id": "spiffe://a.test/alice",
    "Matcher.trust_domain": "a.test",
    "Matcher.path_prefix": "spiffe://a.test/team",
    "Matcher.glob": "spiffe://a.test/*/alice",
    "AttestationRequirement.attestor": "node",
    "AttestationRequirement.claims": { env: { values: [toValue("prod"), toValue("staging")] } },
    "AttestationRequirement.max_age": "1h",
    "EarRequirement.allow_warning": true,
    "EarRequirement.submods": ["cpu"],
    "EarRequirement.appraisal_policy_ids": ["policy:1"],
    "Rule.max_delegation_depth": 2,
    "Conditions.acting_for": ["user:alice"],
    "Conditions.tctx": { action: { values: [toValue("BUY")] } },
    "Conditions.rctx": { "req.ip": { values: [toValue("10.0.0.1"), toValue("10.0.0.2")] } },
    "StandardIssuer.description": "an issuer of standard tokens",
    "StandardIssuer.issuer": "https://a.test/issuer",
    "StandardIssuer.jwks_json": jwksJson("std-1"),
    "Conditions.source_cidrs": ["127.0.0.0/8"],
    "Conditions.sni": ["svc.a.test"],
    "Conditions.alpn": ["h2"],
    "Conditions.listeners": ["main"],
    "Conditions.max_cert_lifetime": "365d",
    "Conditions.max_cert_remaining": "1m",
    "TimeWindow.zone": "UTC",
    "TimeWindow.days": ["mon", "tue"],
    "TimeWindow.from": "00:00",
    "TimeWindow.to": "24:00",
    "TrustBundle.x509_authorities_pem": pki.a.certPem,
    "Attestor.description": "node attestor",
    "Attestor.jwks_json": jwksJson("node-1"),
    "Approver.description": "ticket approver",
    "Approver.jwks_json": jwksJson("approver-1"),
    "AttestationRecord.subject": "spiffe://a.test/alice",
    "AttestationRecord.attestor": "node",
    "AttestationRecord.claims": toStruct({ env: "prod", image: { signed: true, layers: [1, 2] }, none: null }),
    "AttestationRecord.issued_at": "2026-01-01T00:00:00Z",
    "AttestationRecord.expires_at": "2099-01-01T00:00:00Z",
    "AttestationRecord.cert_fingerprint": "ab".repeat(32),
    "Revocation.reason": "task over",
    "Revocation.until": "2099-01-01T00:00:00Z",
    "RevocationMatch.txn": "task-42",
    "RevocationMatch.jti": "approval-1",
    "RevocationMatch.grant": "0123456789abcdef01234567",
    "RevocationMatch.id": "spiffe://a.test/revoked",
    "RevocationMatch.path_prefix": "spiffe://a.test/retired",
    "RevocationMatch.cert_fingerprint": "cd".repeat(32),
    "RevocationMatch.attestor": "node",
    "Settings.drain_timeout": "5s",
    "Settings.revocation_grace": "1s",
    "Settings.max_chain_length": 6,
    "Settings.max_sessions": 1000,
    "Settings.max_handshakes": 100,
    "Settings.max_handshakes_per_source": 10,
    "Settings.max_held": 100,
  };
}

/** Messages whose fields are alternatives (exactly one set): a list of them gets one item per field. */
const ALTERNATIVES = new Set(["Matcher", "RevocationMatch"]);

/** Builds `type` with every field set, from the descriptors; a scalar without a sample is an error. */
function build(type: string, table: Record<string, unknown>, missing: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of message(type).field) {
    const key = `${type}.${f.name}`;
    if (key in table) out[f.name] = table[key];
    else if (f.type !== "TYPE_MESSAGE") missing.push(key);
    else if (ALTERNATIVES.has(f.typeName)) out[f.name] = message(f.typeName).field.map((g) => build1(f.typeName, g.name, table, missing));
    else out[f.name] = f.label === "LABEL_REPEATED" ? [build(f.typeName, table, missing)] : build(f.typeName, table, missing);
  }
  return out;
}

function build1(type: string, field: string, table: Record<string, unknown>, missing: string[]): Record<string, unknown> {
  const key = `${type}.${field}`;
  if (!(key in table)) missing.push(key);
  return { [field]: table[key] };
}

/** One resource per member of Resource's `kind` oneof. */
function everyKind(table: Record<string, unknown>, missing: string[]): WireResource[] {
  const r = message("Resource");
  const kindIndex = r.oneofDecl.findIndex((o) => o.name === "kind");
  const names: Record<string, string> = {
    listener: "main",
    policy: "main",
    trust_bundle: "a.test",
    role: "readers",
    attestor: "node",
    approver: "tickets",
    settings: "settings",
    revocation: "task-over",
    token_service: "tts",
    verifier: "vts",
    outbound: "to-remote",
  };
  return r.field
    .filter((f) => f.oneofIndex === kindIndex && !f.proto3Optional && f.type === "TYPE_MESSAGE")
    .map((f) => {
      const body = build(f.typeName, table, missing);
      const name = f.name === "attestation" ? `${String(body.subject)}#${String(body.attestor)}#0` : names[f.name];
      if (name === undefined) missing.push(`a resource name for kind ${f.name}`);
      return { name: name ?? f.name, type: f.name, [f.name]: body };
    });
}

/**
 * An `ear` requirement applies to a verifier's EAR results only (README, "Standard tokens"): the
 * generated rule keeps attestor `node` without it, and a copy names verifier `vts` with it.
 */
function withEarRule(resources: WireResource[]): WireResource[] {
  return resources.map((r) => {
    if (r.type !== "policy") return r;
    const policy = r.policy as { rules: Array<{ name: string; attestation: { attestor: string; ear?: unknown } }> };
    const [rule] = policy.rules;
    const { ear, ...plain } = rule!.attestation;
    const rules = [
      { ...rule!, attestation: plain },
      { ...rule!, name: "attested-ear", attestation: { ...plain, attestor: "vts", ear } },
    ];
    return { ...r, policy: { ...policy, rules } };
  });
}

const byKey = (a: WireResource, b: WireResource) => `${a.type}/${a.name}`.localeCompare(`${b.type}/${b.name}`);

describe("every field the proto declares", () => {
  it("round-trips through parley's control plane into parley's sidecar, which ACKs it", async () => {
    const echo = await startEcho("127.0.0.1", 0);
    const missing: string[] = [];
    const pushed = withEarRule(everyKind(samples((echo.server.address() as { port: number }).port), missing));
    expect(missing, "fields without a sample: add one to samples()").toEqual([]);
    // And the other way: a sample naming a field the proto lacks is a field that was never added.
    const declared = (key: string) => {
      const [type = "", field] = key.split(".");
      return message(type).field.some((f) => f.name === field);
    };
    expect(
      Object.keys(samples(0)).filter((k) => !declared(k)),
      "samples of fields the proto does not declare",
    ).toEqual([]);
    expect(pushed.map((r) => r.type).sort()).toEqual([
      "approver",
      "attestation",
      "attestor",
      "listener",
      "outbound",
      "policy",
      "revocation",
      "role",
      "settings",
      "token_service",
      "trust_bundle",
      "verifier",
    ]);

    // Into the control plane as a node file (JSON is YAML).
    const { raw, problems } = resourcesFromWire(pushed);
    expect(problems).toEqual([]);
    const dir = tempDir();
    mkdirSync(join(dir, "cp", "nodes"), { recursive: true });
    writeFileSync(join(dir, "cp", "nodes", "node-a.yaml"), JSON.stringify({ ...raw, trust_domains: { "a.test": { bundle_pem: pki.a.certPem } } }));
    const cp = await startControlPlane({ dir: join(dir, "cp"), listen: "127.0.0.1:0", log: pino({ level: "silent" }) });
    writeFileSync(join(dir, "cert.pem"), pki.server.chainPem);
    writeFileSync(join(dir, "key.pem"), pki.server.keyPem);
    writeFileSync(
      join(dir, "boot.yaml"),
      `identity: { cert: cert.pem, key: key.pem }\ncontrol_plane: { address: "127.0.0.1:${cp.port}", node_id: node-a, backoff: { initial: 20ms, max: 100ms } }\n`,
    );
    const logs = new MemoryLog();
    const agent = await startControlled(loadBootstrap(join(dir, "boot.yaml")), logs);
    try {
      // Out of it: exactly what was generated, every field intact.
      const snap = cp.store.forNode("node-a");
      if ("error" in snap) throw new Error(snap.error);
      expect([...snap.resources].sort(byKey)).toEqual([...pushed].sort(byKey));
      // Over real gRPC into the sidecar: applied and ACKed.
      await logs.next("config_applied");
      const node = await waitFor(() => cp.server.nodes.list().find((n) => n.acked_version === snap.version), 5000, "ACK");
      expect(node.last_nack).toBeNull();
      expect(logs.of("config_rejected")).toEqual([]);
      expect(agent.sidecar.config.listeners).toHaveLength(1);
      expect(agent.sidecar.config.listeners[0]!.multiplex).toEqual({ maxStreams: 7, idleTimeoutMs: 30_000 });
      expect(agent.sidecar.config.listeners[0]!.alpn).toEqual(["h2", "http/1.1"]);
      expect(agent.sidecar.config.outbound[0]!.multiplexed).toEqual({ maxStreams: 7, idleTimeoutMs: 30_000, target: "remote.a.test:8080" });
      expect(Object.keys(agent.sidecar.outboundAddresses())).toEqual(["to-remote"]);
    } finally {
      await agent.stop(50);
      await cp.close();
      await echo.close();
    }
  });
});
