// A SPIFFE Workload API server written here from the published proto, on a unix socket: the stand-in
// for a SPIRE agent. It streams the SVID of `state` on FetchX509SVID and `jwks` on FetchJWTBundles,
// requires the security header (InvalidArgument without it, SPIFFE Workload Endpoint §6), and can be
// told to answer the next calls with a status (PermissionDenied, InvalidArgument, Unimplemented...),
// to end its open streams, or to refuse the JWT profile altogether.
import * as grpc from "@grpc/grpc-js";
import type { CertificateAuthority, Issued } from "../src/certs/issue.js";
import { loadWorkloadService } from "../src/workloadapi/message.js";
import { derFromPem } from "../src/spiffe/x509cert.js";

export interface WorkloadState {
  svid: Issued;
  /** Bundles of other trust domains, by SPIFFE ID of the domain (`spiffe://b.test`). */
  federated: Record<string, CertificateAuthority>;
}

type Stream = grpc.ServerWritableStream<unknown, unknown>;
type Method = "FetchX509SVID" | "FetchJWTBundles";

const der = (pem: string) => Buffer.concat(derFromPem(pem, "pem"));

export class TestWorkloadApi {
  readonly server = new grpc.Server();
  readonly streams = new Map<Method, Set<Stream>>([
    ["FetchX509SVID", new Set()],
    ["FetchJWTBundles", new Set()],
  ]);
  /** Calls received, by method. */
  readonly calls: Record<Method, number> = { FetchX509SVID: 0, FetchJWTBundles: 0 };
  /** Statuses the next calls of each method are answered with, in order. */
  readonly answers: Record<Method, { code: grpc.status; details: string }[]> = { FetchX509SVID: [], FetchJWTBundles: [] };
  /** Answer every FetchJWTBundles with Unimplemented (an agent without the JWT profile). */
  jwtUnimplemented = false;
  jwks = JSON.stringify({ keys: [] });
  spiffeId = "spiffe://a.test/sidecar";
  /** More roots of the SVID's own trust domain (PEM), streamed in its bundle after the CA's. */
  extraRoots: string[] = [];

  constructor(
    readonly socket: string,
    private readonly ca: CertificateAuthority,
    public state: WorkloadState,
  ) {
    this.server.addService(loadWorkloadService().service, {
      FetchX509SVID: (call: Stream) => this.fetch("FetchX509SVID", call, () => this.x509()),
      FetchJWTBundles: (call: Stream) => this.fetch("FetchJWTBundles", call, () => ({ bundles: { "spiffe://a.test": Buffer.from(this.jwks) } })),
    });
  }

  /** Answers the next `n` calls of `method` with `code`. */
  answer(method: Method, code: grpc.status, details: string, n = 1): void {
    for (let i = 0; i < n; i++) this.answers[method].push({ code, details });
  }

  private fetch(method: Method, call: Stream, msg: () => unknown): void {
    this.calls[method]++;
    if (call.metadata.get("workload.spiffe.io")[0] !== "true") {
      return void call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: "missing workload.spiffe.io header" });
    }
    if (method === "FetchJWTBundles" && this.jwtUnimplemented) return void call.emit("error", { code: grpc.status.UNIMPLEMENTED, details: "no JWT profile" });
    const answer = this.answers[method].shift();
    if (answer) return void call.emit("error", answer);
    const open = this.streams.get(method)!;
    open.add(call);
    call.on("cancelled", () => open.delete(call));
    call.write(msg());
  }

  x509() {
    const keyDer = Buffer.from(this.state.svid.keyPem.replace(/-----[^-]+-----|\s/g, ""), "base64");
    return {
      svids: [
        {
          spiffe_id: this.spiffeId,
          x509_svid: der(this.state.svid.chainPem),
          x509_svid_key: keyDer,
          bundle: der(this.ca.certPem + this.extraRoots.join("")),
          hint: "",
        },
      ],
      federated_bundles: Object.fromEntries(Object.entries(this.state.federated).map(([td, ca]) => [td, der(ca.certPem)])),
    };
  }

  /** Streams a new state to every open FetchX509SVID stream. */
  push(state: WorkloadState): void {
    this.state = state;
    for (const s of this.streams.get("FetchX509SVID")!) s.write(this.x509());
  }

  /** Ends the open streams of `method` with `code` (OK: a clean end), as an agent restarting does. */
  end(method: Method, code: grpc.status = grpc.status.OK, details = "agent restarting"): void {
    const open = this.streams.get(method)!;
    for (const s of open) {
      if (code === grpc.status.OK) s.end();
      else s.emit("error", { code, details });
    }
    open.clear();
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) =>
      this.server.bindAsync(`unix://${this.socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
    );
  }

  close(): void {
    this.server.forceShutdown();
  }
}
