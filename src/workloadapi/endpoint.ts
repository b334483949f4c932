// Where the Workload API is: the SPIFFE_ENDPOINT_SOCKET URI (SPIFFE Workload Endpoint §4) turned into
// a gRPC target. `unix` takes an absolute path and no authority (`unix:/path`, or `unix:///path` with
// its empty authority); `tcp` takes an IP address and a port and nothing else.
import { isIP } from "node:net";
import { ParleyError } from "../errors/catalogue.js";

export class WorkloadApiError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_WORKLOAD_API", message);
  }
}

/** `unix:/path`, `unix:///path` or `tcp://IP:port` → a gRPC target; anything else throws, naming the rule. */
export function workloadTarget(endpoint: string): string {
  if (endpoint.startsWith("unix:")) {
    // §4: "the authority component MUST NOT be set"; `//` followed by `/` is an empty authority.
    const rest = endpoint.slice("unix:".length);
    const path = rest.startsWith("//") ? rest.slice(2) : rest;
    if (!path.startsWith("/")) throw new WorkloadApiError(`endpoint ${endpoint}: unix needs an absolute path and no authority (unix:/path or unix:///path)`);
    if (/[?#]/.test(path)) throw new WorkloadApiError(`endpoint ${endpoint}: unix takes a path only, no query or fragment`);
    return `unix://${path}`;
  }
  if (endpoint.startsWith("tcp://")) {
    const m = /^tcp:\/\/([^/?#]+):(\d+)$/.exec(endpoint);
    const host = m?.[1]?.replace(/^\[|\]$/g, "");
    if (!m || !host || isIP(host) === 0) throw new WorkloadApiError(`endpoint ${endpoint}: tcp:// must name an IP address and a port, nothing else`);
    return isIP(host) === 6 ? `[${host}]:${m[2]}` : `${host}:${m[2]}`;
  }
  throw new WorkloadApiError(`endpoint ${endpoint}: expected unix:/path, unix:///path or tcp://IP:port`);
}
