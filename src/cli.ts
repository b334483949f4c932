#!/usr/bin/env node
// The `parley` command. Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad configuration.
import { createReadStream, readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { generateDevCerts } from "./certs/dev.js";
import type { KeyType } from "./certs/issue.js";
import { isIP } from "node:net";
import { CheckInputError, checkOffline } from "./check.js";
import * as grpc from "@grpc/grpc-js";
import { loadBootstrap, loadConfig } from "./config/load.js";
import { startControlled } from "./control/agent.js";
import { startControlPlane } from "./control/plane.js";
import { formatDecision } from "./policy/explain.js";
import { ConfigError } from "./config/source.js";
import { parseHostPort, type HostPort } from "./config/units.js";
import { DEV_CERTS, PACKAGE_ROOT, startDemo } from "./demo/demo.js";
import { FileWatcher } from "./config/watch.js";
import { connect as connectParley, DeniedError } from "./negotiation/client.js";
import { operations } from "./operations.js";
import { formatLine, matches, parseLine, parseSince, Summary } from "./telemetry/tail.js";
import { Sidecar } from "./sidecar.js";
import { followWorkloadApi } from "./workload.js";
import { createLogger, type DecisionLog } from "./telemetry/log.js";

const USAGE = `usage: parley <command> [options]

commands:
  run --config FILE [--no-watch]
                               run the sidecar on a YAML configuration (reloaded on SIGHUP, and
                               when it or a file it names changes unless --no-watch)
  run --bootstrap FILE         run the sidecar on configuration pushed by a control plane
  control-plane --dir DIR [--listen H:P] [--admin H:P] [--tls-cert F --tls-key F [--tls-client-ca F]]
                               serve DIR's resource files to sidecars; status at http://ADMIN/status
  demo [--listen H:P] [--upstream H:P] [--admin H:P]
                               the demo: echo workload + sidecar on certs-dev/ (what npm start runs)
  validate FILE                check a configuration file and exit (0 valid, 2 invalid)
  check --config FILE (--id SPIFFE-ID | --cert PEM) [--listener NAME] [--source IP]
        [--sni NAME] [--alpn PROTO] [--at TIME] [--json]
                               decide offline and explain (exit 0 allow, 1 deny, 2 bad input)
  certs dev [--dir DIR] [--key-type ec-p256|rsa-2048]
                               regenerate the development certificates (default certs-dev/)
  connect HOST:PORT --cert F --key F --ca F [--role R]... [--purpose TEXT]
        [--attestation-token FILE] [--approval-token FILE]
                               negotiate (ALPN parley/1), then pipe stdin/stdout through the session
                               (exit 0 done, 1 denied, 3 could not connect)
  tail [FILE] [--deny] [--id S] [--reason R] [--listener L] [--since 10m|TIME] [--summary] [--no-color]
                               read decision logs (default stdin) as a readable, filterable view
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
  const { values } = parseArgs({
    args,
    options: { config: { type: "string", short: "c" }, bootstrap: { type: "string" }, "no-watch": { type: "boolean", default: false } },
  });
  if (values.bootstrap !== undefined) {
    if (values.config !== undefined) throw new UsageError("run: --config and --bootstrap exclude each other");
    const bootstrap = loadBootstrap(values.bootstrap);
    const ops = operations(bootstrap.log, bootstrap.admin);
    const controlled = await startControlled(bootstrap, ops.log, packageVersion());
    await ops.serveAdmin(controlled.sidecar, {
      configFresh: () => controlled.sync.state !== "stale",
      controlPlaneConnected: () => (controlled.sync.state === "connected" ? 1 : 0),
    });
    onSignals(async () => {
      await controlled.stop();
      await ops.close();
    }, ops.log);
    return -1;
  }
  if (!values.config) throw new UsageError("run: --config FILE or --bootstrap FILE is required");
  const config = loadConfig(values.config);
  const ops = operations(config.log, config.admin);
  const log = ops.log;
  const sidecar = new Sidecar(config, { log });
  await sidecar.start();
  const workload = config.identitySource ? followWorkloadApi(sidecar, config.identitySource, log) : undefined;
  await ops.serveAdmin(sidecar);
  // Reload on any change to the config or a file it names, and on SIGHUP.
  const reload = () => {
    sidecar.reload();
    if (!values["no-watch"]) watcher.watch(sidecar.config.files);
  };
  const watcher = new FileWatcher(reload);
  if (!values["no-watch"]) {
    watcher.watch(config.files);
    // A change made between loading and watching would otherwise go unseen until the next one.
    reload();
  }
  process.on("SIGHUP", reload);
  onSignals(async () => {
    watcher.close();
    workload?.stop();
    await sidecar.stop();
    await ops.close();
  }, log);
  return -1;
}

async function demo(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { listen: { type: "string" }, upstream: { type: "string" }, admin: { type: "string" } } });
  const d = await startDemo({
    listen: hostPortFlag(values.listen, "--listen"),
    upstream: hostPortFlag(values.upstream, "--upstream"),
    ...(values.admin !== undefined ? { admin: values.admin } : {}),
    print: (t) => process.stderr.write(t),
  });
  onSignals(() => d.stop(), d.log);
  return -1;
}

function validate(args: string[]): number {
  const { positionals } = parseArgs({ args, allowPositionals: true });
  if (positionals.length !== 1) throw new UsageError("validate: exactly one FILE");
  const config = loadConfig(positionals[0]!);
  process.stdout.write(`${positionals[0]}: valid (version ${config.version}, ${config.listeners.length} listener(s))\n`);
  return 0;
}

function check(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: {
      config: { type: "string", short: "c" },
      id: { type: "string" },
      cert: { type: "string" },
      listener: { type: "string" },
      source: { type: "string", default: "127.0.0.1" },
      sni: { type: "string" },
      alpn: { type: "string" },
      at: { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  if (!values.config) throw new UsageError("check: --config FILE is required");
  if (!values.id && !values.cert) throw new UsageError("check: --id SPIFFE-ID or --cert PEM is required");
  const now = values.at === undefined ? Date.now() : Date.parse(values.at);
  if (Number.isNaN(now)) throw new UsageError(`--at: expected an ISO 8601 time, got ${values.at}`);
  if (!isIP(values.source!)) throw new UsageError(`--source: expected an IP address, got ${values.source}`);
  const config = loadConfig(values.config, now);
  const result = checkOffline(config, {
    ...(values.id !== undefined ? { id: values.id } : {}),
    ...(values.cert !== undefined ? { certPem: readFileSync(values.cert, "utf8") } : {}),
    ...(values.listener !== undefined ? { listener: values.listener } : {}),
    sourceAddress: values.source!,
    sni: values.sni ?? null,
    alpn: values.alpn ?? null,
    now,
  });
  process.stdout.write(values.json ? JSON.stringify(result.decision) + "\n" : formatDecision(result.decision, result.peerId));
  return result.decision.decision === "allow" ? 0 : 1;
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

async function tail(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      deny: { type: "boolean", default: false },
      id: { type: "string" },
      reason: { type: "string" },
      listener: { type: "string" },
      since: { type: "string" },
      summary: { type: "boolean", default: false },
      color: { type: "boolean" },
      "no-color": { type: "boolean" },
    },
  });
  if (positionals.length > 1) throw new UsageError("tail: at most one FILE (default: standard input)");
  const since = values.since === undefined ? undefined : parseSince(values.since, Date.now());
  if (values.since !== undefined && since === undefined) throw new UsageError(`--since: expected a duration (10m) or an ISO time, got ${values.since}`);
  const color = values["no-color"] ? false : (values.color ?? (process.stdout.isTTY === true && !process.env.NO_COLOR));
  const filter = { deny: values.deny, ...(values.id !== undefined ? { id: values.id } : {}), ...(values.reason !== undefined ? { reason: values.reason } : {}), ...(values.listener !== undefined ? { listener: values.listener } : {}), ...(since !== undefined ? { since } : {}) };
  const filtering = values.deny || Object.keys(filter).length > 1;
  const input = positionals[0] === undefined || positionals[0] === "-" ? process.stdin : createReadStream(positionals[0]);
  const summary = new Summary();
  for await (const line of createInterface({ input, crlfDelay: Infinity })) {
    const rec = parseLine(line);
    if (!rec) {
      // Lines that are not records pass through unfiltered views only.
      if (!values.summary && line.trim() && !filtering) process.stdout.write(line + "\n");
      continue;
    }
    if (!matches(rec, filter)) continue;
    if (values.summary) summary.add(rec);
    else process.stdout.write(formatLine(rec, color) + "\n");
  }
  if (values.summary) process.stdout.write(summary.render(color));
  return 0;
}

/** `parley connect`: negotiate, print the grant on stderr, then pipe stdin/stdout through the session. */
async function connectCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      cert: { type: "string" },
      key: { type: "string" },
      ca: { type: "string" },
      servername: { type: "string" },
      role: { type: "string", multiple: true },
      purpose: { type: "string" },
      "attestation-token": { type: "string" },
      "approval-token": { type: "string" },
    },
  });
  const target = hostPortFlag(positionals[0], "HOST:PORT");
  if (!target || !values.cert || !values.key || !values.ca) throw new UsageError("connect: HOST:PORT --cert F --key F --ca F are required");
  const token = (f: string | undefined) => (f === undefined ? undefined : readFileSync(f, "utf8").trim());
  try {
    const { socket, grant } = await connectParley({
      host: target.host,
      port: target.port,
      cert: readFileSync(values.cert, "utf8"),
      key: readFileSync(values.key, "utf8"),
      ca: readFileSync(values.ca, "utf8"),
      ...(values.servername ? { servername: values.servername } : {}),
      roles: values.role ?? [],
      ...(values.purpose !== undefined ? { purpose: values.purpose } : {}),
      ...(values["attestation-token"] !== undefined ? { attestationToken: token(values["attestation-token"])! } : {}),
      ...(values["approval-token"] !== undefined ? { approvalToken: token(values["approval-token"])! } : {}),
    });
    process.stderr.write(`granted ${grant.grant_id}: roles [${grant.roles.join(", ")}] until ${grant.expires_at}\n`);
    await new Promise<void>((resolve) => {
      process.stdin.pipe(socket);
      socket.pipe(process.stdout);
      socket.resume();
      socket.once("close", () => resolve());
    });
    return 0;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n`);
    return e instanceof DeniedError ? 1 : 3;
  }
}

