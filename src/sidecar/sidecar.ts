// The sidecar: listeners, their shared session registry and decision log, with an explicit lifecycle:
// apply a configuration (the first one starts it), reload from file, fail closed, stop with a drain.
import { ParleyError } from "../errors/catalogue.js";
import type { AddressInfo } from "node:net";
import { loadConfig, type ListenerConfig, type SidecarConfig } from "../config/load.js";
import { errorLines } from "../config/source.js";
import { SvidVerifier } from "../spiffe/x509svid.js";
import { InboundListener } from "../proxy/inbound/listener.js";
import { OutboundListener } from "../proxy/outbound/listener.js";
import { SessionRegistry } from "../proxy/registry.js";
import type { ListenerState } from "../proxy/inbound/session.js";
import { Admission } from "../limits/admission.js";
import { HandshakeGuard, type HandshakeLimits } from "../limits/handshakes.js";
import { SharedThrottles } from "../limits/throttle.js";
import type { DecisionLog } from "../telemetry/log.js";
import { Counters } from "../telemetry/stats.js";
import type { ListenerDeps } from "../proxy/inbound/listener.js";
import type { SidecarLimits } from "../config/resources.js";
import type { OwnIdentity } from "../identity/files.js";
import { at, type LongTimer } from "../time/clock.js";
import type { BundleSet } from "../spiffe/x509bundle.js";

export interface SidecarOptions {
  readonly log: DecisionLog;
  readonly now?: () => number;
}

export class ApplyError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_APPLY", message);
  }
}

export type ReloadOutcome = "applied" | "unchanged" | "rejected";

const OWN_EXPIRY_WARNING_MS = 5 * 60_000;
const DEFAULT_HANDSHAKES: HandshakeLimits = { maxInFlight: 256, maxInFlightPerSource: 64 };

function handshakeLimits(l: SidecarLimits | undefined): HandshakeLimits {
  if (!l) return DEFAULT_HANDSHAKES;
  return { maxInFlight: l.maxHandshakes, maxInFlightPerSource: l.maxHandshakesPerSource, ...(l.sourceRate ? { sourceRate: l.sourceRate } : {}) };
}

/** A configuration with its own identity known: what can actually serve. */
export type EffectiveConfig = SidecarConfig & { readonly identity: OwnIdentity };

/** Identity and trust from a source outside the configuration (the Workload API). */
export interface TrustOverlay {
  readonly identity: OwnIdentity;
  /** Replace the configuration's bundles of the same trust domains; the set is complete. */
  readonly bundles: BundleSet;
  readonly version: string;
}

const tlsOf = (c: EffectiveConfig) => ({ cert: c.identity.certChainPem, key: c.identity.keyPem });
const where = (l: ListenerConfig) => `${l.listen.host}:${l.listen.port}`;

/** A bundle whose spiffe_sequence goes backwards is a rollback: refused, naming the trust domain. */
function checkSequences(prev: EffectiveConfig | undefined, next: EffectiveConfig): void {
  if (!prev) return;
  for (const b of next.bundles.all()) {
    const old = prev.bundles.forTrustDomain(b.trustDomain);
    if (old?.sequence !== undefined && b.sequence !== undefined && b.sequence < old.sequence) {
      throw new ApplyError(`bundle of ${b.trustDomain}: spiffe_sequence ${b.sequence} is older than the ${old.sequence} in force`);
    }
  }
}

export class Sidecar {
  readonly registry = new SessionRegistry();
  readonly counters: Counters;
  private readonly listeners = new Map<string, InboundListener>();
  private readonly outbound = new Map<string, { listener: OutboundListener; spec: string }>();
  private readonly deps: ListenerDeps;
  private current: EffectiveConfig | undefined;
  /** The configuration last given, before the overlay. */
  private base: SidecarConfig | undefined;
  private overlay: TrustOverlay | undefined;
  private failClosed: ListenerState["failClosed"];
  private queue: Promise<unknown> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private ownTimers: LongTimer[] = [];

