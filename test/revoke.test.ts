// Writing revocations: `parley revoke` into a sidecar's file (validated, atomic, comments kept), the
// admin server's `POST /revocations` (validated by the same rules, in force at once, kept across
// reloads), outbound routes refusing and ending sessions to a revoked remote, and `parley check`
// deciding with the revocations. Real TLS sessions through real sidecars; the CLI is dist/cli.js.
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, watch, writeFileSync } from "node:fs";
import { connect as tcp, type Socket } from "node:net";
import { dirname, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { operations, type Operations } from "../src/app/operations.js";
import type { Issued } from "../src/certs/issue.js";
import { loadConfig } from "../src/config/load.js";
import { MAX_MATCHERS } from "../src/policy/revocation.js";
import { Sidecar } from "../src/sidecar/sidecar.js";
import { AdminRevocations } from "../src/sidecar/revocations.js";
import { SpiffeId } from "../src/spiffe/spiffeid.js";
import { dialTls, MemoryLog, openSession, readAll, startHarness, waitFor, writeFiles, type Harness } from "../testkit/harness.js";
import { ALLOW_A_TEST as POLICIES, cli, fingerprint, revocationFixtures } from "../testkit/revocations.js";

const fx = revocationFixtures();
let h: Harness | undefined;
const cleanup: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
  await h?.close();
  h = undefined;
});

const parley = (...args: string[]) => spawnSync(process.execPath, ["dist/cli.js", ...args], { encoding: "utf8", timeout: 15_000 });

/** Expects a new session of `creds` on `h` to be refused with `reason`, the workload seeing no connection. */
const expectRefused = (creds: Issued, reason: string) => fx.expectRefused(h!, creds, reason);

