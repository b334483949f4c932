// `parley health`: the container health check. Asks the admin server of the sidecar that runs on the
// same configuration for /healthz, so the check follows admin.listen wherever the file moves it.
import { bootstrapSchema, configSchema } from "../config/schema.js";
import { parseWith, YamlSource } from "../config/source.js";
import { formatHostPort, type HostPort, parseDuration } from "../config/units.js";
import { type Command, HELP, helped, hostPortFlag, isBootstrapDoc, parse, UsageError } from "./command.js";

export const health: Command = {
  name: "health",
  usage: `usage: parley health [--ready] [--config FILE | --admin H:P] [--timeout 3s]

Asks a running sidecar's admin server for /healthz (alive), or with --ready for /readyz (serving):
exit 0 when it answers 200, 1 when it does not answer or answers otherwise. The address is
admin.listen of FILE (a configuration or a bootstrap file; default: the file named by the
PARLEY_CONFIG environment variable), or --admin H:P. A wildcard listen address (0.0.0.0, ::) is
asked on loopback.
exit codes: 0 healthy, 1 unhealthy, 2 bad usage (no address, admin server disabled)`,
  async run(args) {
    const { values } = parse(this, {
      args,
      options: {
        config: { type: "string", short: "c" },
        admin: { type: "string" },
        ready: { type: "boolean", default: false },
        timeout: { type: "string", default: "3s" },
        ...HELP,
      },
    });
    if (values.help) return helped(this);
    const timeout = parseDuration(values.timeout);
    if (timeout === undefined || timeout <= 0) throw new UsageError(`--timeout: expected a duration (3s), got ${values.timeout}`, this.name);
    const file = values.config ?? process.env["PARLEY_CONFIG"];
    if (values.admin !== undefined && values.config !== undefined) throw new UsageError("--config and --admin exclude each other", this.name);
    const target = values.admin !== undefined ? hostPortFlag(this, values.admin, "--admin") : file !== undefined ? adminOf(this, file) : undefined;
    if (!target) throw new UsageError("--config FILE, --admin H:P or PARLEY_CONFIG is required", this.name);
    const url = `http://${formatHostPort(loopbackFor(target))}/${values.ready ? "readyz" : "healthz"}`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(timeout) });
      if (res.status === 200) {
        process.stdout.write(`${values.ready ? "ready" : "healthy"}: ${url}\n`);
        return 0;
      }
      process.stderr.write(`${values.ready ? "not ready" : "unhealthy"}: ${url} answered ${res.status}\n`);
    } catch (e) {
      process.stderr.write(
        `${values.ready ? "not ready" : "unhealthy"}: ${url}: ${(e as Error).cause instanceof Error ? ((e as Error).cause as Error).message : (e as Error).message}\n`,
      );
    }
    return 1;
  },
};

/** admin.listen of a configuration or bootstrap file (its shape checked, the files it names not read). */
function adminOf(command: Command, file: string): HostPort {
  const src = YamlSource.read(file);
  const doc = src.toJS();
  const listen = isBootstrapDoc(doc) ? parseWith(bootstrapSchema, doc, src).admin.listen : parseWith(configSchema, doc, src).admin.listen;
  if (listen === false) throw new UsageError(`${file} has no admin server (admin.listen: false): nothing to ask`, command.name);
  return hostPortFlag(command, listen, "admin.listen");
}

/** The server listens on every address: ask it on loopback of the same family. */
function loopbackFor(hp: HostPort): HostPort {
  if (hp.host === "0.0.0.0") return { ...hp, host: "127.0.0.1" };
  if (hp.host === "::" || hp.host === "::0") return { ...hp, host: "::1" };
  return hp;
}
