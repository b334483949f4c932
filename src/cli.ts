#!/usr/bin/env node
// The `parley` command. Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { generateDevCerts } from "./certs/dev.js";
import type { KeyType } from "./certs/issue.js";
import { loadConfig } from "./config/load.js";
import { ConfigError } from "./config/source.js";
import { parseHostPort, type HostPort } from "./config/units.js";
import { DEV_CERTS, PACKAGE_ROOT, startDemo } from "./demo/demo.js";
import { Sidecar } from "./sidecar.js";
import { createLogger, DecisionLog } from "./telemetry/log.js";

const USAGE = `usage: parley <command> [options]

commands:
  run --config FILE            run the sidecar on a static YAML configuration
  demo [--listen H:P] [--upstream H:P]
                               the demo: echo workload + sidecar on certs-dev/ (what npm start runs)
  validate FILE                check a configuration file and exit (0 valid, 2 invalid)
  certs dev [--dir DIR] [--key-type ec-p256|rsa-2048]
                               regenerate the development certificates (default certs-dev/)
  version                      print the version

exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid configuration`;

class UsageError extends Error {}

function hostPortFlag(value: string | undefined, flag: string): HostPort | undefined {
  if (value === undefined) return undefined;
  const hp = parseHostPort(value);
  if (!hp) throw new UsageError(`${flag}: expected host:port, got ${value}`);
  return hp;
}

/** Stops on SIGTERM/SIGINT with a drain; a second signal exits at once. */
function onSignals(stop: () => Promise<void>, log: DecisionLog): void {
  let stopping = false;
  const handler = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    log.lifecycle("signal received", { signal });
    stop().then(
      () => log.logger.flush(() => process.exit(0)),
      (e: Error) => {
        log.error("stop failed", { detail: e.message });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", handler);
  process.on("SIGINT", handler);
}

async function run(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: "string", short: "c" } } });
  if (!values.config) throw new UsageError("run: --config FILE is required");
  const config = loadConfig(values.config);
  const log = new DecisionLog(createLogger(config.logLevel));
  const sidecar = new Sidecar(config, { log });
  await sidecar.start();
  onSignals(() => sidecar.stop(), log);
  return -1;
}

async function demo(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { listen: { type: "string" }, upstream: { type: "string" } } });
  const log = new DecisionLog(createLogger("info"));
  const d = await startDemo({
    listen: hostPortFlag(values.listen, "--listen"),
    upstream: hostPortFlag(values.upstream, "--upstream"),
    log,
    print: (t) => process.stderr.write(t),
  });
  onSignals(() => d.stop(), log);
  return -1;
}

function validate(args: string[]): number {
  const { positionals } = parseArgs({ args, allowPositionals: true });
  if (positionals.length !== 1) throw new UsageError("validate: exactly one FILE");
  const config = loadConfig(positionals[0]!);
  process.stdout.write(`${positionals[0]}: valid (version ${config.version}, ${config.listeners.length} listener(s))\n`);
  return 0;
}

async function certs(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { dir: { type: "string" }, "key-type": { type: "string" } },
  });
  if (positionals[0] !== "dev") throw new UsageError("certs: the only subcommand is 'dev'");
  const keyType = values["key-type"] ?? "ec-p256";
  if (keyType !== "ec-p256" && keyType !== "rsa-2048") throw new UsageError(`--key-type: expected ec-p256 or rsa-2048`);
  const dir = values.dir ?? DEV_CERTS;
  await generateDevCerts(dir, keyType as KeyType);
  process.stdout.write(`wrote development certificates (${keyType}) to ${dir}\n`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "run":
      return run(rest);
    case "demo":
      return demo(rest);
    case "validate":
      return validate(rest);
    case "certs":
      return certs(rest);
    case "version":
    case "--version":
      process.stdout.write(JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")).version + "\n");
      return 0;
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE + "\n");
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${command}`);
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
    } else if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`${(e as Error).message}\n\n${USAGE}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`parley: ${(e as Error).message}\n`);
      process.exitCode = 1;
    }
  },
);