describe("parley revoke --config", () => {
  it("adds the entry to a sidecar's file, comments kept and expired entries dropped; the reload ends the session", async () => {
    h = await startHarness(fx.pki, {
      policies: POLICIES,
      extra: `# on-call: revocations below
revocation_grace: 1h
revocations:
  # an old incident
  stale:
    reason: long over
    until: 2020-01-01T00:00:00Z
    match: [{ txn: t-0 }]
`,
    });
    const a = await openSession(h.port, fx.pki, fx.alice);
    const b = await openSession(h.port, fx.pki, fx.bob);
    const r = parley(
      "revoke",
      "--config",
      h.configFile,
      "--name",
      "incident-7",
      "--reason",
      "agent compromised",
      "--until",
      "2h",
      "--spiffe-id",
      "spiffe://a.test/alice",
    );
    expect([r.status, r.stderr]).toEqual([0, ""]);
    expect(r.stdout).toMatch(
      /^revocation incident-7 written to .*parley\.yaml \(until 20\d\d-.*Z, 1 matcher\(s\)\)\ndropped entries past their until: stale\n$/,
    );
    const text = readFileSync(h.configFile, "utf8");
    expect(text).toContain("# on-call: revocations below");
    expect(text).not.toContain("stale:");
    expect(text).toMatch(
      / {2}incident-7:\n {4}reason: agent compromised\n {4}until: 20\d\d-[\d-]+T[\d:.]+Z\n {4}match:\n {6}- \{ id: spiffe:\/\/a\.test\/alice \}\n/,
    );
    const until = Date.parse(/until: (\S+)/.exec(text.slice(text.indexOf("incident-7")))![1]!);
    expect(until - Date.now()).toBeGreaterThan(7_000_000);
    expect(until - Date.now()).toBeLessThanOrEqual(7_200_000);
    expect(readdirSync(dirname(h.configFile)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(await h.sidecar.reload()).toBe("applied");
    expect(await h.logs.next("revoked")).toMatchObject({ peer_id: "spiffe://a.test/alice", reasons: ["identity_revoked"], grace_ms: 0 });
    await a.closed;
    b.s.write("-on");
    await waitFor(() => b.got() === "ping-on", 3000, "bob still served");
    await expectRefused(fx.alice, "identity_revoked");
    b.s.end();
    await b.closed;
  });

  it("refuses bad input with exit 2, naming the flag, and leaves the file as it was", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES });
    const before = readFileSync(h.configFile, "utf8");
    const base = ["revoke", "--config", h.configFile, "--name", "n1", "--reason", "r"];
    const cases: Array<[string[], RegExp]> = [
      [[...base, "--until", "1h"], /at least one matcher is required/],
      [[...base, "--until", "soon", "--txn", "t"], /--until soon: expected a duration .* or an RFC 3339 time/],
      [[...base, "--until", "2026-13-01", "--txn", "t"], /--until 2026-13-01: expected/],
      [[...base, "--until", "2020-01-01T00:00:00Z", "--txn", "t"], /--until 2020-01-01T00:00:00Z: that time has passed/],
      [[...base, "--until", "1h", "--cert-fingerprint", "abc"], /--cert-fingerprint abc: expected the SHA-256 .* 64 hex digits/],
      [[...base, "--until", "1h", "--txn", "t", "--spiffe-id", "spiffe://A.test/x"], /--spiffe-id spiffe:\/\/A\.test\/x: .*trust domain/],
      [[...base, "--until", "1h", "--spiffe-id-prefix", "https://a.test/x"], /--spiffe-id-prefix https:\/\/a\.test\/x: .*scheme/],
      [[...base, "--until", "1h", "--txn", "x".repeat(257)], /--txn x+: .*256/],
      [["revoke", "--config", h.configFile, "--name", "bad name", "--reason", "r", "--until", "1h", "--txn", "t"], /--name: expected a name/],
      [["revoke", "--config", h.configFile, "--dir", "/tmp", "--name", "n", "--reason", "r", "--until", "1h", "--txn", "t"], /exactly one of --dir/],
      [
        ["revoke", "--config", "/nonexistent.yaml", "--name", "n", "--reason", "r", "--until", "1h", "--txn", "t"],
        /--config \/nonexistent\.yaml: no such file/,
      ],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(...args)));
    cases.forEach(([args, message], i) => expect([results[i]!.status, results[i]!.stderr], args.join(" ")).toEqual([2, expect.stringMatching(message)]));
    expect(readFileSync(h.configFile, "utf8")).toBe(before);
    // A name already in force is refused too.
    expect(parley(...base, "--until", "1h", "--txn", "t").status).toBe(0);
    const again = parley(...base, "--until", "1h", "--jti", "j");
    expect([again.status, again.stderr]).toEqual([2, expect.stringMatching(/--name n1: .* already has a revocation of that name/)]);
  }, 60_000);

  it("refuses to write what the sidecar would reject, and a bootstrap file", () => {
    const f = writeFiles({
      "broken.yaml": "identity: { cert: /nonexistent.pem, key: /nonexistent.key }\npolicies: {}\n",
      "boot.yaml": "control_plane: { address: 127.0.0.1:1 }\n",
    });
    const args = ["--name", "n", "--reason", "r", "--until", "1h", "--txn", "t"];
    const broken = parley("revoke", "--config", f["broken.yaml"]!, ...args);
    expect([broken.status, broken.stderr]).toEqual([
      2,
      expect.stringMatching(/broken\.yaml would not load with the entry: .*broken\.yaml:1:1: trust_domains: /),
    ]);
    expect(readFileSync(f["broken.yaml"]!, "utf8")).not.toContain("revocations");
    const boot = parley("revoke", "--config", f["boot.yaml"]!, ...args);
    expect([boot.status, boot.stderr]).toEqual([2, expect.stringMatching(/is a bootstrap file/)]);
  });

  it("checks the edited file without writing anything: a refused entry leaves its directory untouched", async () => {
    const f = writeFiles({ "broken.yaml": "identity: { cert: /nonexistent.pem, key: /nonexistent.key }\npolicies: {}\n" });
    const seen: string[] = [];
    const watcher = watch(f.dir, (_event, name) => seen.push(String(name)));
    try {
      const broken = parley("revoke", "--config", f["broken.yaml"]!, "--name", "n", "--reason", "r", "--until", "1h", "--txn", "t");
      expect([broken.status, broken.stderr]).toEqual([2, expect.stringMatching(/broken\.yaml would not load with the entry: /)]);
      // Events come in order: once this one is seen, any the command caused have been seen too.
      writeFileSync(join(f.dir, "sentinel"), "");
      await waitFor(() => seen.includes("sentinel"));
      expect(seen.filter((n) => n !== "sentinel")).toEqual([]);
    } finally {
      watcher.close();
    }
    expect(readdirSync(f.dir).sort()).toEqual(["broken.yaml", "sentinel"]);
  });
});