function packageVersion(): string {
  return JSON.parse(readFileSync(join(PACKAGE_ROOT, "package.json"), "utf8")).version;
}

async function controlPlane(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      dir: { type: "string" },
      listen: { type: "string", default: "127.0.0.1:18000" },
      admin: { type: "string", default: "127.0.0.1:18001" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "tls-client-ca": { type: "string" },
    },
  });
  if (!values.dir) throw new UsageError("control-plane: --dir DIR is required");
  hostPortFlag(values.listen, "--listen");
  const admin = hostPortFlag(values.admin, "--admin");
  if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) throw new UsageError("control-plane: --tls-cert and --tls-key go together");
  const logger = createLogger("info");
  const credentials = values["tls-cert"]
    ? grpc.ServerCredentials.createSsl(
        values["tls-client-ca"] ? readFileSync(values["tls-client-ca"]) : null,
        [{ cert_chain: readFileSync(values["tls-cert"]), private_key: readFileSync(values["tls-key"]!) }],
        values["tls-client-ca"] !== undefined,
      )
    : undefined;
  const cp = await startControlPlane({ dir: values.dir, listen: values.listen!, ...(admin ? { admin } : {}), ...(credentials ? { credentials } : {}), log: logger });
  const stop = async () => {
    await cp.close();
    logger.flush(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.on("SIGHUP", () => cp.reload());
  return -1;
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
    case "check":
      return check(rest);
    case "certs":
      return certs(rest);
    case "control-plane":
      return controlPlane(rest);
    case "tail":
      return tail(rest);
    case "connect":
      return connectCommand(rest);
    case "version":
    case "--version":
      process.stdout.write(packageVersion() + "\n");
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
    } else if (e instanceof UsageError || e instanceof CheckInputError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`${(e as Error).message}\n\n${USAGE}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`parley: ${(e as Error).message}\n`);
      process.exitCode = 1;
    }
  },
);
