// The sidecar: listeners, their shared session registry and decision log, with an explicit lifecycle:
// apply a configuration (the first one starts it), reload from file, fail closed, stop with a drain.
// Longer than most modules: it owns the state every one of those transitions reads and changes (the
// configuration in force, the overlay, the fail-closed reasons); outbound routes and the checks a
// configuration must pass live beside it (outbound.ts, effective.ts).
import { SharedLimits, type SharedLimitsSettings } from "../limits/shared.js";
import { TaskBounds } from "../limits/tasks.js";
import type { AddressInfo } from "node:net";
import { loadConfig, type ListenerConfig, type SidecarConfig } from "../config/load.js";
import { errorLines } from "../config/source.js";
import { SvidVerifier } from "../spiffe/x509svid.js";
import { SvidWorkCounts } from "../spiffe/work.js";
import { InboundListener } from "../proxy/inbound/listener.js";
import { OutboundRoutes, type BoundRoutes } from "./outbound.js";
import { ApplyError, checkSequences, handshakeLimits, type EffectiveConfig, type TrustOverlay } from "./effective.js";
import { SessionRegistry } from "../proxy/registry.js";
import type { ListenerState } from "../proxy/inbound/session.js";
import { Admission } from "../limits/admission.js";
import { AdmissionPlans } from "../limits/plan.js";
import { HandshakeGuard } from "../limits/handshakes.js";
import { SharedThrottles } from "../limits/throttle.js";
import type { DecisionLog } from "../telemetry/log.js";
import { LimitCounts } from "../limits/events.js";
import type { ListenerDeps } from "../proxy/inbound/listener.js";
import type { OwnIdentity } from "../identity/files.js";
import { causeOf } from "../identity/changes.js";
import { identityView, type IdentityStatus } from "../identity/status.js";
import { OwnIdentityState } from "../identity/own.js";
import { RevocationList, type RevocationEntry } from "../policy/revocation.js";
import { AdminRevocations } from "./revocations.js";

export interface SidecarOptions {
  readonly log: DecisionLog;
  readonly now?: () => number;
  /** The own identity known before any configuration arrives (a bootstrap's files), for readiness. */
  readonly identity?: OwnIdentity | undefined;
}

type FailReason = NonNullable<ListenerState["failClosed"]>;
/** When several hold, sessions are denied with the first of these. */
const FAIL_ORDER: readonly FailReason[] = ["own_svid_withdrawn", "own_svid_expired", "config_stale"];

export type ReloadOutcome = "applied" | "unchanged" | "rejected";
const tlsOf = (c: EffectiveConfig) => ({ cert: c.identity.certChainPem, key: c.identity.keyPem });
const where = (l: ListenerConfig) => `${l.listen.host}:${l.listen.port}`;

export class Sidecar {
  readonly registry = new SessionRegistry();
  readonly limitCounts: LimitCounts;
  /** Signature checks and spent path budgets of every SVID verification of this sidecar. */
  readonly svidWork = new SvidWorkCounts();
  private readonly listeners = new Map<string, InboundListener>();
  private readonly outbound: OutboundRoutes;
  private readonly deps: ListenerDeps;
  private current: EffectiveConfig | undefined;
  /** The configuration last given, before the overlay. */
  private base: SidecarConfig | undefined;
  private overlay: TrustOverlay | undefined;
  /** Every reason the sidecar fails closed for now (each one set and cleared by its own cause). */
  private readonly closedFor = new Set<FailReason>();
  /** The own identity's source, application, expiry and withdrawal. */
  readonly own: OwnIdentityState;
  private queue: Promise<unknown> = Promise.resolve();
  /** Revocations posted to the admin server: kept across reloads and pushes until their `until`. */
  readonly adminRevocations = new AdminRevocations();
  private stopping: Promise<void> | undefined;
  private sharedSettings: SharedLimitsSettings | undefined;

  constructor(
    private readonly initial: SidecarConfig | undefined,
    private readonly options: SidecarOptions,
  ) {
    const now = options.now ?? Date.now;
    const limits = initial?.limits;
    this.limitCounts = new LimitCounts((event) => options.log.limitHit(event));
    this.own = new OwnIdentityState({
      log: options.log,
      now,
      ...(options.identity ? { fallback: options.identity } : {}),
      failClosed: (reason, on) => this.failClosedFor(reason, on),
    });
    this.outbound = new OutboundRoutes(options.log, this.registry, now, this.svidWork);
    this.deps = {
      log: options.log,
      registry: this.registry,
      now,
      gate: {
        admission: new Admission({ now, counts: this.limitCounts, ...(limits ? { maxHeld: limits.maxHeld } : {}) }),
        shared: new SharedLimits({
          now,
          counts: this.limitCounts,
          onEvent: (message, fields, warning) => (warning ? options.log.warn(message, fields) : options.log.lifecycle(message, fields)),
          onCall: (op, seconds, outcome) => options.log.sharedLimitsCall(op, seconds, outcome),
        }),
        tasks: new TaskBounds(now),
        counts: this.limitCounts,
      },
      identityThrottles: new SharedThrottles(),
      handshakes: new HandshakeGuard(handshakeLimits(limits), now, this.limitCounts),
    };
  }

