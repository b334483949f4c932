// The floor for any Node proxy: mTLS termination and a pipe to the workload, no policy, no logging;
// noDelay on both sockets, as parley and nginx (tcp_nodelay) have, so that it shares their latency.
// Usage: node bench/pipe.mjs PORT UPSTREAM_PORT CERT KEY CA
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { createServer } from "node:tls";

const [port, upstream, cert, key, ca] = process.argv.slice(2);
const server = createServer(
  { cert: readFileSync(cert), key: readFileSync(key), ca: readFileSync(ca), requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.2", noDelay: true },
  (client) => {
    const up = connect({ host: "127.0.0.1", port: Number(upstream), noDelay: true });
    client.pipe(up).pipe(client);
    const kill = () => {
      client.destroy();
      up.destroy();
    };
    client.on("error", kill);
    up.on("error", kill);
  },
);
server.listen(Number(port), "127.0.0.1", () => process.stdout.write("ready\n"));
