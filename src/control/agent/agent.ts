// The control-plane agent of a sidecar: the stream client and the sync that applies what it receives,
// over a sidecar assembled elsewhere (src/app). Credentials come from the bootstrap.
import * as grpc from "@grpc/grpc-js";
import type { Bootstrap } from "../../config/load.js";
import { formatHostPort, parseHostPort } from "../../config/units.js";
import type { Sidecar } from "../../sidecar/sidecar.js";
import type { DecisionLog } from "../../telemetry/log.js";
import { ControlClient } from "./client.js";
import { ConfigSync } from "./sync.js";

export interface ControlAgent {
  readonly sync: ConfigSync;
  stop(): void;
}

function credentialsFor(b: Bootstrap): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const tls = b.controlPlane.tls;
  if (!tls) return { credentials: grpc.credentials.createInsecure(), options: {} };
  const own = tls.mtls ? ([Buffer.from(b.identity.keyPem), Buffer.from(b.identity.certChainPem)] as const) : ([null, null] as const);
  return {
    credentials: grpc.credentials.createSsl(Buffer.from(b.controlPlane.caPem!), own[0], own[1]),
    options: tls.server_name ? { "grpc.ssl_target_name_override": tls.server_name, "grpc.default_authority": tls.server_name } : {},
  };
}

export function startAgent(sidecar: Sidecar, bootstrap: Bootstrap, log: DecisionLog, version: string): ControlAgent {
  const sync = new ConfigSync(sidecar, bootstrap, log);
  const { credentials, options } = credentialsFor(bootstrap);
  const cp = bootstrap.controlPlane;
  const client = new ControlClient({
    address: formatHostPort(parseHostPort(cp.address)!),
    node: { id: cp.node_id, ...(cp.cluster ? { cluster: cp.cluster } : {}), version },
    credentials,
    channelOptions: options,
    backoff: { initialMs: cp.backoff.initial, maxMs: cp.backoff.max },
    runningVersion: () => sync.running(),
    onPush: (v, r) => sync.onPush(v, r),
    onUp: () => sync.onUp(),
    onDown: (reason, retry) => sync.onDown(reason, retry),
  });
  client.start();
  return {
    sync,
    stop() {
      client.stop();
      sync.close();
    },
  };
}
