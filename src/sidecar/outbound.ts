// The sidecar's outbound routes (legacy clients' side of a mesh hop), applied in two phases so a
// configuration is all or nothing: bind every new or changed route first (a failure stops what was
// bound and changes nothing), then commit (replaced or dropped routes stop, and so do their sessions).
import type { AddressInfo } from "node:net";
import { formatHostPort } from "../config/units.js";
import { ConnectionPool } from "../proxy/multiplex/pool.js";
import { OutboundListener, type OutboundState } from "../proxy/outbound/listener.js";
import { OutboundSession } from "../proxy/outbound/session.js";
import type { SessionRegistry } from "../proxy/registry.js";
import type { RevocationList } from "../policy/revocation.js";
import { SvidVerifier } from "../spiffe/x509svid.js";
import type { SvidWorkCounts } from "../spiffe/work.js";
import type { DecisionLog } from "../telemetry/log.js";
import { ApplyError, type EffectiveConfig } from "./effective.js";

interface Route {
  readonly listener: OutboundListener;
  readonly spec: string;
  readonly state: OutboundState;
  readonly fresh?: boolean;
  /** The route changed but kept its address: its bound listener carries the new route. */
  readonly changed?: boolean;
}

export type BoundRoutes = ReadonlyMap<string, Route>;

export class OutboundRoutes {
  private routes = new Map<string, { listener: OutboundListener; spec: string }>();
  /** The multiplexed connections of every route with `transport: multiplexed`. */
  private readonly pool = new ConnectionPool();

  constructor(
    private readonly log: DecisionLog,
    private readonly registry: SessionRegistry,
    private readonly now: () => number,
    private readonly svidWork: SvidWorkCounts,
  ) {}

  /**
   * Outbound listeners, phase one: a route at a new address is a new listener, bound here; a route
   * changed otherwise (remote, expected ID, transport, negotiation) keeps its bound listener, which
   * could not be bound twice; an unchanged one is kept. Throws (having stopped what it bound) on a bind failure.
   */
  async bind(next: EffectiveConfig, revocations: RevocationList): Promise<BoundRoutes> {
    const verifier = new SvidVerifier(next.bundles, { maxChainLength: next.maxChainLength, ...next.svidVerification, counters: this.svidWork });
    const routes = new Map<string, Route>();
    try {
      for (const o of next.outbound) {
        const state = { config: o, verifier, identity: next.identity, maxChainLength: next.maxChainLength, revocations };
        const spec = JSON.stringify({ ...o, expectId: o.expectId.toString() });
        const have = this.routes.get(o.name);
        if (have?.spec === spec) {
          routes.set(o.name, { ...have, state });
          continue;
        }
        if (have && formatHostPort(have.listener.state.config.listen) === formatHostPort(o.listen)) {
          routes.set(o.name, { ...have, spec, state, changed: true });
          continue;
        }
        const listener = new OutboundListener(state, this.log, this.registry, this.now, this.pool);
        routes.set(o.name, { listener, spec, state, fresh: true });
        const a = await listener.listen().catch((e: unknown) => {
          throw new ApplyError(`outbound ${o.name}: cannot listen: ${(e as Error).message}`);
        });
        this.log.lifecycle("outbound listener ready", {
          listener: o.name,
          address: `${a.address}:${a.port}`,
          remote: `${o.remote.host}:${o.remote.port}`,
          expect_id: o.expectId.toString(),
        });
      }
    } catch (e) {
      for (const r of routes.values()) if (r.fresh) r.listener.stopAccepting();
      throw e;
    }
    return routes;
  }

  /** Phase two: the routes in force; replaced, changed or dropped ones stop, and so do their sessions. */
  commit(routes: BoundRoutes): void {
    for (const [name, old] of this.routes) {
      const now = routes.get(name);
      if (now?.listener === old.listener && !now.changed) continue;
      if (now?.listener !== old.listener) old.listener.stopAccepting();
      else this.log.lifecycle("outbound route changed", { listener: name, remote: formatHostPort(now.state.config.remote) });
      for (const s of this.registry.all()) if (s.direction === "outbound" && s.listener === name) s.close("listener_removed");
    }
    for (const r of routes.values()) r.listener.update(r.state);
    this.routes = new Map([...routes].map(([name, r]) => [name, { listener: r.listener, spec: r.spec }]));
  }

  /** New outbound sessions are checked against `revocations` from now on. */
  setRevocations(revocations: RevocationList): void {
    for (const r of this.routes.values()) r.listener.update({ ...r.listener.state, revocations });
  }

  /** Outbound sessions whose remote `revocations` names end at once, each logged `revoked` (no grace). */
  revoke(revocations: RevocationList, version: string): void {
    const now = this.now();
    for (const s of this.registry.all()) {
      const hit = s instanceof OutboundSession ? s.revokedBy(revocations, now) : undefined;
      if (!hit) continue;
      const info = s.info(now);
      this.log.revoked({
        session_id: s.id,
        listener: s.listener,
        peer_id: info.peer_id,
        old_version: version,
        new_version: version,
        rule: null,
        reasons: [hit.code],
        grace_ms: 0,
        cause: "revoked",
        revocation: { entry: hit.entry, match: hit.match, reason: hit.reason },
      });
      s.close("revoked");
    }
  }

  /** The multiplexed connections open: per remote, the streams each carries. */
  connections(): number[][] {
    return this.pool.census();
  }

  addresses(): Record<string, AddressInfo> {
    return Object.fromEntries([...this.routes].map(([name, o]) => [name, o.listener.address()]));
  }

  stopAccepting(): void {
    for (const o of this.routes.values()) o.listener.stopAccepting();
    this.pool.closeAll();
  }
}
