// What the control plane remembers of its nodes, for the status view: bounded in every direction. A
// disconnected node is forgotten after `ttlMs`; the table holds at most `maxNodes` entries (the oldest
// disconnected one makes room; when every entry is connected a new node is refused); refused claims
// are kept as the last `maxRefusals`. Every string a client chose is clipped.
import { clip } from "../issues.js";

export interface Nack {
  readonly version: string;
  readonly nonce: string;
  readonly at: string;
  readonly code: number;
  readonly message: string;
  readonly issues: readonly string[];
  readonly issue_count: number;
}

export interface NodeStatus {
  node_id: string;
  cluster: string | null;
  parley_version: string | null;
  connected: boolean;
  streams: number;
  peer: string | null;
  /** The SPIFFE ID of the peer's verified SVID (mTLS), else null. */
  peer_id: string | null;
  connected_since: string | null;
  last_seen: string;
  /** The version the node said it runs in its last hello (its claim, not checked). */
  running_version: string | null;
  sent_version: string | null;
  /** The last version this server sent and the node ACKed on the same stream. */
  acked_version: string | null;
  last_nack: Nack | null;
  error: string | null;
}

export interface Refusal {
  readonly at: string;
  readonly node_id: string;
  readonly peer: string;
  readonly peer_id: string | null;
  readonly rule: string;
  readonly message: string;
}

export interface NodeTableOptions {
  readonly maxNodes?: number;
  readonly ttlMs?: number;
  readonly maxRefusals?: number;
  readonly now?: () => number;
}

interface Hello {
  cluster?: string | undefined;
  parley_version?: string | undefined;
  peer: string;
  peer_id?: string | undefined;
  running?: string | undefined;
}

const EMPTY = { running_version: null, sent_version: null, acked_version: null, last_nack: null, error: null };

function withoutClock(n: NodeStatus & { seenAt: number }): NodeStatus {
  const { seenAt, ...status } = n;
  void seenAt;
  return status;
}

const orNull = (s: string | undefined, max: number) => (s ? clip(s, max) : null);

export class NodeTable {
  readonly maxNodes: number;
  readonly ttlMs: number;
  private readonly maxRefusals: number;
  private readonly now: () => number;
  private readonly nodes = new Map<string, NodeStatus & { seenAt: number }>();
  private readonly refusals: Refusal[] = [];

  constructor(o: NodeTableOptions = {}) {
    this.maxNodes = o.maxNodes ?? 10_000;
    this.ttlMs = o.ttlMs ?? 3_600_000;
    this.maxRefusals = o.maxRefusals ?? 100;
    this.now = o.now ?? Date.now;
  }

  /** A stream of `id` opened; false if the table is full of connected nodes. */
  opened(id: string, h: Hello): boolean {
    const now = this.now();
    const at = new Date(now).toISOString();
    let n = this.nodes.get(id);
    if (!n) {
      this.expire(now);
      if (this.nodes.size >= this.maxNodes && !this.evictOne()) return false;
      n = {
        node_id: id,
        cluster: null,
        parley_version: null,
        connected: false,
        streams: 0,
        peer: null,
        peer_id: null,
        connected_since: null,
        last_seen: at,
        seenAt: now,
        ...EMPTY,
      };
      this.nodes.set(id, n);
    }
    Object.assign(n, {
      cluster: orNull(h.cluster, 128),
      parley_version: orNull(h.parley_version, 64),
      connected: true,
      peer: clip(h.peer, 128),
      peer_id: orNull(h.peer_id, 2048),
      connected_since: at,
      last_seen: at,
      seenAt: now,
      running_version: orNull(h.running, 64),
    });
    n.streams++;
    return true;
  }

  closed(id: string): void {
    const n = this.nodes.get(id);
    if (!n) return;
    n.streams--;
    n.connected = n.streams > 0;
    this.touch(n);
  }

  update(id: string, patch: Partial<Pick<NodeStatus, "sent_version" | "acked_version" | "last_nack" | "error">>): void {
    const n = this.nodes.get(id);
    if (!n) return;
    Object.assign(n, patch);
    this.touch(n);
  }

  refused(r: Omit<Refusal, "at">): void {
    const clipped = {
      ...r,
      node_id: clip(r.node_id, 256),
      peer: clip(r.peer, 128),
      peer_id: r.peer_id === null ? null : clip(r.peer_id, 2048),
      message: clip(r.message),
    };
    this.refusals.push({ at: new Date(this.now()).toISOString(), ...clipped });
    if (this.refusals.length > this.maxRefusals) this.refusals.shift();
  }

  /** The nodes (expired ones dropped first), by id. */
  list(): NodeStatus[] {
    this.expire(this.now());
    return [...this.nodes.values()].map(withoutClock).sort((a, b) => (a.node_id < b.node_id ? -1 : a.node_id > b.node_id ? 1 : 0));
  }

  recentRefusals(): readonly Refusal[] {
    return this.refusals;
  }

  get size(): number {
    return this.nodes.size;
  }

  private touch(n: NodeStatus & { seenAt: number }): void {
    n.seenAt = this.now();
    n.last_seen = new Date(n.seenAt).toISOString();
  }

  private expire(now: number): void {
    for (const [id, n] of this.nodes) if (!n.connected && now - n.seenAt > this.ttlMs) this.nodes.delete(id);
  }

  /** Drops the disconnected node seen longest ago; false if every node is connected. */
  private evictOne(): boolean {
    let oldest: (NodeStatus & { seenAt: number }) | undefined;
    for (const n of this.nodes.values()) if (!n.connected && (!oldest || n.seenAt < oldest.seenAt)) oldest = n;
    if (!oldest) return false;
    this.nodes.delete(oldest.node_id);
    return true;
  }
}
