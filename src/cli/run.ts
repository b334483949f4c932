// `parley run`: a sidecar on a configuration file or on a control plane's pushes, until signalled.
import { packageVersion } from "../assets/paths.js";
import { assembleSidecar } from "../app/assemble.js";
import { runUntilSignalled } from "../app/lifecycle.js";
import { loadBootstrap, loadConfig } from "../config/load.js";
import { YamlSource } from "../config/source.js";
import { type Command, HELP, helped, isBootstrapDoc, parse, UsageError } from "./command.js";

export const run: Command = {
  name: "run",
  usage: `usage: parley run --config FILE [--no-watch]
       parley run --bootstrap FILE
       PARLEY_CONFIG=FILE parley run [--no-watch]

Runs the sidecar.
  --config FILE     a YAML configuration; reloaded on SIGHUP and, unless --no-watch, when it or a
                    file it names changes
  --bootstrap FILE  the sidecar's identity and its control plane; configuration comes from pushes
Without either flag, the file PARLEY_CONFIG names (a bootstrap file when it has a control_plane key),
the file parley health reads admin.listen from, as the container image does.
SIGTERM/SIGINT drain (drain_timeout), a second signal exits at once with 1.
exit codes: 0 drained stop, 1 runtime failure (e.g. a port that cannot be bound), 2 bad usage or
invalid configuration`,
  async run(args) {
    const { values } = parse(this, {
      args,
      options: { config: { type: "string", short: "c" }, bootstrap: { type: "string" }, "no-watch": { type: "boolean", default: false }, ...HELP },
    });
    if (values.help) return helped(this);
    if (values.bootstrap !== undefined && values.config !== undefined) throw new UsageError("--config and --bootstrap exclude each other", this.name);
    const fromEnv = values.bootstrap === undefined && values.config === undefined ? process.env["PARLEY_CONFIG"] || undefined : undefined;
    const file = values.bootstrap ?? values.config ?? fromEnv;
    if (file === undefined) throw new UsageError("--config FILE or --bootstrap FILE (or PARLEY_CONFIG) is required", this.name);
    const bootstrap = values.bootstrap !== undefined || (fromEnv !== undefined && isBootstrapDoc(YamlSource.read(fromEnv).toJS()));
    const spec = bootstrap
      ? ({ kind: "controlled", bootstrap: loadBootstrap(file) } as const)
      : ({ kind: "file", config: loadConfig(file), watch: !values["no-watch"] } as const);
    await runUntilSignalled(() => assembleSidecar(spec, { version: packageVersion() }));
    return -1;
  },
};
