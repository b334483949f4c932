// One CONNECT stream of a multiplexed connection as an inbound session's client side: its bytes are
// the stream's DATA frames; its first words are `:status 200` (once the session is allowed and the
// workload connected), its last a refusal status with a `parley-reason` header, or RST_STREAM. A
// stream with a `parley-request` header negotiates: the grant rides on the 200 (`parley-grant`), a
// denial on the refusal (`parley-denial`), each the payload of the frame it stands for.
import { sensitiveHeaders, type ServerHttp2Stream } from "node:http2";
import type { TLSSocket } from "node:tls";
import type { Deny } from "../../policy/decision.js";
import type { ClientSide } from "../inbound/client.js";
import type { ConnectionFacts } from "../inbound/facts.js";
import { DENIAL_HEADER, decodeRequestField, GRANT_HEADER, MAX_ANSWER_VALUE, payloadValue } from "../../negotiation/headers.js";
import type { Denial } from "../../negotiation/negotiate.js";
import { denialStatus, endStatus, HTTP2_HEADER_STATUS, NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, REASON_HEADER } from "./wire.js";

/** What a stream tells its connection. */
export interface ConnectionEvents {
  /** A stream was refused (denied, 400, 405, 431) or ended before its 200. */
  refused(): void;
  /** The connection's peer is no longer admitted. */
  peerGone(): void;
}

/** Session ends that say the connection's peer is no longer admitted (revoked, its certificate expired). */
const PEER_GONE: ReadonlySet<string> = new Set(["revoked", "cert_expired"]);

export class StreamSide implements ClientSide {
  readonly facts: ConnectionFacts;
  /** The connection has been told of this stream's refusal. */
  private counted = false;

  constructor(
    readonly io: ServerHttp2Stream,
    readonly tls: TLSSocket,
    connection: ConnectionFacts,
    target: string,
    /** What the connection is told: each refusal (one that only collects them is let go), and a peer gone. */
    private readonly told: ConnectionEvents,
    /** The values of its `parley-request` fields (none: the stream does not negotiate). */
    private readonly request: readonly string[] = [],
  ) {
    this.facts = { ...connection, target };
  }

  get negotiates(): boolean {
    return this.request.length > 0;
  }

  /** The header is all there is to read: no wait, so no frame timeout. */
  readRequest(): Promise<Record<string, unknown>> {
    return new Promise((resolve) => resolve(decodeRequestField(this.request)));
  }

  /** A malformed request is 400, like any malformed request; every other refusal by its decision. */
  refuse(decision: Deny, denial: Denial | undefined): void {
    this.refused();
    const status = denial?.code === "bad_frame" ? 400 : denialStatus(decision);
    this.answer(status, decision.reasons.join(","), denial);
  }

  carries(grant: Buffer): boolean {
    return payloadValue(grant).length <= MAX_ANSWER_VALUE;
  }

  accept(grant?: Buffer): void {
    if (this.io.destroyed || this.io.headersSent) return;
    // The grant is a credential: a never-indexed literal (RFC 7541 §7.1.3), as the request's tokens are.
    this.io.respond({ [HTTP2_HEADER_STATUS]: 200, ...(grant ? { [GRANT_HEADER]: payloadValue(grant), [sensitiveHeaders]: [GRANT_HEADER] } : {}) });
  }

  /** Before its 200 the stream is answered with a status; after, reset (RST_STREAM CANCEL) if still open. */
  close(reason: string, last?: Denial): void {
    // Every stream of the connection is decided on the same certificate: no new one would be admitted.
    if (PEER_GONE.has(reason)) this.told.peerGone();
    // Ended before its 200 (reset by the client, the workload gone, a grant too large): it cost a
    // decision and gave no session, so it counts towards the connection's refusals as a denial does.
    if (!this.io.headersSent) this.refused();
    if (this.io.destroyed) return;
    if (!this.io.headersSent) return void this.answer(endStatus(reason), reason, last);
    if (!this.io.closed) this.io.close(NGHTTP2_CANCEL);
  }

  /** Tells the connection once per stream, however many ways the stream ends unanswered. */
  private refused(): void {
    if (this.counted) return;
    this.counted = true;
    this.told.refused();
  }

  /**
   * A complete response, then RST_STREAM NO_ERROR: RFC 9113 §8.1 lets a server that has answered ask the
   * client to stop sending its request this way.
   */
  private answer(status: number, reason: string, denial?: Denial): void {
    if (this.io.destroyed) return;
    const value = denial && payloadValue(denial.frame);
    // A denial too long for a header (a message naming a long token) goes without it: the status and reason say enough.
    const carried = value !== undefined && value.length <= MAX_ANSWER_VALUE ? { [DENIAL_HEADER]: value } : {};
    this.io.respond({ [HTTP2_HEADER_STATUS]: status, [REASON_HEADER]: reason, ...carried }, { endStream: true });
    this.io.close(NGHTTP2_NO_ERROR);
  }
}
