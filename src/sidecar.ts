// The sidecar: listeners, their shared session registry and decision log, with an explicit lifecycle
// (start, apply a new configuration, stop with a drain).
import type { AddressInfo } from "node:net";
import { loadConfig, type ListenerConfig, type SidecarConfig } from "./config/load.js";
import { ConfigError, formatIssue } from "./config/source.js";
import { SvidVerifier } from "./identity/x509svid.js";
import { InboundListener } from "./proxy/listener.js";
import { SessionRegistry } from "./proxy/registry.js";
import type { ListenerState } from "./proxy/session.js";
import type { DecisionLog } from "./telemetry/log.js";

export interface SidecarOptions {
  readonly log: DecisionLog;
  readonly now?: () => number;
}

export class ReloadError extends Error {
  readonly code = "ERR_RELOAD";
}

export type ReloadOutcome = "applied" | "unchanged" | "rejected";

function statesFor(config: SidecarConfig): Map<string, ListenerState> {
  const verifier = new SvidVerifier(config.bundles, { maxChainLength: config.maxChainLength });
  return new Map(
    config.listeners.map((l) => [l.name, { config: l, verifier, attestations: config.attestations, maxChainLength: config.maxChainLength }]),
  );
}

const tlsOf = (c: SidecarConfig) => ({ cert: c.identity.certChainPem, key: c.identity.keyPem });
const where = (l: ListenerConfig) => `${l.listen.host}:${l.listen.port}`;

export class Sidecar {
  readonly registry = new SessionRegistry();
  private readonly listeners: InboundListener[];
  private stopping: Promise<void> | undefined;
  private current: SidecarConfig;

  constructor(
    config: SidecarConfig,
    private readonly options: SidecarOptions,
  ) {
    this.current = config;
    const deps = { log: options.log, registry: this.registry, now: options.now ?? Date.now };
    const states = statesFor(config);
    this.listeners = config.listeners.map((l) => new InboundListener(states.get(l.name)!, tlsOf(config), deps));
  }

  get config(): SidecarConfig {
    return this.current;
  }

  /** Binds every listener, or none: if one fails, the others are closed and the error is thrown. */
  async start(): Promise<void> {
    try {
      for (const l of this.listeners) {
        const a = await l.listen();
        this.options.log.lifecycle("listener ready", { listener: l.name, address: `${a.address}:${a.port}`, config_version: this.current.version });
      }
    } catch (e) {
      for (const l of this.listeners) l.stopAccepting();
      throw e;
    }
  }

  addresses(): Record<string, AddressInfo> {
    return Object.fromEntries(this.listeners.map((l) => [l.name, l.address()]));
  }

  /**
   * Swaps in a new configuration atomically for new connections, then re-checks every live session
   * against it. Listeners cannot be added, removed or moved without a restart.
   */
  apply(next: SidecarConfig): void {
    const before = new Map(this.current.listeners.map((l) => [l.name, where(l)]));
    const after = new Map(next.listeners.map((l) => [l.name, where(l)]));
    const same = before.size === after.size && [...before].every(([n, w]) => after.get(n) === w);
    if (!same) throw new ReloadError("listeners were added, removed or moved: that needs a restart");
    const states = statesFor(next);
    const identityChanged = next.identity.certChainPem !== this.current.identity.certChainPem || next.identity.keyPem !== this.current.identity.keyPem;
    for (const l of this.listeners) {
      l.update(states.get(l.name)!);
      if (identityChanged) l.setIdentity(tlsOf(next));
    }
    this.current = next;
    for (const s of this.registry.all()) s.recheck(states.get(s.listener)!, next.revocationGraceMs);
  }

  /** Reloads the configuration file; a broken one is logged and the running one stays. */
  reload(): ReloadOutcome {
    const old = this.current;
    let next: SidecarConfig;
    try {
      next = loadConfig(old.file);
      if (next.version === old.version) return "unchanged";
      const sessions = this.registry.size;
      this.apply(next);
      this.options.log.configApplied({ file: old.file, old_version: old.version, new_version: next.version, sessions_rechecked: sessions });
      return "applied";
    } catch (e) {
      const errors = e instanceof ConfigError ? e.issues.map(formatIssue) : [(e as Error).message];
      this.options.log.configRejected({ file: old.file, old_version: old.version, errors });
      return "rejected";
    }
  }

  /** Stops accepting, lets sessions finish for up to the drain timeout, then closes the rest. */
  stop(drainTimeoutMs = this.current.drainTimeoutMs): Promise<void> {
    this.stopping ??= (async () => {
      this.options.log.lifecycle("draining", { sessions: this.registry.size, drain_timeout_ms: drainTimeoutMs });
      for (const l of this.listeners) l.stopAccepting();
      const { closed } = await this.registry.drain(drainTimeoutMs, "drain_timeout");
      this.options.log.lifecycle("stopped", { closed_at_timeout: closed });
    })();
    return this.stopping;
  }
}
