// A sidecar driven by a control plane: the bootstrap's identity, an optional static configuration
// until the first push, the stream client and the sync between them.
import * as grpc from "@grpc/grpc-js";
import type { Bootstrap } from "../config/load.js";
import { formatHostPort, parseHostPort } from "../config/units.js";
import { Sidecar } from "../sidecar.js";
import type { DecisionLog } from "../telemetry/log.js";
import { ControlClient } from "./client.js";
import { ConfigSync } from "./sync.js";

export interface ControlledSidecar {
  readonly sidecar: Sidecar;
  readonly sync: ConfigSync;
  stop(drainTimeoutMs?: number): Promise<void>;
}

function credentialsFor(b: Bootstrap): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const tls = b.controlPlane.tls;
  if (!tls) return { credentials: grpc.credentials.createInsecure(), options: {} };
  const own = tls.mtls ? [Buffer.from(b.identity.keyPem), Buffer.from(b.identity.certChainPem)] as const : [null, null] as const;
  return {
    credentials: grpc.credentials.createSsl(Buffer.from(b.controlPlane.caPem!), own[0], own[1]),
    options: tls.server_name ? { "grpc.ssl_target_name_override": tls.server_name, "grpc.default_authority": tls.server_name } : {},
  };
}

export async function startControlled(bootstrap: Bootstrap, log: DecisionLog, version: string): Promise<ControlledSidecar> {
  const sidecar = new Sidecar(bootstrap.initial === "wait" ? undefined : bootstrap.initial, { log });
  if (bootstrap.initial !== "wait") await sidecar.start();
  else log.lifecycle("waiting for the first configuration from the control plane: nothing bound yet", { address: bootstrap.controlPlane.address });
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
    sidecar,
    sync,
    async stop(drainTimeoutMs?: number) {
      client.stop();
      sync.close();
      await sidecar.stop(drainTimeoutMs);
    },
  };
}
