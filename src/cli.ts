#!/usr/bin/env node
// The `parley` command: dispatches to one command of src/cli/, and maps errors to exit codes:
// 0 success, 1 runtime failure, 2 bad input: usage, configuration, unreadable paths (one line naming
// the problem; a usage error adds where to look, never the whole usage).
import { packageVersion } from "./assets/paths.js";
import { tuneHeap } from "./app/heap.js";
import { tuneMalloc } from "./app/malloc.js";
import { type Command, UsageError } from "./cli/command.js";
import { ParleyError } from "./errors/catalogue.js";

// Each command's module is loaded only when that command runs, so a quick command (tail, health,
// --help) does not pay for loading gRPC, the certificate libraries and the proxy. The commands that
// run a sidecar first restart themselves with glibc's malloc tuned (src/app/malloc.ts), then tune the
// V8 heap (src/app/heap.ts), before loading anything.
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  run: async () => (tuneMalloc(), tuneHeap(), (await import("./cli/run.js")).run),
  demo: async () => (tuneMalloc(), tuneHeap(), (await import("./cli/demo.js")).demo),
  validate: async () => (await import("./cli/validate.js")).validate,
  check: async () => (await import("./cli/check.js")).check,
  certs: async () => (await import("./cli/certs.js")).certs,
  connect: async () => (await import("./cli/connect.js")).connect,
  tail: async () => (await import("./cli/tail.js")).tail,
  "control-plane": async () => (await import("./cli/controlplane.js")).controlPlane,
  health: async () => (await import("./cli/health.js")).health,
  revoke: async () => (await import("./cli/revoke.js")).revoke,
};

const commandNamed = (name: string | undefined) => (name !== undefined && Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined);

const USAGE = `usage: parley <command> [options]      (parley <command> --help for one command)

commands:
  run --config FILE [--no-watch]   run the sidecar on a YAML configuration
  run --bootstrap FILE             run the sidecar on configuration pushed by a control plane
  control-plane --dir DIR          serve DIR's resource files to sidecars
  demo                             echo workload + sidecar on certs-dev/ (what npm start runs)
  validate FILE                    check a configuration or bootstrap file (exit 0 valid, 2 invalid)
  check --config FILE --id ID      decide offline and explain (exit 0 allow, 1 deny, 2 bad input)
  revoke (--dir DIR | --config FILE) --name N --reason R --until WHEN --txn T|--spiffe-id ID|...
                                   write a revocation entry for a control plane or a sidecar
  certs dev                        regenerate the development certificates
  connect HOST:PORT --cert F --key F --ca F
                                   negotiate (ALPN parley/1) and pipe stdin/stdout
  tail [FILE]                      read decision logs as a readable, filterable view
  health [--config FILE]           ask a running sidecar's admin server for /healthz (container check)
  help COMMAND                     one command's usage, as parley COMMAND --help
  version, --version               print the version

exit codes: 0 success, 1 runtime failure, 2 bad input (usage, configuration, an unreadable path)`;

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const command = commandNamed(name);
  if (command) return (await command()).run(rest);
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
      const of = commandNamed(rest[0]);
      if (rest[0] !== undefined && !of) throw new UsageError(`no command ${rest[0]}`);
      process.stdout.write((of ? (await of()).usage : USAGE) + "\n");
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
    if (!(e instanceof ParleyError)) {
      process.stderr.write(`parley: ${(e as Error).message}\n`);
      process.exitCode = 1;
      return;
    }
    switch (e.code) {
      case "PARLEY_ERR_CONFIG":
        process.stderr.write(`invalid configuration:\n${e.message}\n`);
        break;
      case "PARLEY_ERR_USAGE": {
        const command = e instanceof UsageError ? e.command : undefined;
        const who = command === undefined ? "parley" : `parley ${command}`;
        process.stderr.write(`${who}: ${e.message}\nsee ${who} --help\n`);
        break;
      }
      case "PARLEY_ERR_CHECK_INPUT":
        process.stderr.write(`parley check: ${e.message}\n`);
        break;
      default:
        process.stderr.write(`parley: ${e.message}\n`);
        process.exitCode = 1;
        return;
    }
    process.exitCode = 2;
  },
);
