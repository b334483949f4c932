// The sidecar's own SVID and trust bundles from the SPIFFE Workload API: FetchX509SVID and
// FetchJWTBundles streamed over SPIFFE_ENDPOINT_SOCKET (`unix:///path` or `tcp://IP:port`), with the
// `workload.spiffe.io: true` header on every call. Each message is the full current state; a stream
// that fails is retried with backoff (PermissionDenied means "no identity for you yet").
import { ParleyError } from "../errors/catalogue.js";
import { createHash, createPrivateKey } from "node:crypto";
import { isIP } from "node:net";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { PROTO_ROOT } from "../assets/paths.js";
import { splitDer } from "../spiffe/der.js";
import { SpiffeId, TrustDomain } from "../spiffe/spiffeid.js";
import { parseSpiffeBundle, type JwtAuthority } from "../spiffe/spiffebundle.js";
import { BundleSet, X509Bundle } from "../spiffe/x509bundle.js";
import { SvidVerifier } from "../spiffe/x509svid.js";

export interface OwnSvid {
  readonly id: SpiffeId;
  readonly certChainPem: string;
  readonly keyPem: string;
  readonly notAfter: number;
}

export interface WorkloadUpdate {
  readonly svid: OwnSvid;
  /** The SVID's trust domain, the federated ones, and JWT authorities: the complete current set. */
  readonly bundles: BundleSet;
  /** Content hash of the state this update came from. */
  readonly version: string;
}

export interface WorkloadApiOptions {
  /** `unix:///path` or `tcp://IP:port`; default SPIFFE_ENDPOINT_SOCKET. */
  readonly endpoint?: string;
  /** Use the SVID with this hint; default the first. */
  readonly hint?: string;
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  onUpdate(u: WorkloadUpdate): void;
  /** A stream failed or a message was refused; it is retried after `retryInMs` (if a stream). */
  onError(e: { stream: "x509" | "jwt"; code: string; message: string; retryInMs?: number }): void;
}

export class WorkloadApiError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_WORKLOAD_API", message);
  }
}

/** `unix:///path` or `tcp://IP:port` → a gRPC target. */
export function workloadTarget(endpoint: string): string {
  if (endpoint.startsWith("unix://")) {
    const path = endpoint.slice("unix://".length);
    if (!path.startsWith("/")) throw new WorkloadApiError(`endpoint ${endpoint}: a unix socket path must be absolute (unix:///path)`);
    return `unix://${path}`;
  }
  if (endpoint.startsWith("tcp://")) {
    const m = /^tcp:\/\/([^/]+):(\d+)$/.exec(endpoint);
    const host = m?.[1]?.replace(/^\[|\]$/g, "");
    if (!m || !host || isIP(host) === 0) throw new WorkloadApiError(`endpoint ${endpoint}: tcp:// must name an IP address and a port`);
    return isIP(host) === 6 ? `[${host}]:${m[2]}` : `${host}:${m[2]}`;
  }
  throw new WorkloadApiError(`endpoint ${endpoint}: expected unix:///path or tcp://IP:port`);
}

export function loadWorkloadService(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync("spiffe/workloadapi.proto", { keepCase: true, longs: String, defaults: true, includeDirs: [PROTO_ROOT] });
  return (grpc.loadPackageDefinition(def) as unknown as { SpiffeWorkloadAPI: grpc.ServiceClientConstructor }).SpiffeWorkloadAPI;
}

interface X509Svid {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}
interface X509Message {
  svids: X509Svid[];
  federated_bundles: Record<string, Buffer>;
}
interface JwtMessage {
  bundles: Record<string, Buffer>;
}

function pem(label: string, der: Buffer): string {
  return `-----BEGIN ${label}-----\n${der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "")}\n-----END ${label}-----\n`;
}

