// Configuration changes while traffic flows: atomic swap, refusal of broken files, live re-checks.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { dialTls, openSession, readAll, startHarness, waitFor, type Harness } from "../testkit/harness.js";
import { ManualClock } from "../testkit/clock.js";
import { makePki, type TestPki } from "../testkit/pki.js";

let pki: TestPki;
let alice: Issued;
let bob: Issued;
let h: Harness | undefined;

beforeAll(async () => {
  pki = await makePki();
  alice = await pki.leaf(pki.a, "spiffe://a.test/alice");
  bob = await pki.leaf(pki.a, "spiffe://a.test/bob");
});
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const policies = (ids: string[], extra = "") => `
  main:
    default: deny
    rules:
      - name: allowed
        action: allow
        match: [${ids.map((i) => `{ id: ${i} }`).join(", ")}]${extra}
`;

describe("reload", () => {
  it("applies a valid new version atomically, logs it, and revokes exactly the sessions it no longer admits", async () => {
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/alice", "spiffe://a.test/bob"]) });
    const v1 = h.sidecar.config.version;
    const a = await openSession(h.port, pki, alice);
    const b = await openSession(h.port, pki, bob);
    h.rewrite({ policies: policies(["spiffe://a.test/alice"]) });
    expect(await h.sidecar.reload()).toBe("applied");
    const v2 = h.sidecar.config.version;
    expect(v2).not.toBe(v1);
    const applied = await h.logs.next("config_applied");
    expect(applied).toMatchObject({ old_version: v1, new_version: v2, sessions_rechecked: 2 });
    // Bob's live session is revoked with both versions; alice's goes on untouched.
    const revoked = await h.logs.next("revoked");
    expect(revoked).toMatchObject({ peer_id: "spiffe://a.test/bob", old_version: v1, new_version: v2, reasons: ["identity_not_allowed", "default_deny"] });
    await b.closed;
    expect((await h.logs.next("session_end", (r) => r.peer_id === "spiffe://a.test/bob")).end_reason).toBe("revoked");
    a.s.write("-still-on");
    await waitFor(() => a.got() === "ping-still-on", 3000, "alice still served");
    // New connections are decided under the new version.
    const s = await dialTls(h.port, pki, bob);
    await readAll(s);
    const d = await h.logs.next("decision", (r) => r.peer_id === "spiffe://a.test/bob" && r.policy_version === v2);
    expect(d.decision).toBe("deny");
    a.s.end();
    await a.closed;
  });

  it("a revocation grace period lets the session go on for that long", async () => {
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/bob"]), extra: "revocation_grace: 300ms" });
    const b = await openSession(h.port, pki, bob);
    h.rewrite({ policies: policies(["spiffe://a.test/alice"]), extra: "revocation_grace: 300ms" });
    const t0 = Date.now();
    expect(await h.sidecar.reload()).toBe("applied");
    expect((await h.logs.next("revoked")).grace_ms).toBe(300);
    b.s.write("!");
    await waitFor(() => b.got() === "ping!", 200, "echo during grace");
    await b.closed;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
  });

  it("refuses an invalid file, logs file:line, and keeps serving the old version", async () => {
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/alice"]) });
    const v1 = h.sidecar.config.version;
    const a = await openSession(h.port, pki, alice);
    writeFileSync(h.configFile, readFileSync(h.configFile, "utf8").replace("action: allow", "action: alow"));
    expect(await h.sidecar.reload()).toBe("rejected");
    const rejected = await h.logs.next("config_rejected");
    expect(rejected.old_version).toBe(v1);
    expect(String((rejected.errors as string[])[0])).toMatch(new RegExp(`${h.configFile}:\\d+:\\d+: policies\\.main\\.rules\\[0\\]\\.action`));
    expect(h.sidecar.config.version).toBe(v1);
    a.s.write("+");
    await waitFor(() => a.got() === "ping+", 3000, "old session unaffected");
    const again = await openSession(h.port, pki, alice);
    expect(again.got()).toBe("ping");
    a.s.end();
    again.s.end();
    await Promise.all([a.closed, again.closed]);
  });

  it("does nothing when the content did not change", async () => {
    h = await startHarness(pki);
    expect(await h.sidecar.reload()).toBe("unchanged");
  });

  it("moves a listener: binds the new address, stops the old one and closes its sessions", async () => {
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/alice"]) });
    const oldPort = h.port;
    const a = await openSession(oldPort, pki, alice);
    writeFileSync(h.configFile, readFileSync(h.configFile, "utf8").replace("listen: 127.0.0.1:0", "listen: 127.0.0.2:0"));
    expect(await h.sidecar.reload()).toBe("applied");
    const moved = h.sidecar.addresses()["main"]!;
    expect(moved.address).toBe("127.0.0.2");
    await a.closed;
    expect((await h.logs.next("session_end")).end_reason).toBe("listener_removed");
    await expect(dialTls(oldPort, pki, alice)).rejects.toThrow(/ECONNREFUSED/);
    const s = await dialTls(moved.port, pki, alice, { host: "127.0.0.2" });
    const got = readAll(s);
    s.end("moved");
    expect((await got).toString()).toBe("moved");
  });

  it("rejects a move to an address that cannot be bound and keeps the old listener", async () => {
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/alice"]) });
    const taken = h.echo.server.address() as { port: number };
    writeFileSync(h.configFile, readFileSync(h.configFile, "utf8").replace("listen: 127.0.0.1:0", `listen: 127.0.0.1:${taken.port}`));
    expect(await h.sidecar.reload()).toBe("rejected");
    expect(String(((await h.logs.next("config_rejected")).errors as string[])[0])).toMatch(/EADDRINUSE/);
    const a = await openSession(h.port, pki, alice);
    a.s.end();
    await a.closed;
  });
});

