#!/usr/bin/env node
// The `parley` command: dispatches to one command of src/cli/, and maps errors to exit codes:
// 0 success, 1 runtime failure, 2 bad usage or invalid configuration (one line naming the problem).
import { packageVersion } from "./assets/paths.js";
import type { Command, UsageError } from "./cli/command.js";
import { ParleyError } from "./errors/catalogue.js";

// Each command's module is loaded only when that command runs: `parley tail` need not load gRPC.
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  run: async () => (await import("./cli/run.js")).run,
  demo: async () => (await import("./cli/demo.js")).demo,
  validate: async () => (await import("./cli/validate.js")).validate,
  check: async () => (await import("./cli/check.js")).check,
  certs: async () => (await import("./cli/certs.js")).certs,
  connect: async () => (await import("./cli/connect.js")).connect,
  tail: async () => (await import("./cli/tail.js")).tail,
  "control-plane": async () => (await import("./cli/controlplane.js")).controlPlane,
};

const USAGE = `usage: parley <command> [options]      (parley <command> --help for one command)

commands:
  run --config FILE [--no-watch]   run the sidecar on a YAML configuration
  run --bootstrap FILE             run the sidecar on configuration pushed by a control plane
  control-plane --dir DIR          serve DIR's resource files to sidecars
  demo                             echo workload + sidecar on certs-dev/ (what npm start runs)
  validate FILE                    check a configuration file (exit 0 valid, 2 invalid)
  check --config FILE --id ID      decide offline and explain (exit 0 allow, 1 deny, 2 bad input)
  certs dev                        regenerate the development certificates
  connect HOST:PORT --cert F --key F --ca F
                                   negotiate (ALPN parley/1) and pipe stdin/stdout
  tail [FILE]                      read decision logs as a readable, filterable view
  version, --version               print the version

exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid configuration`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const load = name !== undefined && Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (load) return (await load()).run(rest);
  switch (name) {
    case "version":
    case "--version":
    case "-v":
      process.stdout.write(packageVersion() + "\n");
      return 0;
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE + "\n");
      return 0;
    case undefined:
      process.stderr.write(USAGE + "\n");
      return 2;
    default:
      process.stderr.write(`parley: unknown command ${name}\n\n${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e: unknown) => {
    // Told apart by their catalogue codes, so this entry point loads no command's modules.
    const code = e instanceof ParleyError ? e.code : undefined;
    if (code === "PARLEY_ERR_CONFIG") {
      process.stderr.write(`invalid configuration:\n${(e as Error).message}\n`);
      process.exitCode = 2;
    } else if (code === "PARLEY_ERR_USAGE") {
      const u = e as UsageError;
      process.stderr.write(`parley ${u.command ?? ""}: ${u.message}\n${u.command ? `see parley ${u.command} --help\n` : ""}`);
      process.exitCode = 2;
    } else if (code === "PARLEY_ERR_CHECK_INPUT") {
      process.stderr.write(`parley check: ${(e as Error).message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`parley: ${(e as Error).message}\n`);
      process.exitCode = 1;
    }
  },
);
