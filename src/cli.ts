#!/usr/bin/env node
// The `parley` command: dispatches to one command of src/cli/, and maps errors to exit codes:
// 0 success, 1 runtime failure, 2 bad usage or invalid configuration (one line naming the problem).
import { packageVersion } from "./assets/paths.js";
import { certs } from "./cli/certs.js";
import { check } from "./cli/check.js";
import { type Command, UsageError } from "./cli/command.js";
import { connect } from "./cli/connect.js";
import { controlPlane } from "./cli/controlplane.js";
import { demo } from "./cli/demo.js";
import { health } from "./cli/health.js";
import { run } from "./cli/run.js";
import { tail } from "./cli/tail.js";
import { validate } from "./cli/validate.js";
import { ConfigError } from "./config/source.js";
import { CheckInputError } from "./policy/check.js";

const COMMANDS: readonly Command[] = [run, demo, validate, check, certs, connect, tail, controlPlane, health];

const USAGE = `usage: parley <command> [options]      (parley <command> --help for one command)

commands:
  run --config FILE [--no-watch]   run the sidecar on a YAML configuration
  run --bootstrap FILE             run the sidecar on configuration pushed by a control plane
  control-plane --dir DIR          serve DIR's resource files to sidecars
  demo                             echo workload + sidecar on certs-dev/ (what npm start runs)
  validate FILE                    check a configuration or bootstrap file (exit 0 valid, 2 invalid)
  check --config FILE --id ID      decide offline and explain (exit 0 allow, 1 deny, 2 bad input)
  certs dev                        regenerate the development certificates
  connect HOST:PORT --cert F --key F --ca F
                                   negotiate (ALPN parley/1) and pipe stdin/stdout
  tail [FILE]                      read decision logs as a readable, filterable view
  health [--config FILE]           ask a running sidecar's admin server for /healthz (container check)
  version, --version               print the version

exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid configuration`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const command = COMMANDS.find((c) => c.name === name);
  if (command) return command.run(rest);
  switch (name) {
    case "version":
    case "--version":
    case "-v":
      process.stdout.write(packageVersion() + "\n");
      return 0;
    case "help":
    case "--help":
    case "-h": {
      // `parley help COMMAND` is `parley COMMAND --help`.
      const of = COMMANDS.find((c) => c.name === rest[0]);
      if (rest[0] !== undefined && !of) throw new UsageError(`no command ${rest[0]}`);
      process.stdout.write((of?.usage ?? USAGE) + "\n");
      return 0;
    }
    case undefined:
      process.stderr.write(USAGE + "\n");
      return 2;
    default:
      throw new UsageError(`unknown command ${name}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof ConfigError) {
      process.stderr.write(`invalid configuration:\n${e.message}\n`);
      process.exitCode = 2;
    } else if (e instanceof UsageError) {
      const who = e.command === undefined ? "parley" : `parley ${e.command}`;
      process.stderr.write(`${who}: ${e.message}\nsee ${who} --help\n`);
      process.exitCode = 2;
    } else if (e instanceof CheckInputError) {
      process.stderr.write(`parley check: ${e.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`parley: ${(e as Error).message}\n`);
      process.exitCode = 1;
    }
  },
);
