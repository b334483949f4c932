// `parley control-plane`: the snapshot store over a directory, the gRPC server, a watcher that pushes
// every valid change, and an HTTP JSON status view of the nodes. The status view is bounded (at most
// STATUS_NODES entries in a body) and shows versions and outcomes, never resource contents.
import { watch, type FSWatcher } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import * as grpcjs from "@grpc/grpc-js";
import type { BundleSet } from "../../spiffe/x509bundle.js";
import type { SvidVerifier } from "../../spiffe/x509svid.js";
import { svidAuthorizer } from "./authorize.js";
import { NodeTable, type NodeTableOptions } from "./nodes.js";
import { ControlPlaneServer } from "./server.js";
import { SnapshotStore } from "./snapshots.js";

/** Most node entries in one /status body; `nodes_total` says how many there are. */
export const STATUS_NODES = 1000;

export interface ControlPlaneOptions {
  readonly dir: string;
  /** gRPC address, host:port. */
  readonly listen: string;
  /** Status HTTP address; none when absent. */
  readonly admin?: { host: string; port: number };
  readonly credentials?: grpc.ServerCredentials;
  /** mTLS: verifies each client's X509-SVID and binds node ids to SPIFFE IDs (authorize.ts). */
  readonly clientSvids?: SvidVerifier;
  readonly nodes?: NodeTableOptions;
  readonly helloTimeoutMs?: number;
  readonly log: Logger;
  /** How long file changes must settle before they are read. */
  readonly settleMs?: number;
}

export interface ControlPlane {
  readonly server: ControlPlaneServer;
  readonly store: SnapshotStore;
  readonly port: number;
  readonly adminPort: number | undefined;
  /** Re-reads the directory now; pushes if the file set is valid. */
  reload(): boolean;
  close(): Promise<void>;
}

/**
 * TLS with the control plane's own certificate; with client bundles, client certificates are required
 * and OpenSSL checks them against every root of every bundle, the SPIFFE check (authorize.ts) then
 * holding each peer to its own trust domain's bundle.
 */
export function serverCredentials(certChainPem: Buffer, keyPem: Buffer, clientBundles?: BundleSet): grpc.ServerCredentials {
  const roots = clientBundles
    ? Buffer.from(
        clientBundles
          .all()
          .flatMap((b) => b.roots.map((r) => r.x509.toString()))
          .join("\n"),
      )
    : null;
  return grpcjs.ServerCredentials.createSsl(roots, [{ cert_chain: certChainPem, private_key: keyPem }], clientBundles !== undefined);
}

export async function startControlPlane(o: ControlPlaneOptions): Promise<ControlPlane> {
  const store = new SnapshotStore(o.dir);
  const first = store.load();
  if (!first.ok) throw new Error(`invalid resource files in ${o.dir}:\n${first.errors.join("\n")}`);
  const svids = o.clientSvids;
  const authorize = svids ? svidAuthorizer({ verifier: () => svids, binding: (id) => store.binding(id) }) : undefined;
  const server = new ControlPlaneServer(store, o.log, {
    nodes: new NodeTable(o.nodes),
    ...(authorize ? { authorize } : {}),
    ...(o.helloTimeoutMs !== undefined ? { helloTimeoutMs: o.helloTimeoutMs } : {}),
  });
  const port = await server.listen(o.listen, o.credentials);
  let lastError: { at: string; errors: string[] } | null = null;
  const reload = (): boolean => {
    const r = store.load();
    if (!r.ok) {
      lastError = { at: new Date().toISOString(), errors: r.errors };
      o.log.error({ event: "snapshot_rejected", errors: r.errors }, "resource files are invalid: nothing pushed, the previous snapshot stays");
      return false;
    }
    lastError = null;
    if (r.changed.length > 0) {
      o.log.info({ event: "snapshot_updated", changed: r.changed }, "new snapshot; pushing to connected nodes");
      server.pushAll();
    }
    return true;
  };
  let timer: NodeJS.Timeout | undefined;
  const watcher: FSWatcher = watch(o.dir, { recursive: true }, () => {
    clearTimeout(timer);
    timer = setTimeout(reload, o.settleMs ?? 150);
  });
  let http: Server | undefined;
  const adminAt = o.admin;
  if (adminAt) {
    const h = createServer((req, res) => {
      if (req.method === "GET" && req.url === "/status") {
        const nodes = server.nodes.list();
        const body = {
          dir: o.dir,
          connected_streams: server.connectedStreams,
          nodes_with_overrides: store.nodesWithOverrides().slice(0, STATUS_NODES),
          last_rejected: lastError,
          nodes_total: nodes.length,
          nodes: nodes.slice(0, STATUS_NODES),
          refusals: server.nodes.recentRefusals(),
        };
        res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body, null, 2));
      } else if (req.method === "GET" && req.url === "/healthz") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      } else res.writeHead(404).end();
    });
    await new Promise<void>((resolve, reject) => h.once("error", reject).listen(adminAt.port, adminAt.host, () => resolve()));
    http = h;
  }
  o.log.info({ event: "control_plane_ready", port, admin_port: (http?.address() as AddressInfo | undefined)?.port ?? null, dir: o.dir }, "control plane ready");
  return {
    server,
    store,
    port,
    adminPort: (http?.address() as AddressInfo | undefined)?.port,
    reload,
    close() {
      clearTimeout(timer);
      watcher.close();
      http?.close();
      server.forceClose();
      return Promise.resolve();
    },
  };
}
