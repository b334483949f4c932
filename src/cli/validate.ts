// `parley validate`: load and check a configuration file, print its version.
import { loadConfig } from "../config/load.js";
import { type Command, HELP, helped, parse, UsageError } from "./command.js";

export const validate: Command = {
  name: "validate",
  usage: `usage: parley validate FILE

Loads and checks a configuration file (every key, every file it names) and prints its version.
exit codes: 0 valid, 2 invalid (each problem as file:line:column: path: message)`,
  run(args) {
    const { values, positionals } = parse(this, { args, allowPositionals: true, options: { ...HELP } });
    if (values.help) return helped(this);
    if (positionals.length !== 1) throw new UsageError("exactly one FILE", this.name);
    const config = loadConfig(positionals[0]!);
    process.stdout.write(`${positionals[0]}: valid (version ${config.version}, ${config.listeners.length} listener(s))\n`);
    return 0;
  },
};