  /** TLS handshakes under way now (each holds a slot of the handshake limits). */
  get handshakesInFlight(): number {
    return this.deps.handshakes.handshakesInFlight;
  }

  get admission(): Admission {
    return this.deps.gate.admission;
  }

  /** The shared limits' backend (readiness, metrics); undefined when none is configured. */
  sharedLimitsStatus(): ReturnType<SharedLimits["status"]> {
    return this.deps.gate.shared.status();
  }

  /** The configuration in force; undefined until the first one is applied. */
  get config(): EffectiveConfig {
    if (!this.current) throw new Error("no configuration applied yet");
    return this.current;
  }

  /** The files of the configuration last given (applied or waiting for its identity): what to watch. */
  get files(): readonly string[] {
    return this.base?.files ?? [];
  }

  get configured(): boolean {
    return this.current !== undefined;
  }

  /** Applies the configuration given at construction. */
  start(): Promise<void> {
    if (!this.initial) throw new Error("no initial configuration: apply one when it arrives");
    return this.apply(this.initial);
  }

  addresses(): Record<string, AddressInfo> {
    return Object.fromEntries([...this.listeners].map(([name, l]) => [name, l.address()]));
  }

  /**
   * Puts a configuration in force, all or nothing: listeners it adds (or moves) are bound first, and a
   * bind failure leaves everything as it was. Then new connections see the new state, live sessions
   * are re-checked against it, and listeners it no longer has stop and close their sessions.
   * Calls are serialized.
   */
  apply(next: SidecarConfig): Promise<void> {
    return this.serialized(async () => {
      const effective = this.effective(next, this.overlay);
      if (effective) await this.applyNow(effective);
      else this.options.log.lifecycle("configuration kept until the own SVID arrives from the Workload API", { config_version: next.version });
      this.base = next;
    });
  }

  /**
   * Takes a new identity and trust bundles from outside the configuration (each one the complete
   * current set): new handshakes present the new SVID, and live sessions are re-checked against the
   * new bundles (a trust domain that disappeared revokes the sessions chained to it).
   */
  setOverlay(overlay: TrustOverlay): Promise<void> {
    return this.serialized(async () => {
      const effective = this.base ? this.effective(this.base, overlay) : undefined;
      if (effective) await this.applyNow(effective);
      this.overlay = overlay;
      this.own.restored(overlay.identity);
    });
  }

  private effective(base: SidecarConfig, overlay: TrustOverlay | undefined): EffectiveConfig | undefined {
    if (!overlay) return base.identity ? (base as EffectiveConfig) : undefined;
    return { ...base, identity: overlay.identity, bundles: base.bundles.overlaidWith(overlay.bundles) };
  }

  private serialized<T>(step: () => Promise<T>): Promise<T> {
    const run = this.queue.then(step);
    this.queue = run.catch(() => {});
    return run;
  }

