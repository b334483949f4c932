// `GET /config` in the configuration file's own terms: a configuration using every section renders with
// snake_case keys only, durations in ms under `_ms`, shorthands expanded, and no secret anywhere.
import { join } from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import { exportJWK, generateKeyPair } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config/load.js";
import { resourcesShape } from "../src/config/schema.js";
import { configView } from "../src/config/view.js";
import { writeFiles } from "../testkit/harness.js";
import { negotiationKeys } from "../testkit/negotiation.js";
import { makePki, type TestPki } from "../testkit/pki.js";

const SECRETS = { redis: "hunter2-redis", attestation: "attestation-token-secret-1", approval: "approval-token-secret-2" };

let pki: TestPki;
let view: Record<string, unknown>;
let text: string;
let grantPem: string;

async function jwks(kid: string): Promise<string> {
  return JSON.stringify({ keys: [{ ...(await exportJWK((await generateKeyPair("ES256")).publicKey)), kid }] });
}

/** A configuration with every section of the schema and most keys of each. */
async function everything(): Promise<string> {
  const keys = await negotiationKeys();
  const f = writeFiles({
    "cert.pem": pki.server.chainPem,
    "key.pem": pki.server.keyPem,
    "a.pem": pki.a.certPem,
    "att.jwt": SECRETS.attestation,
    "appr.jwt": SECRETS.approval,
  });
  grantPem = readFileSync(keys.grantKeyFile, "utf8");
  const limits = `{ max_duration: 1h, idle_timeout: 30s, byte_budget: 1MiB, bandwidth: 64KiB/s, identity_bandwidth: 128KiB/s,
      rate: { per_second: 2, scope: shared }, max_sessions: 4, max_wait: 250ms, per_task: { max_sessions: 2, per_minute: 7 } }`;
  return `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains:
  a.test: { bundle: ${f["a.pem"]} }
  b.test: { bundle_pem: ${JSON.stringify(pki.b.certPem)} }
listeners:
  - { name: main, listen: "[::1]:0", upstream: 127.0.0.1:9, policy: main, handshake_timeout: 2s, max_sessions: 9, proxy_protocol: v2, multiplex: true }
outbound:
  - name: out
    listen: 127.0.0.1:0
    remote: 127.0.0.1:8443
    expect_id: spiffe://a.test/orders
    server_name: orders.local
    transport: multiplexed
    multiplex: { max_streams: 5, idle_timeout: 2m }
    negotiate: { roles: [reader], purpose: nightly, attestation_token: ${f["att.jwt"]}, approval_token: ${f["appr.jwt"]} }
roles:
  reader: [{ trust_domain: a.test }]
attestors:
  node: { jwks: ${await jwks("node-1")} }
approvers:
  tickets: { jwks: ${await jwks("tickets-1")} }
token_services:
  tts: { issuer: https://tts.a.test, jwks: ${await jwks("tts-1")} }
verifiers:
  rats: { jwks: ${await jwks("rats-1")} }
negotiation: { grant_key: ${keys.grantKeyFile}, grant_ttl: 5m, frame_timeout: 3s }
attestations:
  - { subject: spiffe://a.test/agent, attestor: node, issued_at: 2026-01-01T00:00:00Z, expires_at: 2099-01-01T00:00:00Z }
shared_limits: { url: "rediss://parley:${SECRETS.redis}@redis.internal:6380/0", timeout: 1s }
revocations:
  incident-7: { reason: leaked, until: 2099-01-01T00:00:00Z, match: [{ txn: task-42 }] }
policies:
  main:
    default: deny
    limits: ${limits}
    rules:
      - name: writers
        action: allow
        mode: audit
        match: [{ path_prefix: spiffe://a.test/agents }]
        roles: [reader]
        attestation: { attestor: rats, claims: { env: prod }, max_age: 5m, ear: { allow_warning: true, submods: [cpu] } }
        conditions:
          source_cidrs: [10.0.0.0/8]
          sni: [orders.local]
          alpn: [h2]
          listeners: [main]
          time: [{ zone: UTC, days: [fri, mon], from: "08:30", to: "17:00" }]
          max_cert_lifetime: 1d
          max_cert_remaining: 12h
          acting_for: [user-1]
          actors: [{ glob: "spiffe://a.test/agents/*" }]
          tctx: { region: [eu, us] }
          rctx: { channel: web }
        limits: { max_sessions: { max: 3, scope: shared }, rate: { per_second: 1, burst: 5 } }
        max_delegation_depth: 2
drain_timeout: 20s
revocation_grace: 1s
limits: { max_chain_length: 5, source_rate: { per_second: 50 } }
svid_verification: { min_rsa_bits: 3072, allow_sha1: true }
log: { level: warn, deny_cap: { burst: 3, window: 1m }, buffer: 128KiB }
admin: { listen: "127.0.0.1:0", write: true }
`;
}

/** Every object key in `v`, with its path. */
function keysOf(v: unknown, at = "$"): string[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => keysOf(x, `${at}[${i}]`));
  if (v === null || typeof v !== "object") return [];
  return Object.entries(v).flatMap(([k, x]) => [`${at}.${k}`, ...keysOf(x, `${at}.${k}`)]);
}

beforeAll(async () => {
  pki = await makePki();
  const file = join(writeFiles({}).dir, "parley.yaml");
  writeFileSync(file, await everything());
  const c = loadConfig(file);
  view = configView({ ...c, identity: c.identity! }, { source: "files", connected: true, lastUpdate: undefined, svid: c.identity, usable: true });
  text = JSON.stringify(view);
});

