// `npm start`: the echo workload and a sidecar in front of it, on the dev certificates, with a note on
// how to try it.
import { relative } from "node:path";
import { DEMO_CONFIG, DEV_CERTS, packageVersion } from "../assets/paths.js";
import { loadConfig, type SidecarConfig } from "../config/load.js";
import { formatHostPort, type HostPort } from "../config/units.js";
import { devCertsFresh, DEV_IDENTITIES, generateDevCerts } from "../certs/dev.js";
import { assembleSidecar, type RunningSidecar } from "../app/assemble.js";
import type { Sidecar } from "../sidecar/sidecar.js";
import type { DecisionLog } from "../telemetry/log.js";
import { startEcho, type EchoServer } from "./echo.js";

export interface DemoOptions {
  readonly listen?: HostPort | undefined;
  readonly upstream?: HostPort | undefined;
  /** Admin server address (default from the demo config: 127.0.0.1:15000). */
  readonly admin?: string;
  /** Where the how-to-try text goes. */
  readonly print: (text: string) => void;
}

export interface Demo {
  readonly sidecar: Sidecar;
  readonly echo: EchoServer;
  readonly log: DecisionLog;
  reload(): void;
  stop(): Promise<void>;
}

export async function startDemo(opts: DemoOptions): Promise<Demo> {
  if (!devCertsFresh(DEV_CERTS)) {
    opts.print(`dev certificates in ${DEV_CERTS} are missing or expiring: making a new set\n`);
    await generateDevCerts(DEV_CERTS);
  }
  const loaded = loadConfig(DEMO_CONFIG);
  const base = loaded.listeners[0];
  if (!base) throw new Error(`${DEMO_CONFIG} has no listener`);
  const upstreamWanted = opts.upstream ?? base.upstream;
  const echo = await startEcho(upstreamWanted.host, upstreamWanted.port);
  const echoAddr = echo.server.address() as { address: string; port: number };
  const config: SidecarConfig = {
    ...loaded,
    listeners: [{ ...base, listen: opts.listen ?? base.listen, upstream: { host: echoAddr.address, port: echoAddr.port } }],
  };
  let running: RunningSidecar;
  try {
    running = await assembleSidecar(
      { kind: "file", config, watch: false },
      { version: packageVersion(), ...(opts.admin !== undefined ? { admin: { ...config.admin, listen: opts.admin } } : {}) },
    );
  } catch (e) {
    await echo.close();
    throw e;
  }
  const { sidecar, log, admin } = running;
  const at = sidecar.addresses()[base.name];
  if (!at) throw new Error(`listener ${base.name} is not bound`);
  opts.print(banner(at, echoAddr, admin?.port));
  return {
    sidecar,
    echo,
    log,
    // The demo's configuration is the file with its addresses replaced: a reload would undo that.
    reload: () => log.lifecycle("SIGHUP ignored by the demo", {}),
    async stop() {
      await running.stop();
      await echo.close();
    },
  };
}

/** `openssl s_client` as a peer with the identity in `name`.pem: -cert_chain sends the chain's intermediates too. */
function sClient(at: string, certs: string, name: string): string {
  const pem = `${certs}/${name}.pem`;
  return `openssl s_client -connect ${at} -cert ${pem} -cert_chain ${pem} -key ${certs}/${name}.key -CAfile ${certs}/parley.demo.bundle.pem -quiet`;
}

function curl(port: number, certs: string, name: string): string {
  return `curl --cacert ${certs}/parley.demo.bundle.pem --cert ${certs}/${name}.pem --key ${certs}/${name}.key https://localhost:${port}/`;
}

// Every command line the banner prints works when pasted (test/demo.test.ts runs each of them).
function banner(listen: { address: string; port: number }, upstream: { address: string; port: number }, adminPort: number | undefined): string {
  const certs = relative(process.cwd(), DEV_CERTS) || ".";
  const at = formatHostPort({ host: listen.address, port: listen.port });
  const who = DEV_IDENTITIES.map((d) => `    ${d.file.padEnd(9)} ${d.id.padEnd(44)} ${d.demo}`).join("\n");
  return `
parley demo: sidecar listening on ${at} (mTLS), workload (echo) on ${formatHostPort({ host: upstream.address, port: upstream.port })}
Decision logs are JSON lines on stdout. Identities in ${certs}/:
${who}

Try it (any name above in place of frontend):
  ${sClient(at, certs, "frontend")}
      (allowed: type a line, the workload echoes it back)
  ${sClient(at, certs, "billing")}
      (allowed: -cert_chain also sends billing's intermediate, which its trust domain's root signed)
  ${sClient(at, certs, "reporter")}
      (denied: the connection is closed at once)
  ${curl(listen.port, certs, "frontend")}
  ${curl(listen.port, certs, "reporter")}

${adminPort === undefined ? "" : `Admin server (also /healthz /readyz /config /sessions):\n  curl http://127.0.0.1:${adminPort}/metrics\n`}
Ctrl-C (or SIGTERM) drains and stops.
`;
}
