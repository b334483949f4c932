// `parley certs dev`: the development PKI the demo runs on.
import { DEV_CERTS } from "../assets/paths.js";
import { generateDevCerts } from "../certs/dev.js";
import { type Command, HELP, helped, parse, UsageError } from "./command.js";

export const certs: Command = {
  name: "certs",
  usage: `usage: parley certs dev [--dir DIR] [--key-type ec-p256|rsa-2048]

Makes a new development PKI (trust bundles, intermediates, one SVID per demo identity).
  --dir DIR       default: certs-dev/ of the package
  --key-type T    ec-p256 (default) or rsa-2048`,
  async run(args) {
    const { values, positionals } = parse(this, {
      args,
      allowPositionals: true,
      options: { dir: { type: "string" }, "key-type": { type: "string" }, ...HELP },
    });
    if (values.help) return helped(this);
    if (positionals[0] !== "dev" || positionals.length !== 1) throw new UsageError("the only subcommand is 'dev'", this.name);
    const keyType = values["key-type"] ?? "ec-p256";
    if (keyType !== "ec-p256" && keyType !== "rsa-2048") throw new UsageError(`--key-type: expected ec-p256 or rsa-2048, got ${keyType}`, this.name);
    const dir = values.dir ?? DEV_CERTS;
    await generateDevCerts(dir, keyType);
    process.stdout.write(`wrote development certificates (${keyType}) to ${dir}\n`);
    return 0;
  },
};