interface Rig {
  sidecar: Sidecar;
  ops: Operations;
  records: MemoryLog;
  admin: number;
  close(): Promise<void>;
}

/** A sidecar on `h`'s configuration file with an admin server (write on or off). */
async function adminRig(write: boolean): Promise<Rig> {
  const config = loadConfig(h!.configFile);
  const records = new MemoryLog();
  const ops = operations(config.log, { listen: "127.0.0.1:0", write }, records.destination);
  const sidecar = new Sidecar(config, { log: ops.log });
  await sidecar.start();
  const admin = (await ops.serveAdmin(sidecar))!.port;
  return {
    sidecar,
    ops,
    records,
    admin,
    async close() {
      await sidecar.stop(100);
      await ops.close();
    },
  };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the assertions read admin JSON bodies ad hoc
async function post(port: number, body: string, path = "/revocations"): Promise<{ status: number; json: any }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: "POST", body, headers: { "content-type": "application/json" } });
  return { status: res.status, json: await res.json() };
}

describe("POST /revocations", () => {
  const entry = (match: unknown[], extra: Record<string, unknown> = {}) =>
    JSON.stringify({ name: "incident-9", reason: "agent compromised", until: "2099-01-01T00:00:00Z", match, ...extra });

  it("is refused (403) while admin.write is off, and changes nothing", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES });
    const rig = await adminRig(false);
    cleanup.push(() => rig.close());
    expect(await post(rig.admin, entry([{ id: "spiffe://a.test/alice" }]))).toMatchObject({ status: 403 });
    expect((await fetch(`http://127.0.0.1:${rig.admin}/revocations`)).status).toBe(405);
    expect(rig.sidecar.adminRevocations.live(Date.now())).toEqual([]);
  });

  it("ends the matching live session at once, denies new ones, survives a reload and shows in /config", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES, extra: "revocation_grace: 1h\n" });
    const rig = await adminRig(true);
    cleanup.push(() => rig.close());
    const port = rig.sidecar.addresses()["main"]!.port;
    const a = await openSession(port, fx.pki, fx.alice);
    const b = await openSession(port, fx.pki, fx.bob);
    const r = await post(rig.admin, entry([{ cert_fingerprint: fingerprint(fx.alice).toUpperCase() }]));
    expect(r).toEqual({
      status: 200,
      json: {
        revocation: "incident-9",
        reason: "agent compromised",
        until: "2099-01-01T00:00:00.000Z",
        match: [`cert_fingerprint ${fingerprint(fx.alice)}`],
        sessions_ended: 1,
      },
    });
    await a.closed;
    expect(await rig.records.next("revoked")).toMatchObject({
      peer_id: "spiffe://a.test/alice",
      reasons: ["certificate_revoked"],
      grace_ms: 0,
      cause: "revoked",
      revocation: { entry: "incident-9" },
    });
    expect((await rig.records.next("session_end", (x) => x.peer_id === "spiffe://a.test/alice")).end_reason).toBe("revoked");
    b.s.write("-on");
    await waitFor(() => b.got() === "ping-on", 3000, "bob still served");
    const config = (await (await fetch(`http://127.0.0.1:${rig.admin}/config`)).json()) as Record<string, unknown>;
    expect(config.admin_revocations).toEqual({
      "incident-9": { reason: "agent compromised", until: "2099-01-01T00:00:00.000Z", match: [`cert_fingerprint ${fingerprint(fx.alice)}`] },
    });
    expect(config.revocations).toEqual({});
    // A new version of the file does not drop it.
    writeFileSync(h.configFile, readFileSync(h.configFile, "utf8") + "drain_timeout: 5s\n");
    expect(await rig.sidecar.reload()).toBe("applied");
    const s = await dialTls(port, fx.pki, fx.alice);
    s.write("must not arrive");
    expect((await readAll(s)).length).toBe(0);
    expect((await rig.records.next("decision", (x) => x.decision === "deny")).reasons).toEqual(["certificate_revoked"]);
    const metrics = await (await fetch(`http://127.0.0.1:${rig.admin}/metrics`)).text();
    expect(metrics).toMatch(/parley_revocations_total\{reason="certificate_revoked"\} 1/);
    expect(rig.records.of("lifecycle").some((x) => x.msg === "admin added a revocation" && x.sessions_ended === 1)).toBe(true);
    b.s.end();
    await b.closed;
  });

  it("answers bad bodies 400 naming the field, an oversized one 413, and puts nothing in force", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES });
    const rig = await adminRig(true);
    cleanup.push(() => rig.close());
    const bad = async (body: string, message: RegExp) => {
      const r = await post(rig.admin, body);
      expect([r.status, r.json.error], body.slice(0, 80)).toEqual([400, expect.stringMatching(message)]);
    };
    await bad("{ not json", /^body: not JSON/);
    await bad(entry([{ id: "spiffe://a.test/x" }, { id: "not-an-id" }]), /^body: match\[1\]\.id: .*scheme/);
    await bad(entry([{ txn: "t", jti: "j" }]), /^body: match\[0\]: .*exactly one of txn, jti/);
    await bad(entry([]), /^body: match: /);
    await bad(entry([{ txn: "t" }], { until: "tomorrow" }), /^body: until: expected an ISO 8601 timestamp/);
    await bad(entry([{ txn: "t" }], { extra: 1 }), /^body: extra: unknown key/);
    await bad(entry([{ txn: "t" }], { name: "../x" }), /^body: name: expected a name/);
    await bad("[]", /^body: /);
    const big = await post(rig.admin, entry([{ txn: "t" }], { reason: "x".repeat(70 * 1024) }));
    expect([big.status, big.json.error]).toEqual([413, "body over 65536 bytes"]);
    expect(rig.sidecar.adminRevocations.live(Date.now())).toEqual([]);
    const port = rig.sidecar.addresses()["main"]!.port;
    expect((await openSession(port, fx.pki, fx.alice)).got()).toBe("ping");
  });
});

