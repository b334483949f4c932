// What every running sidecar gets besides its listeners: the decision log with its metrics, and the
// admin server over them. One place for `parley run` (file or control plane) and the demo.
import type { AdminSettings, LogSettings } from "../config/load.js";
import { parseHostPort } from "../config/units.js";
import { configView } from "../config/view.js";
import { identityView } from "../identity/status.js";
import type { Sidecar } from "../sidecar/sidecar.js";
import { startAdmin, type AdminServer } from "../telemetry/admin.js";
import { bufferedDestination, createLogger, DecisionLog } from "../telemetry/log.js";
import { Metrics } from "../telemetry/metrics.js";
import type { DestinationStream } from "pino";

export interface Operations {
  readonly log: DecisionLog;
  readonly metrics: Metrics;
  /** Binds the admin server (if configured) over `sidecar`. */
  serveAdmin(sidecar: Sidecar, extra?: { configFresh?: () => boolean; controlPlaneConnected?: () => number }): Promise<AdminServer | undefined>;
  close(): Promise<void>;
}

export function operations(log: LogSettings, admin: AdminSettings, destination?: DestinationStream): Operations {
  let sidecar: Sidecar | undefined;
  const metrics = new Metrics({
    sessionsByListener: () => sidecar?.registry.countsByListener() ?? {},
    ownSvidSecondsLeft: () => (sidecar?.configured ? (sidecar.config.identity.notAfter - Date.now()) / 1000 : undefined),
    identity: () => sidecar?.identityStatus(),
    configVersion: () => (sidecar?.configured ? sidecar.config.version : undefined),
    sharedLimitsState: () => sidecar?.sharedLimitsStatus()?.state,
  });
  const decisionLog = new DecisionLog(createLogger(log.level, destination ?? bufferedDestination(log.buffer)), {
    metrics,
    categories: log.categories,
    ...(log.deny_cap ? { denyCap: { burst: log.deny_cap.burst, windowMs: log.deny_cap.window } } : {}),
  });
  let server: AdminServer | undefined;
  return {
    log: decisionLog,
    metrics,
    async serveAdmin(s, extra = {}) {
      sidecar = s;
      if (extra.controlPlaneConnected) metrics.trackControlPlane(extra.controlPlaneConnected);
      if (admin.listen === false) return undefined;
      const { host, port } = parseHostPort(admin.listen)!;
      server = await startAdmin(host, port, {
        readiness: () => {
          const r = s.readiness();
          if (!extra.configFresh) return r;
          const checks = { ...r.checks, config_fresh: r.checks.config_fresh! && extra.configFresh() };
          return { ...r, ready: Object.values(checks).every(Boolean), checks };
        },
        config: () => ({
          ...(s.configured
            ? configView(s.config, s.identityStatus())
            : { version: null, note: "no configuration yet", identity: identityView(s.identityStatus()) }),
          admin_revocations: s.adminRevocations.view(Date.now()),
        }),
        sessions: () => s.registry.all().map((x) => x.info(Date.now())),
        callers: (port) => s.registry.atUpstreamPort(port).flatMap((x) => x.caller?.() ?? []),
        revoke: (id) => s.revokeSession(id),
        addRevocation: (entry) => s.addRevocation(entry),
        metrics,
        log: decisionLog,
        write: admin.write,
      });
      decisionLog.lifecycle("admin server ready", { address: `${host}:${server.port}`, write: admin.write });
      return server;
    },
    async close() {
      decisionLog.close();
      await server?.close();
    },
  };
}