  private async applyNow(next: EffectiveConfig): Promise<void> {
    if (this.stopping) throw new ApplyError("the sidecar is stopping");
    const prev = this.current;
    checkSequences(prev, next);
    const revocations = this.revocationsOf(next);
    const states = this.statesFor(next, revocations);
    const oldWhere = new Map(prev?.listeners.map((l) => [l.name, where(l)]) ?? []);
    const added = next.listeners.filter((l) => oldWhere.get(l.name) !== where(l));
    const fresh = new Map<string, InboundListener>();
    try {
      for (const l of added) {
        const listener = new InboundListener(states.get(l.name)!, tlsOf(next), this.deps);
        fresh.set(l.name, listener);
        const a = await listener.listen().catch((e: unknown) => {
          throw new ApplyError(`listener ${l.name}: cannot listen: ${(e as Error).message}`);
        });
        this.options.log.lifecycle("listener ready", { listener: l.name, address: `${a.address}:${a.port}`, config_version: next.version });
      }
    } catch (e) {
      for (const l of fresh.values()) l.stopAccepting();
      throw e instanceof ApplyError ? e : new ApplyError((e as Error).message);
    }
    // Outbound binds belong to the same transaction: a failure there releases the listeners above.
    let routes: BoundRoutes;
    try {
      routes = await this.outbound.bind(next, revocations);
    } catch (e) {
      for (const l of fresh.values()) l.stopAccepting();
      throw e;
    }
    this.outbound.commit(routes);
    const identityChanged = prev !== undefined && (next.identity.certChainPem !== prev.identity.certChainPem || next.identity.keyPem !== prev.identity.keyPem);
    const retired: InboundListener[] = [];
    for (const [name, l] of this.listeners) {
      if (fresh.has(name) || !states.has(name)) retired.push(l);
      else {
        l.update(states.get(name)!);
        if (identityChanged) l.setIdentity(tlsOf(next));
      }
    }
    for (const l of retired) this.listeners.delete(l.name);
    for (const [name, l] of fresh) this.listeners.set(name, l);
    this.current = next;
    this.configureShared(next.sharedLimits);
    if (next.identity !== prev?.identity) this.own.applied(next.identity);
    this.deps.handshakes.setLimits(handshakeLimits(next.limits));
    for (const l of retired) {
      l.stopAccepting();
      this.options.log.lifecycle("listener removed", { listener: l.name, config_version: next.version });
    }
    const cause = prev ? causeOf(prev, next) : undefined;
    for (const s of this.registry.all()) {
      if (s.direction === "outbound") continue;
      const state = states.get(s.listener);
      // A session of a listener that was removed or moved cannot be re-homed.
      if (!state || fresh.has(s.listener)) s.close("listener_removed");
      else s.recheck(state, next.revocationGraceMs, cause);
    }
    this.outbound.revoke(revocations, next.version);
  }

  /** The configuration's revocations and the admin server's, none past its `until`. */
  private revocationsOf(config: EffectiveConfig): RevocationList {
    const now = this.deps.now();
    const posted = this.adminRevocations.live(now);
    const own = config.revocations.live(now);
    return posted.length === 0 ? own : new RevocationList([...own.entries, ...posted]);
  }

  /**
   * Puts a revocation posted to the admin server in force at once: new sessions it names are denied,
   * live ones (inbound and outbound) end now. Resolves to how many ended, or undefined (nothing
   * changed) when the admin set is full.
   */
  addRevocation(entry: RevocationEntry): Promise<number | undefined> {
    return this.serialized(() => {
      if (!this.adminRevocations.add(entry, this.deps.now())) return Promise.resolve(undefined);
      return Promise.resolve(this.current ? this.revokeNow(this.current) : 0);
    });
  }

  /** Re-checks every live session against the revocations in force now; returns how many ended. */
  private revokeNow(config: EffectiveConfig): number {
    const before = this.registry.all().map((s) => s.id);
    const revocations = this.revocationsOf(config);
    const states = this.statesFor(config, revocations);
    for (const [name, l] of this.listeners) l.update(states.get(name)!);
    this.outbound.setRevocations(revocations);
    for (const s of this.registry.all()) {
      const state = states.get(s.listener);
      if (s.direction === "inbound" && state) s.recheck(state, config.revocationGraceMs, { cause: "revoked" });
    }
    this.outbound.revoke(revocations, config.version);
    return before.filter((id) => !this.registry.get(id)).length;
  }

  /** A changed backend reconnects (live sessions go on, their leases renewed into it); logged. */
  private configureShared(next: SharedLimitsSettings | undefined): void {
    const prev = this.sharedSettings;
    this.sharedSettings = next;
    if (JSON.stringify(prev) === JSON.stringify(next)) return;
    if (prev) this.options.log.lifecycle("shared limits reconfigured", { url_changed: prev.url !== next?.url, removed: next === undefined });
    void this.deps.gate.shared.configure(next);
  }

  outboundAddresses(): Record<string, AddressInfo> {
    return this.outbound.addresses();
  }

  /** The outbound multiplexed connections open: per remote, the streams each carries. */
  outboundConnections(): number[][] {
    return this.outbound.connections();
  }

  /** `revocations`: the list in force (revocationsOf), when the caller has built it already. */
  private statesFor(config: EffectiveConfig, revocations = this.revocationsOf(config)): Map<string, ListenerState> {
    const verifier = new SvidVerifier(config.bundles, { maxChainLength: config.maxChainLength, ...config.svidVerification, counters: this.svidWork });
    const base = {
      verifier,
      attestations: config.attestations,
      revocations,
      maxChainLength: config.maxChainLength,
      limits: config.limits,
      ownId: config.identity.id,
      ...(config.negotiation ? { negotiation: config.negotiation } : {}),
      ...(this.failReason ? { failClosed: this.failReason } : {}),
    };
    return new Map(
      config.listeners.map((l) => [l.name, { ...base, config: l, admission: new AdmissionPlans(l.policy, l.maxSessions, config.limits.maxSessions) }]),
    );
  }

