// Wiring the SPIFFE Workload API to a sidecar: every update (the complete current SVID and bundles)
// becomes the sidecar's trust overlay; a withdrawn SVID fails the sidecar closed; the source's state
// feeds readiness and metrics. Log levels follow what an operator must act on: a stream given up
// (InvalidArgument: a client bug; Unimplemented on the X.509 profile) is an error, said once; an
// agent without the JWT profile is a warning, said once; a stream reopened after it worked is info.
import type { WorkloadApiSettings } from "../config/load.js";
import { WorkloadApiSource, type StreamError } from "../workloadapi/client.js";
import type { Sidecar } from "../sidecar/sidecar.js";
import type { DecisionLog } from "../telemetry/log.js";

export interface WorkloadApiHooks {
  /** Each SVID applied (the control-plane client's credentials follow it). */
  onIdentity?(svid: { certChainPem: string; keyPem: string }): void;
}

function report(log: DecisionLog, e: StreamError): void {
  const fields = { stream: e.stream, code: e.code, detail: e.message, ...(e.retryInMs !== undefined ? { retry_in_ms: e.retryInMs } : {}) };
  if (e.final && e.stream === "jwt" && e.code === "UNIMPLEMENTED") {
    return void log.logger.warn({ event: "error", ...fields }, "the Workload API does not serve the JWT profile: JWT bundles not fetched (not retried)");
  }
  if (e.final) return void log.error(`Workload API ${e.stream} stream given up (${e.code}: not retried, SPIFFE Workload Endpoint §6)`, fields);
  if (e.retryInMs === 0) return void log.lifecycle("Workload API stream ended: reconnecting at once", fields);
  log.error("Workload API", fields);
}

export function followWorkloadApi(
  sidecar: Sidecar,
  settings: WorkloadApiSettings,
  log: DecisionLog,
  backoff?: { initialMs: number; maxMs: number },
  hooks: WorkloadApiHooks = {},
): WorkloadApiSource {
  let last = "";
  const source = new WorkloadApiSource({
    ...(settings.endpoint !== undefined ? { endpoint: settings.endpoint } : {}),
    ...(settings.hint !== undefined ? { hint: settings.hint } : {}),
    ...(backoff ? { backoff } : {}),
    onUpdate: (u) => {
      if (u.version === last) return;
      last = u.version;
      sidecar.setOverlay({ identity: u.svid, bundles: u.bundles, version: u.version }).then(
        () => {
          hooks.onIdentity?.(u.svid);
          log.lifecycle("identity from the Workload API applied", {
            id: u.svid.id.toString(),
            serial: u.svid.serial,
            fingerprint: u.svid.fingerprint,
            not_after: new Date(u.svid.notAfter).toISOString(),
            trust_domains: u.bundles.trustDomains(),
            version: u.version,
          });
        },
        (e: unknown) => {
          log.identityUpdate("workload_api", "refused");
          log.error("identity from the Workload API refused", { detail: (e as Error).message, version: u.version });
        },
      );
    },
    onWithdrawn: (e) => {
      last = "";
      log.identityUpdate("workload_api", "withdrawn");
      sidecar.own.withdraw(sidecar.inForce, `${e.code}: ${e.message}`);
    },
    onError: (e) => report(log, e),
  });
  sidecar.own.use({ kind: "workload_api", probe: () => source.status });
  source.start();
  return source;
}