describe("the admin revocation set", () => {
  const T = Date.parse("2026-06-01T00:00:00Z");
  const e = (name: string, until: number, n = 1) => ({
    name,
    reason: "r",
    until,
    match: Array.from({ length: n }, (_, i) => ({
      kind: "identity" as const,
      matcher: { kind: "id" as const, id: SpiffeId.parse(`spiffe://a.test/${name}/${i}`) },
    })),
  });

  it("replaces a name posted again, drops an entry at its until, and refuses past MAX_MATCHERS", () => {
    const set = new AdminRevocations();
    expect(set.add(e("a", T + 1000), T)).toBe(true);
    expect(set.add(e("a", T + 5000, 2), T)).toBe(true);
    expect(set.live(T).map((x) => [x.name, x.match.length])).toEqual([["a", 2]]);
    expect(set.add(e("b", T + 2000), T)).toBe(true);
    expect(set.live(T + 2000).map((x) => x.name)).toEqual(["a"]);
    expect(set.add(e("big", T + 9000, MAX_MATCHERS - 1), T)).toBe(false);
    expect(set.add(e("big", T + 9000, MAX_MATCHERS - 2), T + 2000)).toBe(true);
    expect(set.view(T + 5000)).toEqual({ big: expect.objectContaining({ until: new Date(T + 9000).toISOString() }) as unknown });
  });
});

