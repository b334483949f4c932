// `parley connect`: negotiate (ALPN parley/1), print the grant, then pipe stdin/stdout through it.
import { readFileSync } from "node:fs";
import { connect as connectParley, DeniedError } from "../negotiation/client.js";
import { type Command, HELP, helped, hostPortFlag, parse, UsageError } from "./command.js";

export const connect: Command = {
  name: "connect",
  usage: `usage: parley connect HOST:PORT --cert F --key F --ca F [--servername NAME] [--role R]...
                      [--purpose TEXT] [--attestation-token FILE] [--approval-token FILE]

Negotiates a session with a parley (ALPN parley/1): requested roles, purpose and tokens; prints the
grant on stderr, then pipes standard input and output through the session.
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
  },
};
