// The fixtures of the revocation suites: the PKI with alice and bob, a policy that admits all of
// a.test (so only a revocation refuses), a certificate's fingerprint as revocations name it, the
// CLI run without blocking, and the check that a refused session reached nobody. Calling
// revocationFixtures() at a suite's top level makes the PKI once for the file.
import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { beforeAll, expect } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import type { EchoServer } from "../src/demo/echo.js";
import { dialTls, readAll, type LogRecord, type MemoryLog } from "./harness.js";
import { makePki, type TestPki } from "./pki.js";

/** The `policies:` block (indented under `policies:`): default deny, one rule allowing trust domain a.test. */
export const ALLOW_A_TEST = `
  main:
    default: deny
    rules:
      - name: everyone
        action: allow
        match: [{ trust_domain: a.test }]
`;

/** The SHA-256 fingerprint of a certificate's DER, lowercase hex, as a `cert_fingerprint` matcher names it. */
export const fingerprint = (i: Issued) => createHash("sha256").update(new X509Certificate(i.certPem).raw).digest("hex");

/** Runs dist/cli.js without blocking this process (the sidecars under test live in it; many run at once). */
export function cli(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ["dist/cli.js", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    c.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

/** Where a refused session is tried: a listener's port, the log its decisions go to, the workload behind it. */
export interface Gate {
  readonly port: number;
  readonly logs: MemoryLog;
  readonly echo: EchoServer;
}

export class RevocationFixtures {
  pki!: TestPki;
  alice!: Issued;
  bob!: Issued;

  async setUp(): Promise<void> {
    this.pki = await makePki();
    this.alice = await this.pki.leaf(this.pki.a, "spiffe://a.test/alice");
    this.bob = await this.pki.leaf(this.pki.a, "spiffe://a.test/bob");
  }

  /**
   * Expects a new session of `creds` at `gate` to be refused: it reads nothing, the workload sees no
   * connection, and a deny decision names `reason` (returned for the caller's further checks).
   */
  async expectRefused(gate: Gate, creds: Issued, reason: string): Promise<LogRecord> {
    const before = gate.echo.accepted();
    const s = await dialTls(gate.port, this.pki, creds);
    s.write("must not arrive");
    expect((await readAll(s)).length).toBe(0);
    // The next denial is this connection's: it must name the reason (a denial for another reason fails).
    const d = await gate.logs.next("decision", (r) => r.decision === "deny");
    expect(d.reasons).toContain(reason);
    expect(gate.echo.accepted()).toBe(before);
    return d;
  }
}

export function revocationFixtures(): RevocationFixtures {
  const fx = new RevocationFixtures();
  beforeAll(() => fx.setUp());
  return fx;
}
