// The sidecar: listeners, their shared session registry and decision log, with an explicit lifecycle.
import type { AddressInfo } from "node:net";
import type { SidecarConfig } from "./config/load.js";
import { SvidVerifier } from "./identity/x509svid.js";
import { InboundListener } from "./proxy/listener.js";
import { SessionRegistry } from "./proxy/registry.js";
import type { DecisionLog } from "./telemetry/log.js";

export interface SidecarOptions {
  readonly log: DecisionLog;
  readonly now?: () => number;
}

export class Sidecar {
  readonly registry = new SessionRegistry();
  private readonly listeners: InboundListener[];
  private stopping: Promise<void> | undefined;

  constructor(
    readonly config: SidecarConfig,
    private readonly options: SidecarOptions,
  ) {
    const verifier = new SvidVerifier(config.bundles, { maxChainLength: config.maxChainLength });
    const tls = { cert: config.identity.certChainPem, key: config.identity.keyPem };
    const deps = { log: options.log, registry: this.registry, now: options.now ?? Date.now };
    this.listeners = config.listeners.map(
      (l) => new InboundListener({ config: l, verifier, attestations: config.attestations, maxChainLength: config.maxChainLength }, tls, deps),
    );
  }

  /** Binds every listener, or none: if one fails, the others are closed and the error is thrown. */
  async start(): Promise<void> {
    try {
      for (const l of this.listeners) {
        const a = await l.listen();
        this.options.log.lifecycle("listener ready", { listener: l.name, address: `${a.address}:${a.port}`, config_version: this.config.version });
      }
    } catch (e) {
      for (const l of this.listeners) l.stopAccepting();
      throw e;
    }
  }

  addresses(): Record<string, AddressInfo> {
    return Object.fromEntries(this.listeners.map((l) => [l.name, l.address()]));
  }

  /** Stops accepting, lets sessions finish for up to the drain timeout, then closes the rest. */
  stop(drainTimeoutMs = this.config.drainTimeoutMs): Promise<void> {
    this.stopping ??= (async () => {
      this.options.log.lifecycle("draining", { sessions: this.registry.size, drain_timeout_ms: drainTimeoutMs });
      for (const l of this.listeners) l.stopAccepting();
      const { closed } = await this.registry.drain(drainTimeoutMs, "drain_timeout");
      this.options.log.lifecycle("stopped", { closed_at_timeout: closed });
    })();
    return this.stopping;
  }
}
