// `parley check`: decide offline for an identity or a certificate, and explain.
import { isIP } from "node:net";
import { loadConfig } from "../config/load.js";
import { checkOffline } from "../policy/check.js";
import { formatDecision } from "../policy/explain.js";
import { type Command, HELP, helped, parse, readFlagFile, UsageError } from "./command.js";

export const check: Command = {
  name: "check",
  usage: `usage: parley check --config FILE (--id SPIFFE-ID | --cert PEM) [--listener NAME] [--source IP]
                    [--sni NAME] [--alpn PROTO] [--txn T] [--jti J] [--at TIME] [--json]

Decides offline, as the sidecar would for a connection with these facts, and explains every rule.
  --id ID          the peer's SPIFFE ID          --cert PEM      a peer chain, verified as a live one
  --listener NAME  default: the first listener   --source IP     default 127.0.0.1
  --sni, --alpn    what the client sent          --at TIME       ISO 8601 (default now)
  --txn, --jti     the task and token id of an approval (checked against the revocations)
  --json           the decision as JSON
exit codes: 0 allow, 1 deny, 2 bad input`,
  run(args) {
    const { values } = parse(this, {
      args,
      options: {
        config: { type: "string", short: "c" },
        id: { type: "string" },
        cert: { type: "string" },
        listener: { type: "string" },
        source: { type: "string", default: "127.0.0.1" },
        sni: { type: "string" },
        alpn: { type: "string" },
        txn: { type: "string" },
        jti: { type: "string" },
        at: { type: "string" },
        json: { type: "boolean", default: false },
        ...HELP,
      },
    });
    if (values.help) return helped(this);
    if (!values.config) throw new UsageError("--config FILE is required", this.name);
    if (!values.id && !values.cert) throw new UsageError("--id SPIFFE-ID or --cert PEM is required", this.name);
    const now = values.at === undefined ? Date.now() : Date.parse(values.at);
    if (Number.isNaN(now)) throw new UsageError(`--at: expected an ISO 8601 time, got ${values.at}`, this.name);
    if (!isIP(values.source)) throw new UsageError(`--source: expected an IP address, got ${values.source}`, this.name);
    // The configuration (the sidecar's own SVID included) is checked as of now: --at is the time of the
    // connection being decided, not of the sidecar's start.
    const config = loadConfig(values.config);
    const result = checkOffline(config, {
      ...(values.id !== undefined ? { id: values.id } : {}),
      ...(values.cert !== undefined ? { certPem: readFlagFile(this, "--cert", values.cert) } : {}),
      ...(values.listener !== undefined ? { listener: values.listener } : {}),
      sourceAddress: values.source,
      sni: values.sni ?? null,
      alpn: values.alpn ?? null,
      ...(values.txn !== undefined ? { txn: values.txn } : {}),
      ...(values.jti !== undefined ? { jti: values.jti } : {}),
      now,
    });
    process.stdout.write(values.json ? JSON.stringify(result.decision) + "\n" : formatDecision(result.decision, result.peerId));
    return result.decision.decision === "allow" ? 0 : 1;
  },
};