describe("own SVID from files", () => {
  it("a rotated set swaps in for new handshakes, live sessions continue; a broken set is refused and the old one stays", async () => {
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/alice"]) });
    const served = async () => {
      const s = await dialTls(h!.port, pki, alice);
      const fp = s.getPeerX509Certificate()!.fingerprint256;
      s.destroy();
      return fp;
    };
    const first = await served();
    const live = await openSession(h.port, pki, alice);
    const dir = h.configFile.replace(/\/parley\.yaml$/, "");
    const rotated = await pki.a.leaf({ uris: ["spiffe://a.test/sidecar"], dnsNames: ["localhost"] });
    writeFileSync(`${dir}/cert.pem`, rotated.chainPem);
    writeFileSync(`${dir}/key.pem`, rotated.keyPem);
    expect(await h.sidecar.reload()).toBe("applied");
    const second = await served();
    expect(second).not.toBe(first);
    live.s.write("+");
    await waitFor(() => live.got() === "ping+", 2000, "live session across rotation");
    // A broken set: the new certificate with the old key.
    const broken = await pki.a.leaf({ uris: ["spiffe://a.test/sidecar"], dnsNames: ["localhost"] });
    writeFileSync(`${dir}/cert.pem`, broken.chainPem);
    expect(await h.sidecar.reload()).toBe("rejected");
    expect(String(((await h.logs.next("config_rejected")).errors as string[])[0])).toMatch(/identity\.key: private key does not match/);
    expect(await served()).toBe(second);
    // A not-yet-valid set is refused too.
    const early = await pki.a.leaf({
      uris: ["spiffe://a.test/sidecar"],
      notBefore: new Date(Date.now() + 3600_000),
      notAfter: new Date(Date.now() + 7200_000),
    });
    writeFileSync(`${dir}/cert.pem`, early.chainPem);
    writeFileSync(`${dir}/key.pem`, early.keyPem);
    expect(await h.sidecar.reload()).toBe("rejected");
    expect(await served()).toBe(second);
    live.s.end();
  });
});