  constructor(
    private readonly initial: SidecarConfig | undefined,
    private readonly options: SidecarOptions,
  ) {
    const now = options.now ?? Date.now;
    const limits = initial?.limits;
    this.counters = new Counters((name, by) => {
      if (name.startsWith("limits.")) for (let i = 0; i < by; i++) options.log.limitHit(name.slice(7));
    });
    this.deps = {
      log: options.log,
      registry: this.registry,
      now,
      admission: new Admission({ now, counters: this.counters, ...(limits ? { maxHeld: limits.maxHeld } : {}) }),
      identityThrottles: new SharedThrottles(),
      handshakes: new HandshakeGuard(handshakeLimits(limits), now, this.counters),
    };
  }

  get admission(): Admission {
    return this.deps.admission;
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
    });
  }

  private effective(base: SidecarConfig, overlay: TrustOverlay | undefined): EffectiveConfig | undefined {
    if (!overlay) return base.identity ? (base as EffectiveConfig) : undefined;
    return { ...base, identity: overlay.identity, bundles: base.bundles.overlaidWith(overlay.bundles) };
  }

  private serialized(step: () => Promise<void>): Promise<void> {
    const run = this.queue.then(step);
    this.queue = run.catch(() => {});
    return run;
  }

  private async applyNow(next: EffectiveConfig): Promise<void> {
    if (this.stopping) throw new ApplyError("the sidecar is stopping");
    const prev = this.current;
    checkSequences(prev, next);
    const states = this.statesFor(next);
    const oldWhere = new Map(prev?.listeners.map((l) => [l.name, where(l)]) ?? []);
    const added = next.listeners.filter((l) => oldWhere.get(l.name) !== where(l));
    const fresh = new Map<string, InboundListener>();
    try {
      for (const l of added) {
        const listener = new InboundListener(states.get(l.name)!, tlsOf(next), this.deps);
        fresh.set(l.name, listener);
        const a = await listener.listen();
        this.options.log.lifecycle("listener ready", { listener: l.name, address: `${a.address}:${a.port}`, config_version: next.version });
      }
    } catch (e) {
      for (const l of fresh.values()) l.stopAccepting();
      throw new ApplyError((e as Error).message);
    }
    await this.applyOutbound(next);
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
    if (next.identity !== prev?.identity) this.watchOwnExpiry(next.identity);
    this.deps.handshakes.setLimits(handshakeLimits(next.limits));
    for (const l of retired) {
      l.stopAccepting();
      this.options.log.lifecycle("listener removed", { listener: l.name, config_version: next.version });
    }
    for (const s of this.registry.all()) {
      const state = states.get(s.listener);
      // A session of a listener that was removed or moved cannot be re-homed.
      if (!state || fresh.has(s.listener)) s.close("listener_removed");
      else s.recheck(state, next.revocationGraceMs);
    }
  }

  /**
   * Outbound listeners: a changed route (address, remote, expected ID, negotiation) is a new listener;
   * an unchanged one takes the new identity and bundles; a dropped one stops.
   */
  private async applyOutbound(next: EffectiveConfig): Promise<void> {
    const verifier = new SvidVerifier(next.bundles, { maxChainLength: next.maxChainLength });
    const wanted = new Map(next.outbound.map((o) => [o.name, o]));
    for (const [name, o] of wanted) {
      const state = { config: o, verifier, identity: next.identity, maxChainLength: next.maxChainLength };
      const spec = JSON.stringify({ ...o, expectId: o.expectId.toString() });
      const have = this.outbound.get(name);
      if (have?.spec === spec) {
        have.listener.update(state);
        continue;
      }
      const listener = new OutboundListener(state, this.options.log, this.deps.now);
      have?.listener.stopAccepting();
      const a = await listener.listen().catch((e: Error) => {
        throw new ApplyError(`outbound ${name}: cannot listen: ${e.message}`);
      });
      this.outbound.set(name, { listener, spec });
      this.options.log.lifecycle("outbound listener ready", {
        listener: name,
        address: `${a.address}:${a.port}`,
        remote: `${o.remote.host}:${o.remote.port}`,
        expect_id: o.expectId.toString(),
      });
    }
    for (const [name, o] of this.outbound) {
      if (wanted.has(name)) continue;
      o.listener.stopAccepting();
      this.outbound.delete(name);
    }
  }

  outboundAddresses(): Record<string, AddressInfo> {
    return Object.fromEntries([...this.outbound].map(([name, o]) => [name, o.listener.address()]));
  }

  /**
   * Warns (log; the metric parley_own_svid_expiry_seconds shows it too) when the own SVID is within
   * the warning window of expiry, and fails closed when it expires: a sidecar never serves with an
   * expired SVID. A new SVID clears both.
   */
  private watchOwnExpiry(own: OwnIdentity): void {
    for (const t of this.ownTimers) t.clear();
    const now = this.deps.now;
    if (this.failClosed === "own_svid_expired" && own.notAfter > now()) this.setFailClosed(undefined);
    const warn = () =>
      this.options.log.error("own SVID expires soon and no rotation has arrived", { id: own.id.toString(), not_after: new Date(own.notAfter).toISOString() });
    this.ownTimers = [
      at(own.notAfter - OWN_EXPIRY_WARNING_MS, warn, now),
      at(
        own.notAfter,
        () => {
          this.options.log.error("own SVID expired: failing closed until a new one arrives", { id: own.id.toString() });
          this.setFailClosed("own_svid_expired");
        },
        now,
      ),
    ];
  }

  private statesFor(config: EffectiveConfig): Map<string, ListenerState> {
    const verifier = new SvidVerifier(config.bundles, { maxChainLength: config.maxChainLength });
    const base = {
      verifier,
      attestations: config.attestations,
      maxChainLength: config.maxChainLength,
      limits: config.limits,
      ownId: config.identity.id.toString(),
      ...(config.negotiation ? { negotiation: config.negotiation } : {}),
      ...(this.failClosed ? { failClosed: this.failClosed } : {}),
    };
    return new Map(config.listeners.map((l) => [l.name, { ...base, config: l }]));
  }

  /**
   * Fails closed (every new session denied with `reason`, live ones revoked at once) or, with
   * undefined, serves the configuration in force again.
   */
  setFailClosed(reason: ListenerState["failClosed"]): void {
    if (this.failClosed === reason) return;
    this.failClosed = reason;
    if (!this.current) return;
    const states = this.statesFor(this.current);
    for (const [name, l] of this.listeners) l.update(states.get(name)!);
    if (reason) for (const s of this.registry.all()) s.recheck(states.get(s.listener)!, 0);
  }

  /** Reloads the configuration file; a broken one is logged and the running one stays. */
  async reload(): Promise<ReloadOutcome> {
    const old = this.base!;
    try {
      const next = loadConfig(old.file);
      if (next.version === old.version) return "unchanged";
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

  /** What `/readyz` reports: every check must hold. */
  readiness(now = Date.now()): { ready: boolean; checks: Record<string, boolean>; serving_stale_config?: { since: string } } {
    const c = this.current;
    const checks = {
      config_loaded: c !== undefined,
      listeners_bound: c !== undefined && this.listeners.size === c.listeners.length && [...this.listeners.values()].every((l) => l.listening),
      own_svid_valid: c !== undefined && c.identity.notAfter > now,
      config_fresh: this.failClosed !== "config_stale",
      not_draining: this.stopping === undefined,
    };
    const stale = this.servingStaleSince === undefined ? {} : { serving_stale_config: { since: new Date(this.servingStaleSince).toISOString() } };
    return { ready: Object.values(checks).every(Boolean), checks, ...stale };
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
      for (const o of this.outbound.values()) o.listener.stopAccepting();
      for (const t of this.ownTimers) t.clear();
      const { closed } = await this.registry.drain(drainTimeoutMs, "drain_timeout");
      this.options.log.lifecycle("stopped", { closed_at_timeout: closed });
    })();
    return this.stopping;
  }
}
