// The sidecar's own SVID and trust bundles from the SPIFFE Workload API: FetchX509SVID and
// FetchJWTBundles streamed over SPIFFE_ENDPOINT_SOCKET, with the `workload.spiffe.io: true` header on
// every call (SPIFFE Workload Endpoint §3). Each message is the full current state (Workload API §4.3).
// Stream endings, by the standards:
// - a stream that delivered and then ended (either side, any status) is reopened at once (API §4.2);
//   failures after that back off exponentially with jitter (Endpoint §6: Unavailable, PermissionDenied);
// - PermissionDenied once an SVID was issued withdraws it (API §5.2.1: "cease using the redacted
//   SVIDs"): `onWithdrawn`, then retried with backoff; on the JWT stream it unloads the JWT bundles;
// - InvalidArgument and Unimplemented are reported and that stream is not retried (Endpoint §6, App. A).
import { createHash } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { JwtAuthority } from "../spiffe/spiffebundle.js";
import { TrustDomain } from "../spiffe/spiffeid.js";
import { BundleSet, X509Bundle } from "../spiffe/x509bundle.js";
import { WorkloadApiError, workloadTarget } from "./endpoint.js";
import { loadWorkloadService, readJwtMessage, readX509Message, type JwtMessage, type OwnSvid, type X509Message } from "./message.js";

export { WorkloadApiError } from "./endpoint.js";
export type { OwnSvid } from "./message.js";

export interface WorkloadUpdate {
  readonly svid: OwnSvid;
  /** The SVID's trust domain, the federated ones, and JWT authorities: the complete current set. */
  readonly bundles: BundleSet;
  /** Content hash of the state this update came from. */
  readonly version: string;
}

export type StreamKind = "x509" | "jwt";

export interface StreamError {
  readonly stream: StreamKind;
  /** A gRPC status name, or INVALID_MESSAGE for a message discarded (API §4.5). */
  readonly code: string;
  readonly message: string;
  /** When the stream is retried; absent when it is given up (InvalidArgument, Unimplemented) or still open. */
  readonly retryInMs?: number;
  /** True when the stream is given up for good. */
  readonly final: boolean;
}

export interface WorkloadApiOptions {
  /** `unix:/path`, `unix:///path` or `tcp://IP:port`; default SPIFFE_ENDPOINT_SOCKET. */
  readonly endpoint?: string;
  /** Use the SVID with this hint; default the first. */
  readonly hint?: string;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  onUpdate(u: WorkloadUpdate): void;
  /** The SVID in use was withdrawn (PermissionDenied after it was issued): stop using it. */
  onWithdrawn(e: { code: string; message: string }): void;
  onError(e: StreamError): void;
}

/** What readiness and metrics show of the source. */
export interface WorkloadApiStatus {
  readonly endpoint: string;
  /** The X.509 stream is open and has delivered. */
  readonly connected: boolean;
  /** When the last usable message arrived (ms since the epoch). */
  readonly lastUpdate: number | undefined;
  /** Why the X.509 stream was given up, if it was. */
  readonly failed: string | undefined;
}

const DEFAULT_BACKOFF = { initialMs: 1000, maxMs: 30_000 };
const MAX_REOPENS = 5;
const METHOD = { x509: "FetchX509SVID", jwt: "FetchJWTBundles" } as const;
/** Endpoint §6 and Appendix A: report, do not retry. */
const FINAL = new Set<number>([grpc.status.INVALID_ARGUMENT, grpc.status.UNIMPLEMENTED]);

export class WorkloadApiSource {
  private readonly client: grpc.Client & Record<(typeof METHOD)[StreamKind], (req: object, md: grpc.Metadata) => grpc.ClientReadableStream<unknown>>;
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  private x509: { svid: OwnSvid; roots: Map<string, Buffer[]>; hash: string } | undefined;
  private jwt: { byDomain: Map<string, JwtAuthority[]>; hash: string } = { byDomain: new Map(), hash: "" };
  private readonly calls = new Set<grpc.ClientReadableStream<unknown>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopped = false;
  private x509Open = false;
  private lastUpdate: number | undefined;
  private failed: string | undefined;
  readonly endpoint: string;

  constructor(private readonly o: WorkloadApiOptions) {
    const endpoint = o.endpoint ?? process.env.SPIFFE_ENDPOINT_SOCKET;
    if (!endpoint) throw new WorkloadApiError("no Workload API endpoint: set identity.workload_api.endpoint or SPIFFE_ENDPOINT_SOCKET");
    this.endpoint = endpoint;
    this.backoff = o.backoff ?? DEFAULT_BACKOFF;
    const Service = loadWorkloadService();
    // The channel's own reconnect backoff follows ours, so a reopened call is not held back by it.
    this.client = new Service(workloadTarget(endpoint), grpc.credentials.createInsecure(), {
      "grpc.initial_reconnect_backoff_ms": this.backoff.initialMs,
      "grpc.max_reconnect_backoff_ms": this.backoff.maxMs,
    }) as never;
  }

