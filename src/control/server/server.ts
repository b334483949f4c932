// The control-plane server: serves each connected sidecar its snapshot over the StreamConfig stream
// (state of the world, xDS-style), pushes every new version, and records what each node ACKed or NACKed.
// Everything a client sends is validated at the edge and everything kept per client is bounded: node
// ids by size and charset, NACK details by count and size, the status table by age and count.
import { randomBytes } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { clip } from "../issues.js";
import { loadControlService, type WireResource } from "../wire.js";
import type { NodeAuthorizer } from "./authorize.js";
import { NodeTable } from "./nodes.js";
import type { SnapshotStore } from "./snapshots.js";

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

/** Node ids: what a file name `nodes/<id>.yaml` may be, at most 256 bytes. */
export const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,255}$/;

/** Checks the hello's node id (after trimming); returns the id or what is wrong with it. */
export function checkNodeId(raw: unknown): { id: string } | { error: string } {
  if (typeof raw !== "string" || raw.trim() === "") return { error: "the first request must carry node.id" };
  const id = raw.trim();
  if (Buffer.byteLength(id) > 256) return { error: `node.id is ${Buffer.byteLength(id)} bytes, over the limit of 256` };
  if (!NODE_ID.test(id)) return { error: "node.id must be letters, digits, '.', '_' or '-', starting with a letter or digit" };
  return { id };
}

export interface ServerOptions {
  /** Decides whether the stream's peer may claim a node id; absent: every claim is allowed (plaintext). */
  readonly authorize?: NodeAuthorizer;
  /** A stream that sends no hello within this time is ended (DEADLINE_EXCEEDED). */
  readonly helloTimeoutMs?: number;
  readonly nodes?: NodeTable;
}

interface Stream {
  readonly call: Call;
  readonly nodeId: string;
  sentNonce: string;
  sentVersion: string | null;
}

/** Issues of a NACK kept (and logged) per node, 256 bytes each: enough to see what is wrong. */
const KEPT_ISSUES = 5;

const fail = (code: grpc.status, message: string) => Object.assign(new Error(message), { code, details: message });

export class ControlPlaneServer {
  private readonly server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
  private readonly streams = new Set<Stream>();
  readonly nodes: NodeTable;

  constructor(
    private readonly store: SnapshotStore,
    private readonly log: Logger,
    private readonly o: ServerOptions = {},
  ) {
    this.nodes = o.nodes ?? new NodeTable();
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
    let ended = false;
    const end = (code: grpc.status, message: string) => {
      ended = true;
      clearTimeout(helloTimer);
      call.emit("error", fail(code, message)); // grpc-js: an 'error' on a server stream sends that status
    };
    const helloTimer = setTimeout(() => end(grpc.status.DEADLINE_EXCEEDED, "no hello"), this.o.helloTimeoutMs ?? 10_000);
    helloTimer.unref();
    call.on("data", (req: WireRequest) => {
      if (ended) return;
      if (stream) return void this.answered(stream, req);
      clearTimeout(helloTimer);
      const checked = checkNodeId(req.node?.id);
      if ("error" in checked) return void end(grpc.status.INVALID_ARGUMENT, checked.error);
      const refusal = this.o.authorize?.(checked.id, call);
      const peer = call.getPeer();
      if (refusal && !refusal.ok) {
        this.nodes.refused({ node_id: checked.id, peer, peer_id: refusal.peerId ?? null, rule: refusal.rule, message: refusal.message });
        this.log.warn({ event: "node_refused", node_id: checked.id, peer, peer_id: refusal.peerId ?? null, rule: refusal.rule }, refusal.message);
        return void end(grpc.status.PERMISSION_DENIED, `${refusal.rule}: ${refusal.message}`);
      }
      const peerId = refusal?.ok ? refusal.peerId : undefined;
      if (
        !this.nodes.opened(checked.id, {
          cluster: req.node?.cluster,
          parley_version: req.node?.parley_version,
          peer,
          peer_id: peerId,
          running: req.version_info,
        })
      ) {
        return void end(grpc.status.RESOURCE_EXHAUSTED, "too many nodes connected");
      }
      stream = { call, nodeId: checked.id, sentNonce: "", sentVersion: req.version_info || null };
      this.streams.add(stream);
      this.log.info(
        { event: "node_connected", node_id: checked.id, peer, peer_id: peerId ?? null, version: clip(req.version_info ?? "", 64) || null },
        "node connected",
      );
      this.send(stream);
    });
    const closed = () => {
      clearTimeout(helloTimer);
      if (!stream || !this.streams.delete(stream)) return;
      this.nodes.closed(stream.nodeId);
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

  private send(s: Stream): void {
    const snap = this.store.forNode(s.nodeId);
    if ("error" in snap) return void this.nodes.update(s.nodeId, { error: snap.error });
    this.nodes.update(s.nodeId, { error: null });
    if (snap.version === s.sentVersion) return;
    s.sentVersion = snap.version;
    s.sentNonce = randomBytes(8).toString("hex");
    this.nodes.update(s.nodeId, { sent_version: snap.version });
    s.call.write({ version_info: snap.version, nonce: s.sentNonce, resources: snap.resources });
  }

  private answered(s: Stream, req: WireRequest): void {
    this.nodes.update(s.nodeId, {});
    // An answer to anything but the latest response is stale: a newer push is already on its way.
    if (req.response_nonce !== s.sentNonce || s.sentVersion === null) return;
    if (req.error_detail) return void this.nacked(s, req);
    // An ACK names the version it applies: only the one sent with this nonce counts.
    if (req.version_info !== s.sentVersion) {
      this.log.warn(
        { event: "ack_mismatch", node_id: s.nodeId, sent: s.sentVersion, claimed: clip(req.version_info ?? "", 64) },
        "ACK for a version not sent: ignored",
      );
      return;
    }
    this.nodes.update(s.nodeId, { acked_version: s.sentVersion });
    this.log.info({ event: "ack", node_id: s.nodeId, version: s.sentVersion }, "node applied a push");
  }

  private nacked(s: Stream, req: WireRequest): void {
    const d = req.error_detail ?? {};
    const all = Array.isArray(d.issues) ? d.issues : [];
    const issues = { items: all.slice(0, KEPT_ISSUES).map((l) => clip(l, 256)), count: all.length };
    const nack = {
      version: s.sentVersion ?? "",
      nonce: s.sentNonce,
      at: new Date().toISOString(),
      code: typeof d.code === "number" ? d.code : 0,
      message: clip(d.message ?? ""),
      issues: issues.items,
      issue_count: issues.count,
    };
    this.nodes.update(s.nodeId, { last_nack: nack });
    this.log.warn({ event: "nack", node_id: s.nodeId, running: clip(req.version_info ?? "", 64) || null, ...nack }, "node rejected a push");
  }
}
