// One outbound session once the remote is verified (and granted, if negotiating): registered with the
// sidecar's sessions, so `/sessions` lists it, an operator can close it and a drain ends it.
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { RevocationHit, RevocationList, RevocationSubject } from "../../policy/revocation.js";
import type { DecisionLog } from "../../telemetry/log.js";
import { pump, type PumpCounts } from "../pump.js";
import type { LiveSession, SessionInfo, SessionRegistry } from "../registry.js";

export interface OutboundFacts {
  readonly id: string;
  readonly listener: string;
  readonly remoteId: string;
  readonly source: string;
  readonly startedAt: number;
  /** What a revocation can name of the remote: its SPIFFE ID, leaf fingerprint, the grant it gave. */
  readonly subject: RevocationSubject;
}

export class OutboundSession implements LiveSession {
  readonly direction = "outbound";
  private readonly counts: PumpCounts;
  private ended = false;

  constructor(
    private readonly facts: OutboundFacts,
    private readonly app: Socket,
    /** The remote end: its own mTLS connection, or a CONNECT stream of a pooled one. */
    private readonly remote: Duplex,
    private readonly deps: { readonly log: DecisionLog; readonly registry: SessionRegistry; readonly now: () => number },
  ) {
    this.counts = pump(app, remote, undefined, (end) => this.end(end.reason, "detail" in end ? end.detail : undefined)).counts;
    deps.registry.add(this);
  }

  get id(): string {
    return this.facts.id;
  }

  get listener(): string {
    return this.facts.listener;
  }

  /** Outbound sessions carry no policy decision of this sidecar: nothing to re-decide. */
  recheck(): void {}

  close(reason: string): void {
    this.end(reason);
  }

  /** The entry of `list` naming this session's remote, if one does. */
  revokedBy(list: RevocationList, now: number): RevocationHit | undefined {
    return this.ended ? undefined : list.match(this.facts.subject, now);
  }

  info(now: number): SessionInfo {
    return {
      id: this.id,
      peer_id: this.facts.remoteId,
      listener: this.listener,
      source: this.facts.source,
      stage: this.ended ? "ended" : "pumping",
      started_at: new Date(this.facts.startedAt).toISOString(),
      age_ms: now - this.facts.startedAt,
      bytes_to_upstream: this.counts.toUpstream,
      bytes_to_client: this.counts.toClient,
      expires_at: null,
      grant_id: null,
      txn: null,
    };
  }

  private end(reason: string, detail?: string): void {
    if (this.ended) return;
    this.ended = true;
    this.app.destroy();
    this.remote.destroy();
    this.deps.registry.remove(this.id);
    this.deps.log.sessionEnd({
      session_id: this.id,
      listener: this.listener,
      peer_id: this.facts.remoteId,
      source: this.facts.source,
      bytes_to_upstream: this.counts.toUpstream,
      bytes_to_client: this.counts.toClient,
      duration_ms: this.deps.now() - this.facts.startedAt,
      end_reason: reason,
      ...(detail ? { detail } : {}),
    });
  }
}