/** One X509SVIDResponse → the chosen SVID and the X.509 roots by trust domain. Throws on bad content. */
export function readX509Message(m: X509Message, hint: string | undefined, now: number): { svid: OwnSvid; roots: Map<string, Buffer[]> } {
  if (!m.svids?.length) throw new WorkloadApiError("response carries no SVID");
  const chosen = (hint ? m.svids.find((s) => s.hint === hint) : undefined) ?? m.svids[0]!;
  if (hint && chosen.hint !== hint) throw new WorkloadApiError(`no SVID with hint ${hint}`);
  const id = SpiffeId.parse(chosen.spiffe_id);
  const roots = new Map<string, Buffer[]>();
  roots.set(id.trustDomain.name, splitDer(chosen.bundle));
  for (const [tdId, der] of Object.entries(m.federated_bundles ?? {})) roots.set(TrustDomain.parse(tdId).name, splitDer(der));
  const chain = splitDer(chosen.x509_svid);
  if (chain.length === 0) throw new WorkloadApiError("x509_svid is empty");
  // The SVID must verify against its own trust domain's bundle, and its key must match.
  const own = new BundleSet([X509Bundle.fromDer(id.trustDomain, roots.get(id.trustDomain.name)!, `bundle of ${id.trustDomain}`)]);
  const check = new SvidVerifier(own).verify(chain, now);
  if (!check.ok) throw new WorkloadApiError(`SVID ${id} does not verify: ${check.message} (${check.rule})`);
  if (!check.svid.id.equals(id)) throw new WorkloadApiError(`spiffe_id ${id} differs from the certificate's ${check.svid.id}`);
  const keyPem = pem("PRIVATE KEY", chosen.x509_svid_key);
  if (!check.svid.leaf.x509.checkPrivateKey(createPrivateKey(keyPem))) throw new WorkloadApiError("x509_svid_key does not match the SVID");
  return { svid: { id, certChainPem: chain.map((d) => pem("CERTIFICATE", d)).join(""), keyPem, notAfter: check.svid.leaf.notAfter }, roots };
}

export class WorkloadApiSource {
  private readonly client: grpc.Client & Record<string, (req: object, md: grpc.Metadata) => grpc.ClientReadableStream<unknown>>;
  private x509: { svid: OwnSvid; roots: Map<string, Buffer[]>; hash: string } | undefined;
  private jwt: { byDomain: Map<string, JwtAuthority[]>; hash: string } = { byDomain: new Map(), hash: "" };
  private readonly calls = new Set<grpc.ClientReadableStream<unknown>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly o: WorkloadApiOptions) {
    const endpoint = o.endpoint ?? process.env.SPIFFE_ENDPOINT_SOCKET;
    if (!endpoint) throw new WorkloadApiError("no Workload API endpoint: set identity.workload_api.endpoint or SPIFFE_ENDPOINT_SOCKET");
    const Service = loadWorkloadService();
    this.client = new Service(workloadTarget(endpoint), grpc.credentials.createInsecure()) as never;
  }

  start(): void {
    this.stream("x509", "FetchX509SVID", 0);
    this.stream("jwt", "FetchJWTBundles", 0);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    for (const c of this.calls) c.cancel();
    this.client.close();
  }

  private stream(kind: "x509" | "jwt", method: string, attempt: number): void {
    if (this.stopped) return;
    const md = new grpc.Metadata();
    md.set("workload.spiffe.io", "true");
    const call = this.client[method]!({}, md);
    this.calls.add(call);
    call.on("data", (m: unknown) => {
      attempt = 0;
      try {
        if (kind === "x509") this.onX509(m as X509Message);
        else this.onJwt(m as JwtMessage);
      } catch (e) {
        this.o.onError({ stream: kind, code: "INVALID_MESSAGE", message: (e as Error).message });
      }
    });
    call.on("error", (e: grpc.ServiceError) => {
      this.calls.delete(call);
      if (this.stopped || e.code === grpc.status.CANCELLED) return;
      const b = this.o.backoff ?? { initialMs: 1000, maxMs: 30_000 };
      const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(attempt, 20));
      const retryInMs = Math.round(base / 2 + (Math.random() * base) / 2);
      this.o.onError({ stream: kind, code: grpc.status[e.code] ?? String(e.code), message: e.details || e.message, retryInMs });
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.stream(kind, method, attempt + 1);
      }, retryInMs);
      this.timers.add(t);
    });
  }

  private onX509(m: X509Message): void {
    const { svid, roots } = readX509Message(m, this.o.hint, Date.now());
    const hash = createHash("sha256");
    for (const s of m.svids) hash.update(s.x509_svid).update(s.bundle);
    for (const [k, v] of Object.entries(m.federated_bundles ?? {}).sort()) hash.update(k).update(v);
    this.x509 = { svid, roots, hash: hash.digest("hex") };
    this.publish();
  }

  private onJwt(m: JwtMessage): void {
    const byDomain = new Map<string, JwtAuthority[]>();
    const hash = createHash("sha256");
    for (const [tdId, json] of Object.entries(m.bundles ?? {}).sort()) {
      byDomain.set(TrustDomain.parse(tdId).name, [...parseSpiffeBundle(json.toString("utf8"), `JWT bundle of ${tdId}`).jwtAuthorities]);
      hash.update(tdId).update(json);
    }
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
