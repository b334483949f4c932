// The client side of negotiation: `connect` opens mTLS with ALPN parley/1, sends one request frame,
// and resolves with the socket (now carrying application bytes) and the grant, or rejects with the
// denial.
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { ALPN, decodeFrame, encodeFrame, FrameType, NegotiationError, type DenialCode } from "./frame.js";

export interface ConnectOptions {
  readonly host: string;
  readonly port: number;
  /** PEM: the client's certificate chain, its key, and the CA to verify the sidecar. */
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  readonly servername?: string;
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
  readonly obligations: Record<string, unknown>;
}

export class DeniedError extends Error {
  readonly code = "ERR_PARLEY_DENIED";
  constructor(
    readonly denial: DenialCode,
    readonly reasons: readonly string[],
    message: string,
  ) {
    super(`parley denied the session (${denial}${reasons.length ? `: ${reasons.join(", ")}` : ""}): ${message}`);
  }
}

export function connect(o: ConnectOptions): Promise<{ socket: TLSSocket; grant: Grant }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({
      host: o.host,
      port: o.port,
      cert: o.cert,
      key: o.key,
      ca: o.ca,
      servername: o.servername ?? "localhost",
      ALPNProtocols: [ALPN],
    });
    const timer = setTimeout(() => fail(new Error(`no answer from parley within ${o.timeoutMs ?? 5000} ms`)), o.timeoutMs ?? 5000);
    let buf: Buffer = Buffer.alloc(0);
    const fail = (e: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    };
    socket.once("error", fail);
    socket.once("close", () => fail(new Error("parley closed the connection before answering")));
    socket.once("secureConnect", () => {
      if (socket.alpnProtocol !== ALPN) return fail(new Error(`the server did not select ${ALPN}`));
      socket.write(
        encodeFrame(FrameType.Request, {
          roles: o.roles ?? [],
          ...(o.purpose !== undefined ? { purpose: o.purpose } : {}),
          ...(o.attestationToken !== undefined ? { attestation_token: o.attestationToken } : {}),
          ...(o.approvalToken !== undefined ? { approval_token: o.approvalToken } : {}),
        }),
      );
    });
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      let frame: ReturnType<typeof decodeFrame>;
      try {
        frame = decodeFrame(buf);
      } catch (e) {
        return fail(e as NegotiationError);
      }
      if (!frame) return;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.removeAllListeners("close");
      socket.removeListener("error", fail);
      socket.pause();
      const rest = buf.subarray(frame.size);
      if (rest.length > 0) socket.unshift(rest);
      if (frame.type === FrameType.Grant) return resolve({ socket, grant: frame.payload as unknown as Grant });
      const d = frame.payload as { code?: DenialCode; reasons?: string[]; message?: string };
      socket.destroy();
      reject(new DeniedError(d.code ?? "denied", d.reasons ?? [], d.message ?? ""));
    };
    socket.on("data", onData);
  });
}
