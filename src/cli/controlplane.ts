// `parley control-plane`: serve a directory of resource files to sidecars. Plaintext only on loopback
// unless the operator says --insecure; with client bundles, each sidecar's X509-SVID is verified by the
// SPIFFE rules and its node id bound to its SPIFFE ID (src/control/server/authorize.ts).
import { runUntilSignalled } from "../app/lifecycle.js";
import { serverCredentials, startControlPlane } from "../control/server/plane.js";
import { isLoopback } from "../config/units.js";
import { TrustDomain } from "../spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../spiffe/x509bundle.js";
import { SvidVerifier } from "../spiffe/x509svid.js";
import { createLogger } from "../telemetry/log.js";
import { type Command, directoryFlag, HELP, helped, hostPortFlag, parse, readFlagFile, UsageError } from "./command.js";

/** `--client-bundle TD=FILE`, each a PEM file of roots or a SPIFFE bundle document. */
function clientBundles(command: Command, specs: readonly string[]): BundleSet | undefined {
  if (specs.length === 0) return undefined;
  const bundles = specs.map((spec) => {
    const eq = spec.indexOf("=");
    if (eq <= 0) throw new UsageError(`--client-bundle ${spec}: expected TRUST_DOMAIN=FILE`, command.name);
    const file = spec.slice(eq + 1);
    const text = readFlagFile(command, "--client-bundle", file);
    try {
      return X509Bundle.fromDocument(TrustDomain.parse(spec.slice(0, eq)), text, file);
    } catch (e) {
      throw new UsageError(`--client-bundle ${spec}: ${(e as Error).message}`, command.name);
    }
  });
  return new BundleSet(bundles);
}

export const controlPlane: Command = {
  name: "control-plane",
  usage: `usage: parley control-plane --dir DIR [--listen H:P] [--admin H:P]
                            [--tls-cert F --tls-key F [--client-bundle TD=F ...]] [--insecure]

Serves DIR's resource files (shared.yaml, nodes/<id>.yaml) to sidecars over gRPC and reloads them
when they change (and on SIGHUP); http://ADMIN/status shows which node has ACKed which version.
  --listen H:P   gRPC address (default 127.0.0.1:18000)
  --admin H:P    status address (default 127.0.0.1:18001, loopback: it is for this host)
  --tls-cert F --tls-key F   serve TLS with this certificate (the control plane's own SVID)
  --client-bundle TD=F       require client SVIDs of trust domain TD, verified against bundle F (PEM
                             or SPIFFE bundle); repeat for more domains. Node ids are then bound to
                             SPIFFE IDs by the identity: of nodes/<id>.yaml
  --insecure     allow plaintext on an address other than loopback (logged as a warning)`,
  async run(args) {
    const { values } = parse(this, {
      args,
      options: {
        dir: { type: "string" },
        listen: { type: "string", default: "127.0.0.1:18000" },
        admin: { type: "string", default: "127.0.0.1:18001" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "client-bundle": { type: "string", multiple: true, default: [] },
        insecure: { type: "boolean", default: false },
        ...HELP,
      },
    });
    if (values.help) return helped(this);
    if (!values.dir) throw new UsageError("--dir DIR is required", this.name);
    const dir = directoryFlag(this, "--dir", values.dir);
    const listen = hostPortFlag(this, values.listen, "--listen");
    const admin = hostPortFlag(this, values.admin, "--admin");
    if ((values["tls-cert"] === undefined) !== (values["tls-key"] === undefined)) throw new UsageError("--tls-cert and --tls-key go together", this.name);
    const bundles = clientBundles(this, values["client-bundle"]);
    if (bundles && !values["tls-cert"]) throw new UsageError("--client-bundle needs --tls-cert and --tls-key", this.name);
    const host = listen.host;
    const plaintext = values["tls-cert"] === undefined;
    if (plaintext && !isLoopback(host) && !values.insecure) {
      throw new UsageError(`refusing plaintext on ${values.listen}, which is not loopback: serve TLS (--tls-cert, --tls-key) or say --insecure`, this.name);
    }
    const logger = createLogger("info");
    if (plaintext && !isLoopback(host)) {
      logger.warn(
        { event: "insecure", listen: values.listen },
        "--insecure: serving configuration in plaintext, without client authentication, beyond this host",
      );
    }
    const credentials =
      values["tls-cert"] === undefined
        ? undefined
        : serverCredentials(
            Buffer.from(readFlagFile(this, "--tls-cert", values["tls-cert"])),
            Buffer.from(readFlagFile(this, "--tls-key", values["tls-key"] ?? "")),
            bundles,
          );
    await runUntilSignalled(async () => {
      const cp = await startControlPlane({
        dir,
        listen: values.listen,
        admin,
        ...(credentials ? { credentials } : {}),
        ...(bundles ? { clientSvids: new SvidVerifier(bundles) } : {}),
        log: logger,
      });
      return { reload: () => cp.reload(), stop: () => cp.close().then(() => new Promise<void>((r) => logger.flush(() => r()))) };
    });
    return -1;
  },
};