  /** The control plane's staleness: fails closed with `config_stale`, or (undefined) ends that. */
  setFailClosed(reason: "config_stale" | undefined): void {
    this.failClosedFor("config_stale", reason !== undefined);
  }

  private get failReason(): FailReason | undefined {
    return FAIL_ORDER.find((r) => this.closedFor.has(r));
  }

  /**
   * Fails closed for `reason` (every new session denied, live ones revoked at once) or ends that; the
   * sidecar serves again once no reason holds.
   */
  private failClosedFor(reason: FailReason, on: boolean): void {
    if (this.closedFor.has(reason) === on) return;
    if (on) this.closedFor.add(reason);
    else this.closedFor.delete(reason);
    if (!this.current) return;
    const states = this.statesFor(this.current);
    for (const [name, l] of this.listeners) l.update(states.get(name)!);
    if (!on) return;
    for (const s of this.registry.all()) {
      const state = states.get(s.listener);
      if (state) s.recheck(state, 0, { cause: reason });
    }
  }

  /** The own SVID served, or held while the configuration waits (from the Workload API). */
  get inForce(): OwnIdentity | undefined {
    return this.current?.identity ?? this.overlay?.identity;
  }

  /** The own identity as operators see it (`/readyz`, `/config`, metrics). */
  identityStatus(now = this.deps.now()): IdentityStatus {
    return this.own.status(this.inForce, now);
  }

  /** Reloads the configuration file; a broken one is logged and the running one stays. */
  async reload(): Promise<ReloadOutcome> {
    const old = this.base!;
    try {
      const next = loadConfig(old.file);
      if (next.version === old.version) {
        this.options.log.lifecycle("configuration unchanged", { file: old.file, version: old.version });
        return "unchanged";
      }
      const sessions = this.registry.size;
      await this.apply(next);
      this.options.log.configApplied({ file: old.file, old_version: old.version, new_version: next.version, sessions_rechecked: sessions });
      return "applied";
    } catch (e) {
      const errors = errorLines(e);
      this.options.log.configRejected({ file: old.file, old_version: old.version, errors });
      return "rejected";
    }
  }

  get draining(): boolean {
    return this.stopping !== undefined;
  }

  /**
   * Set by the control-plane agent while it serves a stale configuration on purpose (`on_stale:
   * fail_open`): still ready, and `/readyz` says so.
   */
  servingStaleSince: number | undefined;

  /** What `/readyz` reports: every check must hold; `identity` tells the source's state besides. */
  readiness(now = Date.now()): {
    ready: boolean;
    checks: Record<string, boolean>;
    identity: Record<string, unknown>;
    serving_stale_config?: { since: string };
    shared_limits?: ReturnType<Sidecar["sharedLimitsStatus"]>;
  } {
    const c = this.current;
    const identity = this.identityStatus(now);
    const checks = {
      config_loaded: c !== undefined,
      listeners_bound: c !== undefined && this.listeners.size === c.listeners.length && [...this.listeners.values()].every((l) => l.listening),
      own_svid_valid: identity.usable,
      config_fresh: !this.closedFor.has("config_stale"),
      not_draining: this.stopping === undefined,
    };
    const stale = this.servingStaleSince === undefined ? {} : { serving_stale_config: { since: new Date(this.servingStaleSince).toISOString() } };
    // Shown, not a check: one Redis down would make every replica unready at once; on_unavailable says what happens.
    const shared = this.sharedLimitsStatus();
    return { ready: Object.values(checks).every(Boolean), checks, identity: identityView(identity), ...stale, ...(shared ? { shared_limits: shared } : {}) };
  }

  /** Ends one live session by id (an operator's revocation); false if there is none. */
  revokeSession(id: string): boolean {
    const s = this.registry.get(id);
    if (!s) return false;
    s.close("admin_revoked");
    return true;
  }

  /** Stops accepting, lets sessions finish for up to the drain timeout, then closes the rest. */
  stop(drainTimeoutMs = this.current?.drainTimeoutMs ?? 0): Promise<void> {
    this.stopping ??= (async () => {
      await this.queue;
      this.options.log.lifecycle("draining", { sessions: this.registry.size, drain_timeout_ms: drainTimeoutMs });
      for (const l of this.listeners.values()) l.stopAccepting();
      this.outbound.stopAccepting();
      this.own.stop();
      const { closed } = await this.registry.drain(drainTimeoutMs, "drain_timeout");
      await this.deps.gate.shared.close();
      this.options.log.lifecycle("stopped", { closed_at_timeout: closed });
    })();
    return this.stopping;
  }
}