describe("outbound routes and revocations", () => {
  /** An outbound sidecar with a route to `h` (the remote spiffe://a.test/sidecar), admin writes on. */
  async function outbound(revocations = "", route = "") {
    const f = writeFiles({ "cert.pem": fx.alice.chainPem, "key.pem": fx.alice.keyPem, "a.pem": fx.pki.a.certPem });
    const file = writeFiles({
      "out.yaml": `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
outbound:
  - { name: to-main, listen: "127.0.0.1:0", remote: "127.0.0.1:${h!.port}", expect_id: spiffe://a.test/sidecar${route} }
policies: {}
${revocations}`,
    })["out.yaml"]!;
    const logs = new MemoryLog();
    const sidecar = new Sidecar(loadConfig(file), { log: logs.log });
    await sidecar.start();
    cleanup.push(() => sidecar.stop(100));
    return { sidecar, logs, file, port: sidecar.outboundAddresses()["to-main"]!.port };
  }
  /** A plaintext client of the outbound route, echoed once. */
  async function held(port: number): Promise<{ s: Socket; got: () => string; closed: Promise<void> }> {
    const s = tcp({ host: "127.0.0.1", port });
    let got = "";
    s.on("data", (c: Buffer) => (got += c.toString()));
    s.on("error", () => {});
    const closed = new Promise<void>((r) => s.on("close", () => r()));
    s.write("ping");
    await waitFor(() => got === "ping", 3000, "echo through the outbound route");
    return { s, got: () => got, closed };
  }
  const REVOKE_REMOTE = `revocations:
  remote-out:
    reason: remote compromised
    until: 2099-01-01T00:00:00Z
    match: [{ id: spiffe://a.test/sidecar }]
`;

  it("a revoked remote: the live outbound session ends on reload, a new one is refused before a byte crosses", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES });
    const out = await outbound();
    const live = await held(out.port);
    writeFileSync(out.file, readFileSync(out.file, "utf8") + REVOKE_REMOTE);
    expect(await out.sidecar.reload()).toBe("applied");
    await live.closed;
    expect(await out.logs.next("revoked")).toMatchObject({
      listener: "to-main",
      peer_id: "spiffe://a.test/sidecar",
      reasons: ["identity_revoked"],
      cause: "revoked",
      revocation: { entry: "remote-out", match: "id spiffe://a.test/sidecar" },
    });
    expect((await out.logs.next("session_end")).end_reason).toBe("revoked");
    // A new session: the application's bytes never cross (nothing echoed), the refusal names the code.
    const s = tcp({ host: "127.0.0.1", port: out.port }, () => s.write("must not cross"));
    let got = "";
    s.on("data", (c: Buffer) => (got += c.toString()));
    s.on("error", () => {});
    await new Promise((r) => s.on("close", r));
    expect(got).toBe("");
    expect(await out.logs.next("outbound", (r) => r.decision === "deny")).toMatchObject({
      reason: "identity_revoked",
      detail: expect.stringContaining("remote-out") as unknown,
    });
    expect(h.logs.of("session_end").map((r) => r.bytes_to_upstream)).toEqual([4]);
  });

  it("over a multiplexed route too: the live stream ends on reload, and a new client gets no stream", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES, listenerExtra: "multiplex: true" });
    const out = await outbound("", ", transport: multiplexed");
    const live = await held(out.port);
    writeFileSync(out.file, readFileSync(out.file, "utf8") + REVOKE_REMOTE);
    expect(await out.sidecar.reload()).toBe("applied");
    await live.closed;
    expect(await out.logs.next("revoked")).toMatchObject({ listener: "to-main", reasons: ["identity_revoked"] });
    const s = tcp({ host: "127.0.0.1", port: out.port }, () => s.write("must not cross"));
    s.on("error", () => {});
    await new Promise((r) => s.on("close", r));
    expect(await out.logs.next("outbound", (r) => r.decision === "deny")).toMatchObject({ reason: "identity_revoked", transport: "multiplexed" });
    // One stream was decided by the remote: the revoked one; the refused client never got a stream.
    expect(h.logs.of("decision")).toHaveLength(1);
  });

  it("a revocation posted to the admin server ends the live outbound session at once", async () => {
    h = await startHarness(fx.pki, { policies: POLICIES });
    const out = await outbound();
    const live = await held(out.port);
    const { parseRevocationEntry } = await import("../src/config/revocation.js");
    const ended = await out.sidecar.addRevocation(
      parseRevocationEntry(
        { name: "by-cert", reason: "leaked key", until: "2099-01-01T00:00:00Z", match: [{ cert_fingerprint: fingerprint(fx.pki.server) }] },
        "test",
      ),
    );
    expect(ended).toBe(1);
    await live.closed;
    expect(await out.logs.next("revoked")).toMatchObject({ reasons: ["certificate_revoked"], revocation: { entry: "by-cert" } });
  });
});

