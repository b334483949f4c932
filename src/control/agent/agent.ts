// The control-plane agent of a sidecar: the stream client and the sync that applies what it receives,
// over a sidecar assembled elsewhere (src/app). Credentials come from the bootstrap; with `mtls` and an
// identity from the Workload API, the stream waits for the first SVID and reconnects with each new one.
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { Bootstrap } from "../../config/load.js";
import { formatHostPort, parseHostPort } from "../../config/units.js";
import type { Sidecar } from "../../sidecar/sidecar.js";
import { parseCertificate } from "../../spiffe/x509cert.js";
import type { DecisionLog } from "../../telemetry/log.js";
import { ControlClient } from "./client.js";
import { ConfigSync } from "./sync.js";

export interface ControlAgent {
  readonly sync: ConfigSync;
  /** A new own SVID (from the Workload API): with mtls, the stream reconnects presenting it. */
  setIdentity(own: OwnCredentials): void;
  stop(): void;
}

type OwnCredentials = { readonly certChainPem: string; readonly keyPem: string };

/**
 * With `expect_id`, the control plane is authenticated by its SPIFFE ID (X509-SVID standard §5: the
 * peer is identified by the one URI SAN of its leaf) in place of the host name; the chain is still
 * verified against `ca` by OpenSSL.
 */
export function checkControlPlaneId(expectId: string, der: Buffer | undefined): Error | undefined {
  if (!der) return new Error("the control plane presented no certificate");
  let uris: readonly string[];
  try {
    uris = parseCertificate(der).uriSans;
  } catch (e) {
    return new Error(`the control plane's certificate cannot be read: ${(e as Error).message}`);
  }
  if (uris.length !== 1) return new Error(`the control plane's certificate has ${uris.length} URI SANs; an X509-SVID has exactly one`);
  if (uris[0] !== expectId) return new Error(`the control plane is ${uris[0]}, not the expected ${expectId}`);
  return undefined;
}

function credentialsFor(b: Bootstrap, id: OwnCredentials | undefined): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const tls = b.controlPlane.tls;
  if (!tls) return { credentials: grpc.credentials.createInsecure(), options: {} };
  const own = tls.mtls && id ? ([Buffer.from(id.keyPem), Buffer.from(id.certChainPem)] as const) : ([null, null] as const);
  const expectId = tls.expect_id;
  const verify = expectId === undefined ? {} : { checkServerIdentity: (_host: string, cert: PeerCertificate) => checkControlPlaneId(expectId, cert.raw) };
  return {
    credentials: grpc.credentials.createSsl(Buffer.from(b.controlPlane.caPem ?? ""), own[0], own[1], verify),
    options: tls.server_name ? { "grpc.ssl_target_name_override": tls.server_name, "grpc.default_authority": tls.server_name } : {},
  };
}

export function startAgent(sidecar: Sidecar, bootstrap: Bootstrap, log: DecisionLog, version: string): ControlAgent {
  const sync = new ConfigSync(sidecar, bootstrap, log);
  const cp = bootstrap.controlPlane;
  const mtls = cp.tls?.mtls === true;
  let client: ControlClient | undefined;
  let presented = bootstrap.identity?.certChainPem;
  const connect = (own: OwnCredentials | undefined) => {
    client?.stop();
    const { credentials, options } = credentialsFor(bootstrap, own);
    client = newClient(credentials, options);
    client.start();
  };
  const newClient = (credentials: grpc.ChannelCredentials, options: grpc.ChannelOptions) =>
    new ControlClient({
      address: ((hp) => (hp ? formatHostPort(hp) : cp.address))(parseHostPort(cp.address)),
      node: { id: cp.node_id, ...(cp.cluster ? { cluster: cp.cluster } : {}), version },
      credentials,
      channelOptions: options,
      backoff: { initialMs: cp.backoff.initial, maxMs: cp.backoff.max },
      runningVersion: () => sync.running(),
      onPush: (v, r) => sync.onPush(v, r),
      onUp: () => sync.onUp(),
      onDown: (reason, retry) => sync.onDown(reason, retry),
    });
  // With mtls and no SVID yet (it comes from the Workload API), nothing to present: wait for it.
  if (bootstrap.identity || !mtls) connect(bootstrap.identity);
  return {
    sync,
    setIdentity(own) {
      if (!mtls || own.certChainPem === presented) return; // a bundle-only update keeps the stream
      presented = own.certChainPem;
      connect(own);
    },
    stop() {
      client?.stop();
      sync.close();
    },
  };
}
