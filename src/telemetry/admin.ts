// The admin HTTP server, loopback by default: health, readiness, Prometheus metrics, the effective
// configuration (secrets redacted), live sessions, and (only when enabled) revoking one session.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ParleyError } from "../errors/catalogue.js";
import type { SessionInfo } from "../proxy/registry.js";
import type { DecisionLog } from "./log.js";
import type { Metrics } from "./metrics.js";

export interface AdminSources {
  readiness(): { ready: boolean; checks: Record<string, boolean> };
  config(): unknown;
  sessions(): SessionInfo[];
  /** Ends a live session; false if there is none with that id. */
  revoke(id: string): boolean;
  readonly metrics: Metrics;
  readonly log: DecisionLog;
  /** Write methods (revocation) are refused unless this is true. */
  readonly write: boolean;
}

export interface AdminServer {
  readonly port: number;
  close(): Promise<void>;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body, null, 2) + "\n");
}

async function route(req: IncomingMessage, res: ServerResponse, s: AdminSources): Promise<void> {
  const url = new URL(req.url ?? "/", "http://admin");
  const revoke = /^\/sessions\/([0-9a-f]{1,32})\/revoke$/.exec(url.pathname);
  if (revoke) {
    if (req.method !== "POST") return void json(res, 405, { error: "use POST" });
    if (!s.write) return void json(res, 403, { error: "write methods are disabled (admin.write: false)" });
    const id = revoke[1]!;
    const done = s.revoke(id);
    s.log.lifecycle("admin revoked a session", { session_id: id, found: done, from: req.socket.remoteAddress });
    return done ? void json(res, 200, { revoked: id }) : void json(res, 404, { error: `no live session ${id}` });
  }
  if (req.method !== "GET") return void json(res, 405, { error: "read-only endpoint: use GET" });
  switch (url.pathname) {
    case "/healthz":
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    case "/readyz": {
      const r = s.readiness();
      return void json(res, r.ready ? 200 : 503, r);
    }
    case "/metrics":
      res.writeHead(200, { "content-type": s.metrics.contentType }).end(await s.metrics.text());
      return;
    case "/config":
      return void json(res, 200, s.config());
    case "/sessions":
      return void json(res, 200, { sessions: s.sessions() });
    default:
      return void json(res, 404, { error: "not found", endpoints: ["/healthz", "/readyz", "/metrics", "/config", "/sessions", "POST /sessions/<id>/revoke"] });
  }
}

/** The admin port could not be bound: start-up fails as a whole (src/app/assemble.ts). */
export class AdminListenError extends ParleyError {
  constructor(message: string, options?: ErrorOptions) {
    super("PARLEY_ERR_APPLY", message, options);
  }
}

export function startAdmin(host: string, port: number, sources: AdminSources): Promise<AdminServer> {
  const server: Server = createServer((req, res) => {
    route(req, res, sources).catch((e: unknown) => json(res, 500, { error: (e as Error).message }));
  });
  return new Promise((resolve, reject) => {
    const failed = (e: Error) => reject(new AdminListenError(`admin server: cannot listen: ${e.message}`, { cause: e }));
    server.once("error", failed);
    server.listen(port, host, () => {
      server.off("error", failed);
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}
