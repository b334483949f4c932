// The admin HTTP server, loopback by default: health, readiness, Prometheus metrics, the effective
// configuration (secrets redacted), live sessions, who called on a given upstream connection, and
// (only when enabled) revoking one session or adding a revocation entry.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { parseRevocationEntry } from "../config/revocation.js";
import { errorLines } from "../config/source.js";
import { ParleyError } from "../errors/catalogue.js";
import { describe, type RevocationEntry } from "../policy/revocation.js";
import type { CallerRecord } from "../proxy/inbound/caller.js";
import type { SessionInfo } from "../proxy/registry.js";
import type { DecisionLog } from "./log.js";
import type { Metrics } from "./metrics.js";

export interface AdminSources {
  readiness(): { ready: boolean; checks: Record<string, boolean> };
  config(): unknown;
  sessions(): SessionInfo[];
  /** Live sessions whose connection to the workload has local port `port`. */
  callers(port: number): CallerRecord[];
  /** Ends a live session; false if there is none with that id. */
  revoke(id: string): boolean;
  /** Puts a revocation entry in force now; resolves to the sessions it ended, undefined when the set is full. */
  addRevocation(entry: RevocationEntry): Promise<number | undefined>;
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
  if (url.pathname === "/revocations") return postRevocation(req, res, s);
  if (req.method !== "GET") return void json(res, 405, { error: "read-only endpoint: use GET" });
  const connection = /^\/connections\/(\d{1,5})$/.exec(url.pathname);
  if (connection) return void whoCalled(res, s, Number(connection[1]), url.searchParams.get("upstream"));
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
      return void json(res, 404, {
        error: "not found",
        endpoints: ["/healthz", "/readyz", "/metrics", "/config", "/sessions", "/connections/<port>", "POST /sessions/<id>/revoke", "POST /revocations"],
      });
  }
}

/** The most a `POST /revocations` body may hold; a longer one is refused (413) unread. */
export const MAX_REVOCATION_BODY = 64 * 1024;

/** The request body, or undefined once more than `max` bytes arrived (the rest is not read). */
async function bodyOf(req: IncomingMessage, max: number): Promise<string | undefined> {
  if (Number(req.headers["content-length"] ?? 0) > max) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * `POST /revocations`: one entry as a JSON object shaped like a configuration entry plus its name
 * (`{ "name", "reason", "until", "match": [...] }`), validated by the configuration's own rules and put
 * in force at once (src/sidecar/revocations.ts says how it lives beside the configuration's).
 */
async function postRevocation(req: IncomingMessage, res: ServerResponse, s: AdminSources): Promise<void> {
  if (req.method !== "POST") return void json(res, 405, { error: "use POST" });
  if (!s.write) return void json(res, 403, { error: "write methods are disabled (admin.write: false)" });
  const text = await bodyOf(req, MAX_REVOCATION_BODY);
  if (text === undefined) {
    res.setHeader("connection", "close");
    return void json(res, 413, { error: `body over ${MAX_REVOCATION_BODY} bytes` });
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    return void json(res, 400, { error: `body: not JSON: ${(e as Error).message}` });
  }
  let entry: RevocationEntry;
  try {
    entry = parseRevocationEntry(data, "body");
  } catch (e) {
    const issues = errorLines(e);
    return void json(res, 400, { error: issues.join("; "), issues });
  }
  const ended = await s.addRevocation(entry);
  if (ended === undefined) return void json(res, 409, { error: "the admin server's revocations are full: drop entries or put them in the configuration" });
  const view = {
    revocation: entry.name,
    reason: entry.reason,
    until: new Date(entry.until).toISOString(),
    match: entry.match.map(describe),
    sessions_ended: ended,
  };
  s.log.lifecycle("admin added a revocation", { ...view, from: req.socket.remoteAddress });
  json(res, 200, view);
}

/** The admin port could not be bound: start-up fails as a whole (src/app/assemble.ts). */
export class AdminListenError extends ParleyError {
  constructor(message: string, options?: ErrorOptions) {
    super("PARLEY_ERR_APPLY", message, options);
  }
}

/**
 * `GET /connections/<port>[?upstream=host:port]`: the session whose upstream connection has that local
 * port (as the workload sees its peer), 404 when none is live. Two workloads at different addresses may
 * see the same port: then `upstream` (the workload's own listening address) picks one, else 409.
 */
function whoCalled(res: ServerResponse, s: AdminSources, port: number, upstream: string | null): void {
  if (port < 1 || port > 65535) return void json(res, 400, { error: `port ${port} is outside 1-65535` });
  const found = s.callers(port).filter((c) => upstream === null || c.upstream === upstream);
  if (found.length === 0) return void json(res, 404, { error: `no live session on upstream local port ${port}${upstream ? ` to ${upstream}` : ""}` });
  if (found.length > 1)
    return void json(res, 409, { error: "several workloads see this port; add ?upstream=host:port", upstreams: found.map((c) => c.upstream) });
  json(res, 200, found[0]);
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
