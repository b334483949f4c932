// `parley connect`: negotiate (ALPN parley/1), print the grant, then pipe stdin/stdout through it.
import { connect as connectParley, DeniedError } from "../negotiation/client.js";
import { SpiffeId } from "../spiffe/spiffeid.js";
import { type Command, HELP, helped, hostPortFlag, parse, readFlagFile, UsageError } from "./command.js";

export const connect: Command = {
  name: "connect",
  usage: `usage: parley connect HOST:PORT --cert F --key F --ca F [--expect-id SPIFFE_ID] [--servername NAME]
                      [--role R]... [--purpose TEXT] [--attestation-token FILE] [--approval-token FILE]

Negotiates a session with a parley (ALPN parley/1): requested roles, purpose and tokens; prints the
grant on stderr, then pipes standard input and output through the session. With --expect-id the
sidecar's certificate must name exactly that SPIFFE ID (its hostname is then not checked).
exit codes: 0 done, 1 denied, 2 bad usage, 3 could not connect`,
  async run(args) {
    const { values, positionals } = parse(this, {
      args,
      allowPositionals: true,
      options: {
        cert: { type: "string" },
        key: { type: "string" },
        ca: { type: "string" },
        servername: { type: "string" },
        "expect-id": { type: "string" },
        role: { type: "string", multiple: true },
        purpose: { type: "string" },
        "attestation-token": { type: "string" },
        "approval-token": { type: "string" },
        ...HELP,
      },
    });
    if (values.help) return helped(this);
    const target = hostPortFlag(this, positionals[0], "HOST:PORT");
    if (!target || !values.cert || !values.key || !values.ca) throw new UsageError("HOST:PORT --cert F --key F --ca F are required", this.name);
    const expectId = values["expect-id"] !== undefined ? SpiffeId.tryParse(values["expect-id"]) : undefined;
    if (expectId instanceof Error) throw new UsageError(`--expect-id: ${expectId.message}`, this.name);
    // Every file is read before dialling: an unreadable path is bad input (2), not a failed connection (3).
    const file = (flag: string, path: string) => readFlagFile(this, flag, path);
    const options = {
      host: target.host,
      port: target.port,
      cert: file("--cert", values.cert),
      key: file("--key", values.key),
      ca: file("--ca", values.ca),
      ...(values.servername ? { servername: values.servername } : {}),
      ...(expectId ? { expectId: expectId.toString() } : {}),
      roles: values.role ?? [],
      ...(values.purpose !== undefined ? { purpose: values.purpose } : {}),
      ...(values["attestation-token"] !== undefined ? { attestationToken: file("--attestation-token", values["attestation-token"]).trim() } : {}),
      ...(values["approval-token"] !== undefined ? { approvalToken: file("--approval-token", values["approval-token"]).trim() } : {}),
    };
    try {
      const { socket, grant } = await connectParley(options);
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
  },
};