describe("GET /config in the file's terms", () => {
  it("has no camelCase key anywhere", () => {
    expect(keysOf(view).filter((k) => /[A-Z]/.test(k.slice(k.lastIndexOf(".") + 1)))).toEqual([]);
  });

  it("shows each section of the file that decides (the token issuers under negotiation, records as a count)", () => {
    const shown = new Set(Object.keys(view));
    const elsewhere = ["roles", "attestors", "approvers", "token_services", "verifiers", "attestations"];
    const missing = Object.keys(resourcesShape).filter((k) => !shown.has(k) && !shown.has(`${k}_ms`) && !elsewhere.includes(k));
    expect(missing).toEqual([]);
    expect(view.attestation_records).toBe(1);
  });

  it("never shows a secret: private keys, grant key, negotiation tokens, the Redis password", () => {
    for (const secret of [...Object.values(SECRETS), pki.server.keyPem.split("\n")[1]!, grantPem.split("\n")[1]!]) expect(text).not.toContain(secret);
    expect(text).not.toContain("PRIVATE KEY");
    expect(view.identity).toMatchObject({ private_key: "redacted" });
    expect((view.shared_limits as { url: string }).url).toBe("rediss://parley:redacted@redis.internal:6380/0");
  });

  it("renders listeners and outbound with the file's keys, shorthands expanded, durations in ms", () => {
    expect(view.listeners).toEqual([
      {
        name: "main",
        listen: "[::1]:0",
        upstream: "127.0.0.1:9",
        policy: "main",
        handshake_timeout_ms: 2000,
        connect_timeout_ms: 5000,
        max_sessions: 9,
        alpn: ["http/1.1"],
        proxy_protocol: { version: "v2", tlvs: true, crc32c: false, peer_certificate: false },
        multiplex: { max_streams: 100, idle_timeout_ms: 60_000 },
      },
    ]);
    expect(view.outbound).toEqual([
      {
        name: "out",
        listen: "127.0.0.1:0",
        remote: "127.0.0.1:8443",
        expect_id: "spiffe://a.test/orders",
        server_name: "orders.local",
        connect_timeout_ms: 5000,
        transport: "multiplexed",
        target: "127.0.0.1:8443",
        multiplex: { max_streams: 5, idle_timeout_ms: 120_000 },
        negotiate: { roles: ["reader"], purpose: "nightly", attestation_token: "redacted", approval_token: "redacted" },
      },
    ]);
  });

  it("renders negotiation, sidecar limits, svid_verification and log in the file's units", () => {
    expect(view.negotiation).toEqual({
      grant_key: "redacted",
      grant_ttl_ms: 300_000,
      frame_timeout_ms: 3000,
      attestors: ["node"],
      approvers: ["tickets"],
      token_services: { tts: { issuer: "https://tts.a.test" } },
      verifiers: { rats: { issuer: "rats" } },
    });
    expect(view.limits).toEqual({
      max_chain_length: 5,
      max_sessions: 10_000,
      max_handshakes: 256,
      max_handshakes_per_source: 64,
      source_rate: { per_second: 50, burst: 50 },
      max_held: 1024,
    });
    expect(view.svid_verification).toEqual({ min_rsa_bits: 3072, allow_sha1: true, max_signature_checks: 12, max_path_candidates: 64 });
    expect(view.log).toEqual({
      level: "warn",
      categories: { decisions: true, sessions: true, handshakes: true, control: true },
      deny_cap: { burst: 3, window_ms: 60_000 },
      buffer: 131_072,
    });
    expect([view.drain_timeout_ms, view.revocation_grace_ms, view.admin]).toEqual([20_000, 1000, { listen: "127.0.0.1:0", write: true }]);
  });

  it("renders a policy's and a rule's limits and conditions as the file writes them", () => {
    const main = (view.policies as Record<string, { limits: unknown; rules: Record<string, unknown>[] }>).main!;
    expect(main.limits).toEqual({
      max_duration_ms: 3_600_000,
      idle_timeout_ms: 30_000,
      byte_budget: 1_048_576,
      bandwidth: 65_536,
      identity_bandwidth: 131_072,
      rate: { per_second: 2, burst: 2, scope: "shared" },
      max_sessions: { max: 4, scope: "local" },
      max_wait_ms: 250,
      per_task: { max_sessions: 2, per_minute: 7, burst: 7, scope: "local" },
    });
    expect(main.rules[0]).toEqual({
      name: "writers",
      action: "allow",
      mode: "audit",
      match: ["path_prefix spiffe://a.test/agents"],
      roles: ["reader"],
      attestation: { attestor: "rats", claims: { env: ["prod"] }, max_age_ms: 300_000, ear: { allow_warning: true, submods: ["cpu"] } },
      conditions: {
        source_cidrs: ["10.0.0.0/8"],
        sni: ["orders.local"],
        alpn: ["h2"],
        listeners: ["main"],
        time: [{ zone: "UTC", days: ["mon", "fri"], from: "08:30", to: "17:00" }],
        max_cert_lifetime_ms: 86_400_000,
        max_cert_remaining_ms: 43_200_000,
        acting_for: ["user-1"],
        actors: ["glob spiffe://a.test/agents/*"],
        tctx: { region: ["eu", "us"] },
        rctx: { channel: ["web"] },
      },
      limits: { max_sessions: { max: 3, scope: "shared" }, rate: { per_second: 1, burst: 5, scope: "local" } },
      max_delegation_depth: 2,
    });
  });
});
