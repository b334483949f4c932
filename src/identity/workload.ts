// Wiring the SPIFFE Workload API to a sidecar: every update (the complete current SVID and bundles)
// becomes the sidecar's trust overlay; failures are logged and retried by the source.
import type { WorkloadApiSettings } from "../config/load.js";
import { WorkloadApiSource } from "../workloadapi/client.js";
import type { Sidecar } from "../sidecar/sidecar.js";
import type { DecisionLog } from "../telemetry/log.js";

export function followWorkloadApi(
  sidecar: Sidecar,
  settings: WorkloadApiSettings,
  log: DecisionLog,
  backoff?: { initialMs: number; maxMs: number },
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
        () =>
          log.lifecycle("identity from the Workload API applied", {
            id: u.svid.id.toString(),
            not_after: new Date(u.svid.notAfter).toISOString(),
            trust_domains: u.bundles.trustDomains(),
            version: u.version,
          }),
        (e: Error) => log.error("identity from the Workload API refused", { detail: e.message, version: u.version }),
      );
    },
    onError: (e) =>
      log.error("Workload API", { stream: e.stream, code: e.code, detail: e.message, ...(e.retryInMs !== undefined ? { retry_in_ms: e.retryInMs } : {}) }),
  });
  source.start();
  return source;
}
