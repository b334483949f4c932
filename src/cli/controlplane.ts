// `parley control-plane`: serve a directory of resource files to sidecars.
import * as grpc from "@grpc/grpc-js";
import { runUntilSignalled } from "../app/lifecycle.js";
import { startControlPlane } from "../control/server/plane.js";
import { createLogger } from "../telemetry/log.js";
import { type Command, directoryFlag, HELP, helped, hostPortFlag, parse, readFlagFile, UsageError } from "./command.js";

export const controlPlane: Command = {
  name: "control-plane",
  usage: `usage: parley control-plane --dir DIR [--listen H:P] [--admin H:P]
                            [--tls-cert F --tls-key F [--tls-client-ca F]]

Serves DIR's resource files (shared.yaml, nodes/<id>.yaml) to sidecars over gRPC and reloads them
when they change (and on SIGHUP); http://ADMIN/status shows which node has ACKed which version.
  --listen H:P   gRPC address (default 127.0.0.1:18000)
  --admin H:P    status address (default 127.0.0.1:18001)
  --tls-cert F --tls-key F   serve TLS; --tls-client-ca F also requires client certificates`,
  async run(args) {
    const { values } = parse(this, {
      args,
      options: {
        dir: { type: "string" },
        listen: { type: "string", default: "127.0.0.1:18000" },
        admin: { type: "string", default: "127.0.0.1:18001" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "tls-client-ca": { type: "string" },
        ...HELP,
      },
    });
    if (values.help) return helped(this);
    if (!values.dir) throw new UsageError("--dir DIR is required", this.name);
    const dir = directoryFlag(this, "--dir", values.dir);
    hostPortFlag(this, values.listen, "--listen");
    const admin = hostPortFlag(this, values.admin, "--admin");
    if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) throw new UsageError("--tls-cert and --tls-key go together", this.name);
    const logger = createLogger("info");
    const file = (flag: string, path: string) => Buffer.from(readFlagFile(this, flag, path));
    const [tlsCert, tlsKey] = [values["tls-cert"], values["tls-key"]];
    const credentials =
      tlsCert !== undefined && tlsKey !== undefined
        ? grpc.ServerCredentials.createSsl(
            values["tls-client-ca"] ? file("--tls-client-ca", values["tls-client-ca"]) : null,
            [{ cert_chain: file("--tls-cert", tlsCert), private_key: file("--tls-key", tlsKey) }],
            values["tls-client-ca"] !== undefined,
          )
        : undefined;
    await runUntilSignalled(async () => {
      const cp = await startControlPlane({ dir, listen: values.listen, admin, ...(credentials ? { credentials } : {}), log: logger });
      return { reload: () => cp.reload(), stop: () => cp.close().then(() => new Promise<void>((r) => logger.flush(() => r()))) };
    });
    return -1;
  },
};
