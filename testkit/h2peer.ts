// An independent HTTP/2 peer for the multiplexed-hop suites: node:http2 over mTLS with ALPN h2 (as an
// HBONE client connects), CONNECT streams (RFC 9113 §8.5: no :scheme, no :path) and their echoes.
import { connect, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from "node:http2";
import type { Issued } from "../src/certs/issue.js";
import { waitFor } from "./harness.js";

/** A connection to `port` as `creds`, trusting `caPem`; resolves once HTTP/2 is up. */
export function h2Peer(port: number, caPem: string, creds: Issued): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = connect(`https://localhost:${port}`, { ca: caPem, cert: creds.chainPem, key: creds.keyPem });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

export interface Opened {
  stream: ClientHttp2Stream;
  headers: IncomingHttpHeaders;
  /** Everything received so far. */
  got(): string;
  /** Resolves with the RST_STREAM code (0 for a clean close) once the stream is closed. */
  closed: Promise<number>;
}

/** A CONNECT stream to echo.test:7 with `extra` fields (an array sends the field once per value), and its response. */
export function openConnect(session: ClientHttp2Session, extra: Record<string, string | string[]> = {}): Promise<Opened> {
  const stream = session.request({ ":method": "CONNECT", ":authority": "echo.test:7", ...extra }, { endStream: false });
  let got = "";
  stream.on("data", (c: Buffer) => (got += c.toString()));
  stream.on("error", () => {});
  const closed = new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode ?? 0)));
  return new Promise((resolve, reject) => {
    stream.once("response", (headers) => resolve({ stream, headers, got: () => got, closed }));
    stream.once("close", () => reject(new Error(`stream closed before a response (code ${stream.rstCode})`)));
  });
}

/** Writes `text` on the stream and waits for its echo. */
export async function echoed(o: Opened, text: string): Promise<void> {
  const want = o.got() + text;
  o.stream.write(text);
  await waitFor(() => o.got() === want, 3000, `echo of ${text}`);
}
