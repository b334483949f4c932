// `parley demo` (what `npm start` runs): an echo workload and a sidecar in front of it.
import { runUntilSignalled } from "../app/lifecycle.js";
import { startDemo } from "../demo/demo.js";
import { type Command, HELP, helped, hostPortFlag, parse } from "./command.js";

export const demo: Command = {
  name: "demo",
  usage: `usage: parley demo [--listen H:P] [--upstream H:P] [--admin H:P]

Runs an echo workload and a sidecar in front of it on the development certificates (certs-dev/, made
anew when missing or expiring), and prints how to try it. What npm start runs.
  --listen H:P    the sidecar's address (default 127.0.0.1:8443)
  --upstream H:P  the echo workload's address (default 127.0.0.1:9000)
  --admin H:P     the admin server's address (default 127.0.0.1:15000)`,
  async run(args) {
    const { values } = parse(this, { args, options: { listen: { type: "string" }, upstream: { type: "string" }, admin: { type: "string" }, ...HELP } });
    if (values.help) return helped(this);
    const listen = hostPortFlag(this, values.listen, "--listen");
    const upstream = hostPortFlag(this, values.upstream, "--upstream");
    if (values.admin !== undefined) hostPortFlag(this, values.admin, "--admin");
    await runUntilSignalled(() =>
      startDemo({ listen, upstream, ...(values.admin !== undefined ? { admin: values.admin } : {}), print: (t) => process.stderr.write(t) }),
    );
    return -1;
  },
};
