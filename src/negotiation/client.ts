// The client side of negotiation: `connect` opens mTLS with ALPN parley/1, sends one request frame,
// and resolves with the socket (now carrying application bytes) and the grant, or rejects with the
// denial.
import { ParleyError } from "../errors/catalogue.js";
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from "node:tls";
import { ALPN, decodeFrame, encodeFrame, FrameType, NegotiationError, type DenialCode } from "./frame.js";

export interface ConnectOptions {
  readonly host: string;
  readonly port: number;
  /** PEM: the client's certificate chain, its key, and the CA to verify the sidecar. */
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly servername?: string;
  /** The sidecar's SPIFFE ID: when given, its certificate must carry exactly this URI SAN (hostnames are not checked). */
  readonly expectId?: string;
  readonly roles?: readonly string[];
  readonly purpose?: string;
  readonly attestationToken?: string;
  readonly approvalToken?: string;
  readonly timeoutMs?: number;
}

export interface Grant {
  readonly grant: string;
  readonly grant_id: string;
  readonly roles: readonly string[];
  readonly expires_at: string;
  readonly expires_because: string;
  readonly obligations: Record<string, unknown>;
}

export class DeniedError extends ParleyError {
  constructor(
    readonly denial: DenialCode,
    readonly reasons: readonly string[],
    message: string,
    /** The finer rule that failed (token, frame or SVID rule), when the denial names one. */
    readonly rule?: string,
  ) {
    const why = [...reasons, ...(rule !== undefined && !reasons.includes(rule) ? [rule] : [])];
    super("PARLEY_ERR_DENIED", `parley denied the session (${denial}${why.length ? `: ${why.join(", ")}` : ""}): ${message}`);
  }
}

export interface GrantRequest {
  readonly roles?: readonly string[];
  readonly purpose?: string;
  readonly attestationToken?: string;
  readonly approvalToken?: string;
}

/** The request frame for `r`; throws NegotiationError when its payload is over the bound. */
export function requestFrame(r: GrantRequest): Buffer {
  return encodeFrame(FrameType.Request, requestPayload(r));
}

/**
 * On an established parley/1 connection: sends `request` (a request frame, requestFrame) and waits for
 * the answer. Resolves with the grant (the socket paused, any bytes after the frame put back), or
 * rejects (DeniedError for a denial) after destroying the socket.
 */
export function requestGrant(socket: TLSSocket, request: Buffer, timeoutMs = 5000): Promise<Grant> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`no answer from parley within ${timeoutMs} ms`)), timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", fail);
    };
    const fail = (e: Error) => {
      cleanup();
      socket.destroy();
      reject(e);
    };
    const onClose = () => fail(new Error("parley closed the connection before answering"));
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      let frame: ReturnType<typeof decodeFrame>;
      try {
        frame = decodeFrame(buf);
      } catch (e) {
        return void fail(e as NegotiationError);
      }
      if (!frame) return;
      cleanup();
      socket.pause();
      const rest = buf.subarray(frame.size);
      if (rest.length > 0) socket.unshift(rest);
      if (frame.type === FrameType.Grant) {
        let grant: Grant;
        try {
          grant = grantPayload(frame.payload, "the grant frame");
        } catch (e) {
          return void fail(e as NegotiationError);
        }
        return void resolve(grant);
      }
      socket.destroy();
      reject(deniedBy(frame.payload));
    };
    socket.on("data", onData);
    socket.once("close", onClose);
    socket.once("error", fail);
    socket.write(request);
  });
}

/** The error a denial payload (a frame's, or a stream's `parley-denial`) tells; fields of the wrong type are dropped. */
export function deniedBy(payload: Record<string, unknown>): DeniedError {
  const d = payload as { code?: DenialCode; reasons?: unknown; rule?: string; message?: unknown };
  return new DeniedError(d.code ?? "denied", Array.isArray(d.reasons) ? (d.reasons as string[]) : [], typeof d.message === "string" ? d.message : "", d.rule);
}

/** A grant's payload, checked for what a client reads of it; NegotiationError (bad_frame) naming `where` if not. */
export function grantPayload(p: Record<string, unknown>, where: string): Grant {
  if (typeof p.grant !== "string" || typeof p.grant_id !== "string") throw new NegotiationError("bad_frame", `${where} holds no grant`);
  if (!Array.isArray(p.roles) || !p.roles.every((r) => typeof r === "string"))
    throw new NegotiationError("bad_frame", `${where}: roles is not a list of names`);
  return p as unknown as Grant;
}

/** The request payload for `r`, as a frame or a multiplexed stream's header carries it. */
export function requestPayload(r: GrantRequest): Record<string, unknown> {
  return {
    roles: r.roles ?? [],
    ...(r.purpose !== undefined ? { purpose: r.purpose } : {}),
    ...(r.attestationToken !== undefined ? { attestation_token: r.attestationToken } : {}),
    ...(r.approvalToken !== undefined ? { approval_token: r.approvalToken } : {}),
  };
}

/**
 * Opens mTLS with ALPN parley/1 and negotiates. Resolves with the socket (paused: pipe it or resume
 * it; it carries application bytes now) and the grant; rejects with DeniedError on a denial.
 */
export function connect(o: ConnectOptions): Promise<{ socket: TLSSocket; grant: Grant }> {
  return new Promise((resolve, reject) => {
    // A request over the bound rejects here, before any connection is opened.
    const request = requestFrame(o);
    const socket = tlsConnect({
      host: o.host,
      port: o.port,
      cert: o.cert,
      key: o.key,
      ca: o.ca,
      servername: o.servername ?? "localhost",
      ALPNProtocols: [ALPN],
      ...(o.expectId !== undefined ? { checkServerIdentity: (_host: string, cert: PeerCertificate) => spiffeIdMismatch(cert, o.expectId!) } : {}),
    });
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      socket.off("error", reject);
      if (socket.alpnProtocol !== ALPN) {
        socket.destroy();
        return void reject(new Error(`the server did not select ${ALPN}`));
      }
      requestGrant(socket, request, o.timeoutMs).then((grant) => resolve({ socket, grant }), reject);
    });
  });
}

/**
 * How a client verifies the sidecar (docs/negotiation.md, "The sidecar's identity"): the chain against
 * its trust bundle (by TLS, `ca`), then the leaf's one URI SAN equal to the expected SPIFFE ID (X509-SVID
 * §2, §5.2), in place of a hostname check.
 */
export function spiffeIdMismatch(cert: PeerCertificate, expected: string): Error | undefined {
  const uris = (cert.subjectaltname ?? "")
    .split(", ")
    .filter((n) => n.startsWith("URI:"))
    .map((n) => n.slice(4));
  if (uris.length === 1 && uris[0] === expected) return undefined;
  return new Error(`the sidecar is ${uris.join(", ") || "no SPIFFE ID"}, not ${expected}`);
}