describe("own SVID expiry", () => {
  it("warns inside the window and fails closed once the own SVID expires", async () => {
    const shortLived = await pki.a.leaf({
      uris: ["spiffe://a.test/sidecar"],
      dnsNames: ["localhost"],
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 1500),
    });
    h = await startHarness({ ...pki, server: shortLived }, { policies: policies(["spiffe://a.test/alice"]) });
    await h.logs.next("error", (r) => r.msg === "own SVID expires soon and no rotation has arrived");
    expect(h.sidecar.readiness().checks.own_svid_valid).toBe(true);
    await h.logs.next("error", (r) => String(r.msg).startsWith("own SVID expired"), 4000);
    expect(h.sidecar.readiness()).toMatchObject({ ready: false, checks: { own_svid_valid: false, config_fresh: true } });
    // Clients refuse the expired certificate themselves; one that does not check still gets nothing.
    const s = await dialTls(h.port, pki, alice, { rejectUnauthorized: false });
    await readAll(s);
    expect((await h.logs.next("decision", (r) => r.decision === "deny")).reasons).toEqual(["own_svid_expired"]);
  });
});

describe("session obligations", () => {
  it("an idle session ends with idle_timeout", async () => {
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/alice"], "\n        limits: { idle_timeout: 200ms }") });
    const a = await openSession(h.port, pki, alice);
    await a.closed;
    expect((await h.logs.next("session_end")).end_reason).toBe("idle_timeout");
  });

  it("a session ends at its max duration even while busy", async () => {
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/alice"], "\n        limits: { max_duration: 400ms }") });
    const a = await openSession(h.port, pki, alice);
    const busy = setInterval(() => a.s.writable && a.s.write("."), 50);
    await a.closed;
    clearInterval(busy);
    const end = await h.logs.next("session_end");
    expect(end.end_reason).toBe("max_duration");
    expect(end.duration_ms as number).toBeGreaterThanOrEqual(380);
    const d = await h.logs.next("decision");
    expect(d.obligations).toMatchObject({ max_duration_ms: 400, expires_because: "max_duration" });
  });
  it("a re-check counts the max duration from the decision, even when the certificate bounds it from now", async () => {
    const clock = new ManualClock();
    const t0 = clock.now();
    const hour = 3_600_000;
    const short = await pki.leaf(pki.a, "spiffe://a.test/alice", { notAfter: new Date(t0 + 80 * 60_000) });
    h = await startHarness(pki, { policies: policies(["spiffe://a.test/alice"], "\n        limits: { max_duration: 1h }"), now: clock.now });
    const a = await openSession(h.port, pki, short);
    const registry = h.sidecar.registry;
    const expiry = () => registry.all()[0]?.info(clock.now()).expires_at;
    const first = await waitFor(() => (registry.all()[0]?.info(clock.now()).stage === "pumping" ? expiry() : undefined));
    expect(Date.parse(first!)).toBe(t0 + hour);
    clock.advance(30 * 60_000);
    // Now + 1 h is past the certificate's NotAfter: the certificate bounds the new decision, but the
    // session's own hour (from its decision) ends sooner.
    h.rewrite({ policies: policies(["spiffe://a.test/alice"], "\n        limits: { max_duration: 1h, idle_timeout: 1h }") });
    expect(await h.sidecar.reload()).toBe("applied");
    expect(expiry()).toBe(first);
    a.s.destroy();
  });
});

describe("parley run reloads", () => {
  async function run(configFile: string, ...flags: string[]) {
    const child = spawn(process.execPath, ["dist/cli.js", "run", "--config", configFile, ...flags], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    await waitFor(() => out.includes("listener ready"), 10_000, "start");
    const applied = () => out.split('"event":"config_applied"').length - 1;
    const stop = async () => {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    };
    return { child, applied, stop };
  }

  it("when a watched file changes", async () => {
    h = await startHarness(pki);
    const p = await run(h.configFile);
    try {
      h.rewrite({ policies: policies(["spiffe://a.test/alice"]) });
      await waitFor(() => p.applied() === 1, 5000, "reload on change");
    } finally {
      await p.stop();
    }
  });

  it("on SIGHUP (and only then with --no-watch)", async () => {
    h = await startHarness(pki);
    const p = await run(h.configFile, "--no-watch");
    try {
      h.rewrite({ policies: policies(["spiffe://a.test/alice"]) });
      await new Promise((r) => setTimeout(r, 1200));
      expect(p.applied()).toBe(0);
      p.child.kill("SIGHUP");
      await waitFor(() => p.applied() === 1, 5000, "reload on SIGHUP");
    } finally {
      await p.stop();
    }
  });
});
