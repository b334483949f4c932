// The rig of the shared-limits suites: one real redis-server for the file, a client reading its state,
// the PKI with alice and bob, and sidecars sharing the server under a fresh key prefix. Calling
// sharedLimitsRig() at a suite's top level registers its hooks: set up once, and after each test the
// sessions it opened are destroyed, its sidecars closed, and Redis thawed and restarted if it stopped.
import type { TLSSocket } from "node:tls";
import { createClient } from "redis";
import { afterAll, afterEach, beforeAll } from "vitest";
import type { Issued } from "../src/certs/issue.js";
import { attempt } from "./attempt.js";
import { startHarness, type Harness, type HarnessOptions } from "./harness.js";
import { makePki, type TestPki } from "./pki.js";
import { startRedis, type RedisServer } from "./redis.js";

export class SharedLimitsRig {
  pki!: TestPki;
  alice!: Issued;
  bob!: Issued;
  redis!: RedisServer;
  /** A client of its own: what the sidecars wrote into Redis. */
  inspect!: ReturnType<typeof createClient>;
  /** Sockets a test opened (destroyed after it). */
  readonly sockets: TLSSocket[] = [];
  private readonly harnesses: Harness[] = [];
  private prefixes = 0;

  async setUp(): Promise<void> {
    this.pki = await makePki();
    this.alice = await this.pki.leaf(this.pki.a, "spiffe://a.test/alice");
    this.bob = await this.pki.leaf(this.pki.a, "spiffe://a.test/bob");
    this.redis = await startRedis();
    this.inspect = createClient({ url: this.redis.url, socket: { reconnectStrategy: () => 50 } });
    this.inspect.on("error", () => undefined);
    await this.inspect.connect();
  }

  async afterTest(): Promise<void> {
    for (const s of this.sockets.splice(0)) s.destroy();
    this.redis.resume();
    await Promise.all(this.harnesses.splice(0).map((h) => h.close()));
    if (!this.redis.running) await this.redis.restart(); // a test that stopped it leaves it running for the next
  }

  async tearDown(): Promise<void> {
    this.inspect.destroy();
    await this.redis.stop();
  }

  /** A key prefix no other test of the file uses: `tag`, a number, a colon. */
  prefix(tag: string): string {
    return `${tag}${++this.prefixes}:`;
  }

  /** A `shared_limits:` line for this Redis (or `url`) under `prefix`, with more `fields` (a YAML flow map's entries). */
  section(prefix: string, fields = "timeout: 1s", url = this.redis.url): string {
    return `shared_limits: { url: "${url}", key_prefix: "${prefix}", ${fields} }\n`;
  }

  /** A sidecar closed after the test. */
  async start(opts: HarnessOptions): Promise<Harness> {
    const h = await startHarness(this.pki, opts);
    this.harnesses.push(h);
    return h;
  }

  /** `n` sidecars with `opts`, each connected to the backend. */
  async sidecars(n: number, opts: HarnessOptions): Promise<Harness[]> {
    const hs = await Promise.all(Array.from({ length: n }, () => this.start(opts)));
    await Promise.all(hs.map((h) => h.logs.next("lifecycle", (r) => r.msg === "shared limits backend connected")));
    return hs;
  }

  /** Opens a session of `creds` on `port` (kept in `sockets`): admitted or refused. */
  attempt(port: number, creds: Issued): Promise<boolean> {
    return attempt(port, this.pki, creds, this.sockets);
  }
}

export function sharedLimitsRig(): SharedLimitsRig {
  const rig = new SharedLimitsRig();
  beforeAll(() => rig.setUp());
  afterEach(() => rig.afterTest());
  afterAll(() => rig.tearDown());
  return rig;
}

/** The reasons of each session `h` denied, in order. */
export const denials = (h: Harness) =>
  h.logs
    .of("decision")
    .filter((d) => d.decision === "deny")
    .map((d) => d.reasons);
