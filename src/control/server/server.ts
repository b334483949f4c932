// The control-plane server: serves each connected sidecar its snapshot over the StreamConfig stream
// (state of the world, xDS-style), pushes every new version, and records what each node ACKed or NACKed.
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { SnapshotStore } from "./snapshots.js";
import { loadControlService, type WireResource } from "../wire.js";

interface WireRequest {
  node?: { id?: string; cluster?: string; parley_version?: string };
  version_info?: string;
  response_nonce?: string;
  error_detail?: { code?: number; message?: string; issues?: string[] };
}

interface WireResponse {
  version_info: string;
  nonce: string;
  resources: readonly WireResource[];
}

type Call = grpc.ServerDuplexStream<WireRequest, WireResponse>;

export interface Nack {
  readonly version: string;
  readonly nonce: string;
  readonly at: string;
  readonly message: string;
  readonly issues: readonly string[];
}

/** What the server knows of one node, kept after it disconnects (for the status view). */
export interface NodeStatus {
  node_id: string;
  cluster: string | null;
  parley_version: string | null;
  connected: boolean;
  streams: number;
  peer: string | null;
  connected_since: string | null;
  last_seen: string;
  sent_version: string | null;
  acked_version: string | null;
  last_nack: Nack | null;
  error: string | null;
}

interface Stream {
  readonly call: Call;
  readonly nodeId: string;
  sentNonce: string;
  sentVersion: string | null;
}

export class ControlPlaneServer {
  private readonly server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
  private readonly streams = new Set<Stream>();
  private readonly nodes = new Map<string, NodeStatus>();

  constructor(
    private readonly store: SnapshotStore,
    private readonly log: Logger,
  ) {
    const service = loadControlService().service;
    this.server.addService(service, { StreamConfig: (call: Call) => this.onStream(call) });
  }

  /** Binds; resolves with the port. */
  listen(address: string, credentials = grpc.ServerCredentials.createInsecure()): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.bindAsync(address, credentials, (err, port) => (err ? reject(err) : resolve(port)));
    });
  }

  /** Sends every connected node whose snapshot changed its new version. */
  pushAll(): void {
    for (const s of this.streams) this.send(s);
  }

  status(): NodeStatus[] {
    return [...this.nodes.values()].sort((a, b) => a.node_id.localeCompare(b.node_id));
  }

  get connectedStreams(): number {
    return this.streams.size;
  }

  close(): Promise<void> {
    for (const s of this.streams) s.call.end();
    return new Promise((resolve) => this.server.tryShutdown(() => resolve()));
  }

  forceClose(): void {
    this.server.forceShutdown();
  }

  private onStream(call: Call): void {
    call.sendMetadata(new grpc.Metadata()); // lets the sidecar see the stream is up before any push
    let stream: Stream | undefined;
    call.on("data", (req: WireRequest) => {
      if (!stream) {
        const id = req.node?.id;
        if (!id) {
          call.destroy(Object.assign(new Error("the first request must carry node.id"), { code: grpc.status.INVALID_ARGUMENT }));
          return;
        }
        stream = { call, nodeId: id, sentNonce: "", sentVersion: req.version_info || null };
        this.streams.add(stream);
        this.opened(stream, req, call.getPeer());
        this.send(stream);
        return;
      }
      this.answered(stream, req);
    });
    const closed = () => {
      if (!stream || !this.streams.delete(stream)) return;
      const n = this.nodes.get(stream.nodeId)!;
      n.streams--;
      n.connected = n.streams > 0;
      n.last_seen = new Date().toISOString();
      this.log.info({ event: "node_disconnected", node_id: stream.nodeId }, "node disconnected");
    };
    call.on("end", () => {
      closed();
      call.end();
    });
    call.on("error", closed);
    call.on("close", closed);
    call.on("cancelled", closed);
  }

  private opened(s: Stream, req: WireRequest, peer: string): void {
    const now = new Date().toISOString();
    const prev = this.nodes.get(s.nodeId);
    const n: NodeStatus = prev ?? {
      node_id: s.nodeId,
      cluster: null,
      parley_version: null,
      connected: false,
      streams: 0,
      peer: null,
      connected_since: null,
      last_seen: now,
      sent_version: null,
      acked_version: null,
      last_nack: null,
      error: null,
    };
    Object.assign(n, {
      cluster: req.node?.cluster || null,
      parley_version: req.node?.parley_version || null,
      connected: true,
      peer,
      connected_since: now,
      last_seen: now,
    });
    n.streams++;
    // A sidecar resuming with a version it already runs has, in effect, ACKed it.
    if (req.version_info) n.acked_version = req.version_info;
    this.nodes.set(s.nodeId, n);
    this.log.info({ event: "node_connected", node_id: s.nodeId, peer, version: req.version_info || null }, "node connected");
  }

  private send(s: Stream): void {
    const snap = this.store.forNode(s.nodeId);
    const n = this.nodes.get(s.nodeId)!;
    if ("error" in snap) {
      n.error = snap.error;
      return;
    }
    n.error = null;
    if (snap.version === s.sentVersion) return;
    s.sentVersion = snap.version;
    s.sentNonce = randomBytes(8).toString("hex");
    n.sent_version = snap.version;
    s.call.write({ version_info: snap.version, nonce: s.sentNonce, resources: snap.resources });
  }

  private answered(s: Stream, req: WireRequest): void {
    const n = this.nodes.get(s.nodeId)!;
    n.last_seen = new Date().toISOString();
    // An answer to anything but the latest response is stale: a newer push is already on its way.
    if (req.response_nonce !== s.sentNonce) return;
    if (req.error_detail) {
      n.last_nack = {
        version: s.sentVersion ?? "",
        nonce: s.sentNonce,
        at: n.last_seen,
        message: req.error_detail.message ?? "",
        issues: req.error_detail.issues ?? [],
      };
      this.log.warn(
        {
          event: "nack",
          node_id: s.nodeId,
          version: s.sentVersion,
          running: req.version_info || null,
          message: n.last_nack.message,
          issues: n.last_nack.issues,
        },
        "node rejected a push",
      );
      return;
    }
    n.acked_version = req.version_info ?? null;
    this.log.info({ event: "ack", node_id: s.nodeId, version: n.acked_version }, "node applied a push");
  }
}
