// What a control plane may not push although a file may say it: rules for pushed resources only,
// checked by both ends (the server refuses the file that says it, with its line; the sidecar NACKs a
// push that says it, from any server).
//
// An outbound route takes plaintext and originates mTLS with the sidecar's own SVID: bound anywhere but
// loopback it lets any host on the network act as this workload. A file is written by the host's own
// operator; a push comes from afar, so a pushed route must listen on loopback (fail closed).
import { isLoopback, parseHostPort } from "../config/units.js";

export interface PushIssue {
  readonly path: ReadonlyArray<string | number>;
  readonly message: string;
}

type Obj = Record<string, unknown>;

/** The problems of resources (YAML shape) that a file may hold but a control plane may not push. */
export function pushIssues(raw: Obj): PushIssue[] {
  const issues: PushIssue[] = [];
  const routes = Array.isArray(raw.outbound) ? (raw.outbound as unknown[]) : [];
  routes.forEach((route, i) => {
    const o = (route ?? {}) as Obj;
    const listen = typeof o.listen === "string" ? parseHostPort(o.listen) : undefined;
    if (listen && !isLoopback(listen.host))
      issues.push({
        path: ["outbound", i, "listen"],
        message: `a pushed outbound route listens on loopback only (127.0.0.0/8, ::1, localhost), not ${listen.host}`,
      });
    if (o.negotiate !== undefined)
      issues.push({
        path: ["outbound", i, "negotiate"],
        message: "negotiation is file-only (its tokens are files on the sidecar's host); it cannot be pushed",
      });
  });
  return issues;
}