describe("parley check and revocations", () => {
  it("a revoked caller is denied with the matcher's code; the entry's until and --txn are honoured", async () => {
    const f = writeFiles({
      "cert.pem": fx.pki.server.chainPem,
      "key.pem": fx.pki.server.keyPem,
      "a.pem": fx.pki.a.certPem,
      "alice.pem": fx.alice.chainPem,
      "bob.pem": fx.bob.chainPem,
    });
    const file = join(dirname(f["cert.pem"]!), "c.yaml");
    writeFileSync(
      file,
      `identity: { cert: ${f["cert.pem"]}, key: ${f["key.pem"]} }
trust_domains: { a.test: { bundle: ${f["a.pem"]} } }
listeners: [{ name: main, listen: "127.0.0.1:0", upstream: "127.0.0.1:9", policy: main }]
policies:${POLICIES}
revocations:
  agent-out: { reason: compromised, until: 2099-01-01T00:00:00Z, match: [{ path_prefix: spiffe://a.test/alice }] }
  task-over: { reason: task done, until: 2099-01-01T00:00:00Z, match: [{ txn: task-42 }] }
  cert-out: { reason: leaked, until: 2099-01-01T00:00:00Z, match: [{ cert_fingerprint: ${fingerprint(fx.bob)} }] }
`,
    );
    const run = (...args: string[]) => cli("check", "--config", file, ...args);
    const [r, byAliceCert, later, task, otherTask, bobById, byCert] = await Promise.all([
      run("--id", "spiffe://a.test/alice"),
      run("--cert", f["alice.pem"]!, "--json"),
      run("--id", "spiffe://a.test/alice", "--at", "2099-01-01T00:00:00Z"),
      run("--id", "spiffe://a.test/carol", "--txn", "task-42", "--json"),
      run("--id", "spiffe://a.test/carol", "--txn", "task-43"),
      // By --id alone the certificate is unknown: only --cert can match a fingerprint.
      run("--id", "spiffe://a.test/bob"),
      run("--cert", f["bob.pem"]!, "--json"),
    ]);
    expect([r.status, r.stdout]).toEqual([
      1,
      expect.stringMatching(
        /^DENY {2}spiffe:\/\/a\.test\/alice\n.*\n {2}rule {5}\(none: revoked, before any rule\)\n {2}reasons {2}identity_revoked\n {2}revoked {2}revoked by agent-out \(path_prefix spiffe:\/\/a\.test\/alice\): compromised\n/,
      ),
    ]);
    expect(JSON.parse(byAliceCert.stdout)).toMatchObject({
      decision: "deny",
      cause: "revoked",
      reasons: ["identity_revoked"],
      revocation: { entry: "agent-out" },
    });
    expect(later.status).toBe(0);
    expect([task.status, (JSON.parse(task.stdout) as { reasons: string[] }).reasons]).toEqual([1, ["task_revoked"]]);
    expect(otherTask.status).toBe(0);
    expect(bobById.status).toBe(0);
    expect([byCert.status, (JSON.parse(byCert.stdout) as { reasons: string[] }).reasons]).toEqual([1, ["certificate_revoked"]]);
  }, 60_000);
});
