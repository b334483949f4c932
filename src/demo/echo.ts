// The demo workload: a plain TCP service on loopback. Raw bytes are echoed back; an HTTP request gets a
// small HTTP answer quoting it, so both `openssl s_client` and `curl` have something to show.
import { createServer, type Server, type Socket } from "node:net";

const HTTP_METHOD = /^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) /;

function serveHttp(socket: Socket, first: Buffer): void {
  let head = first;
  const finish = () => {
    const text = head.toString("latin1");
    const request = text.slice(0, text.includes("\r\n\r\n") ? text.indexOf("\r\n\r\n") : text.length);
    const body = `parley demo workload: your request reached me through the sidecar.\n\n${request}\n`;
    socket.end(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  };
  if (head.includes("\r\n\r\n")) {
    finish();
    return;
  }
  socket.on("data", (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    if (head.includes("\r\n\r\n") || head.length > 16_384) {
      socket.removeAllListeners("data");
      finish();
    }
  });
}

function serve(socket: Socket): void {
  socket.on("error", () => socket.destroy());
  // A client that ends without sending anything gets its end back.
  const endEmpty = () => socket.end();
  socket.once("end", endEmpty);
  socket.once("data", (first: Buffer) => {
    socket.off("end", endEmpty);
    if (HTTP_METHOD.test(first.subarray(0, 8).toString("latin1"))) {
      serveHttp(socket, first);
      return;
    }
    socket.write(first);
    socket.pipe(socket);
  });
}

export interface EchoServer {
  readonly server: Server;
  /** Connections accepted so far. */
  accepted(): number;
  /** Stops listening and ends every open connection. */
  close(): Promise<void>;
}

export function startEcho(host: string, port: number): Promise<EchoServer> {
  let accepted = 0;
  const open = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    open.add(s);
    s.once("close", () => open.delete(s));
    serve(s);
  });
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of open) s.destroy();
    });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve({ server, accepted: () => accepted, close });
    });
  });
}
