// `parley validate`: load and check a configuration file or a bootstrap file, print what it holds.
import { loadBootstrap, loadConfig } from "../config/load.js";
import { YamlSource } from "../config/source.js";
import { type Command, HELP, helped, isBootstrapDoc, parse, UsageError } from "./command.js";

export const validate: Command = {
  name: "validate",
  usage: `usage: parley validate FILE

Loads and checks FILE completely (every key, every file it names), as parley run would, and prints
its version. A file with a top-level control_plane key is checked as a bootstrap file (parley run
--bootstrap), its initial static configuration included; any other as a configuration (--config).
exit codes: 0 valid, 2 invalid (each problem as file:line:column: path: message)`,
  run(args) {
    const { values, positionals } = parse(this, { args, allowPositionals: true, options: { ...HELP } });
    if (values.help) return helped(this);
    const [file] = positionals;
    if (positionals.length !== 1 || file === undefined) throw new UsageError("exactly one FILE", this.name);
    process.stdout.write(`${file}: ${isBootstrap(file) ? bootstrapSummary(file) : configSummary(file)}\n`);
    return 0;
  },
};

const isBootstrap = (file: string): boolean => isBootstrapDoc(YamlSource.read(file).toJS());

function configSummary(file: string): string {
  const config = loadConfig(file);
  return `valid (version ${config.version}, ${config.listeners.length} listener(s))`;
}

function bootstrapSummary(file: string): string {
  const b = loadBootstrap(file);
  const cp = b.controlPlane;
  const initial = b.initial === "wait" ? "waits for the first push" : `serves version ${b.initial.version} until the first push`;
  return `valid bootstrap (node ${cp.node_id}, control plane ${cp.address}, ${cp.tls ? "TLS" : "plaintext"}; ${initial})`;
}
