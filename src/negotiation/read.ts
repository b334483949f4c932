// Reading the one request frame from a fresh TLS connection: bounded in size and in time; bytes after
// it (a client may send application bytes at once) are put back for the pump.
import type { Duplex } from "node:stream";
import { decodeFrame, FrameType, NegotiationError } from "./frame.js";

export function readRequestFrame(socket: Duplex, timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    const done = (err: Error | undefined, payload?: Record<string, unknown>, rest?: Buffer) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("end", onEnd);
      socket.pause();
      if (rest && rest.length > 0) socket.unshift(rest);
      if (err) reject(err);
      else resolve(payload!);
    };
    const timer = setTimeout(() => done(new NegotiationError("frame_timeout", `no complete request frame within ${timeoutMs} ms`)), timeoutMs);
    const onEnd = () => done(new NegotiationError("bad_frame", "connection ended inside the request frame"));
    const onData = (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      try {
        const frame = decodeFrame(buf);
        if (!frame) return;
        if (frame.type !== FrameType.Request) throw new NegotiationError("bad_frame", `expected a request frame, got type ${frame.type}`);
        done(undefined, frame.payload, buf.subarray(frame.size));
      } catch (e) {
        done(e as Error);
      }
    };
    socket.on("data", onData);
    socket.once("end", onEnd);
  });
}