  get status(): WorkloadApiStatus {
    return { endpoint: this.endpoint, connected: this.x509Open, lastUpdate: this.lastUpdate, failed: this.failed };
  }

  start(): void {
    this.stream("x509", 0, 0);
    this.stream("jwt", 0, 0);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    for (const c of this.calls) c.cancel();
    this.client.close();
  }

  /** `reopens`: how many times in a row this stream was reopened at once after ending. */
  private stream(kind: StreamKind, attempt: number, reopens: number): void {
    if (this.stopped) return;
    const md = new grpc.Metadata();
    md.set("workload.spiffe.io", "true");
    const call = this.client[METHOD[kind]]({}, md);
    this.calls.add(call);
    let delivered = 0;
    call.on("data", (m: unknown) => {
      // A second message shows a stream that lives: the count of quick reopens starts again.
      if (++delivered > 1) reopens = 0;
      if (kind === "x509") this.x509Open = true;
      try {
        if (kind === "x509") this.onX509(m as X509Message);
        else this.onJwt(m as JwtMessage);
        this.lastUpdate = Date.now();
      } catch (e) {
        // API §4.5: report and discard the message; the stream stays open.
        this.o.onError({ stream: kind, code: "INVALID_MESSAGE", message: (e as Error).message, final: false });
      }
    });
    call.on("error", () => {}); // the status below says it all
    call.on("status", (s: grpc.StatusObject) => {
      this.calls.delete(call);
      if (kind === "x509") this.x509Open = false;
      if (this.stopped) return;
      // API §4.2: a connection that worked is re-established immediately (at most MAX_REOPENS times in a
      // row, so a server that ends every stream after one message is not called in a busy loop);
      // failures back off.
      const now = delivered > 0 && reopens < MAX_REOPENS;
      this.ended(kind, s, now ? 0 : delivered > 0 ? 1 : attempt + 1, now ? reopens + 1 : 0);
    });
  }

  /** Reports the end and schedules the next call: at once when `attempt` is 0, else after a backoff. */
  private ended(kind: StreamKind, s: grpc.StatusObject, attempt: number, reopens: number): void {
    const code = (grpc.status[s.code] as string | undefined) ?? String(s.code);
    const message = s.details || (s.code === grpc.status.OK ? "stream ended by the server" : code);
    if (FINAL.has(s.code)) {
      if (kind === "x509") this.failed = `${code}: ${message}`;
      return void this.o.onError({ stream: kind, code, message, final: true });
    }
    if (s.code === grpc.status.PERMISSION_DENIED) this.redacted(kind, code, message);
    const retryInMs = attempt === 0 ? 0 : this.delay(attempt);
    this.o.onError({ stream: kind, code, message, retryInMs, final: false });
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.stream(kind, attempt, reopens);
    }, retryInMs);
    this.timers.add(t);
  }

  /** API §5.2.1, §6.2.2: PermissionDenied redacts everything that stream gave. */
  private redacted(kind: StreamKind, code: string, message: string): void {
    if (kind === "jwt") {
      if (this.jwt.byDomain.size === 0) return;
      this.jwt = { byDomain: new Map(), hash: "" };
      return void this.publish();
    }
    if (!this.x509) return;
    this.x509 = undefined;
    this.o.onWithdrawn({ code, message });
  }

  /** Half of the capped exponential delay plus a random share of the other half. */
  private delay(attempt: number): number {
    const base = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(attempt - 1, 20));
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }

  private onX509(m: X509Message): void {
    const { svid, roots } = readX509Message(m, this.o.hint, Date.now());
    const hash = createHash("sha256");
    for (const s of m.svids) hash.update(s.x509_svid).update(s.bundle);
    for (const [k, v] of Object.entries(m.federated_bundles).sort()) hash.update(k).update(v);
    this.x509 = { svid, roots, hash: hash.digest("hex") };
    this.publish();
  }

  private onJwt(m: JwtMessage): void {
    const byDomain = readJwtMessage(m);
    const hash = createHash("sha256");
    for (const [tdId, json] of Object.entries(m.bundles).sort()) hash.update(tdId).update(json);
    this.jwt = { byDomain, hash: hash.digest("hex") };
    this.publish();
  }

  /** Publishes the combined state once an SVID is known. */
  private publish(): void {
    if (!this.x509) return;
    const { svid, roots } = this.x509;
    const domains = new Set([...roots.keys(), ...this.jwt.byDomain.keys()]);
    const bundles = [...domains].map((td) =>
      X509Bundle.fromDer(TrustDomain.parse(td), roots.get(td) ?? [], `bundle of ${td}`, this.jwt.byDomain.get(td) ?? []),
    );
    const version = createHash("sha256").update(this.x509.hash).update(this.jwt.hash).digest("hex").slice(0, 16);
    this.o.onUpdate({ svid, bundles: new BundleSet(bundles), version });
  }
}
