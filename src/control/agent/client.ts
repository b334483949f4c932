// The sidecar's end of the control-plane stream: identify the node, answer every push with an ACK or a
// NACK, and reconnect with jittered exponential backoff whenever the stream breaks. Every attempt is
// made on a new channel with its own subchannel, so a failure cached by gRPC's own reconnect backoff
// (which knows nothing of `backoff.max`) can never stand in for a fresh attempt.
import * as grpc from "@grpc/grpc-js";
import { capped, clip, clipIssue, NackCode, type WireIssue } from "../issues.js";
import { loadControlService, type WireResource } from "../wire.js";

export type PushAnswerDetail = WireIssue;
export type PushAnswer = { ok: true } | { ok: false; code: number; message: string; issues: readonly string[]; details: readonly WireIssue[] };

export interface ControlClientOptions {
  /** host:port of the control plane. */
  readonly address: string;
  readonly node: { readonly id: string; readonly cluster?: string; readonly version: string };
  readonly credentials: grpc.ChannelCredentials;
  readonly channelOptions?: grpc.ChannelOptions;
  readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  /** The version running now ("" if none): sent on (re)connect and in NACKs. */
  runningVersion(): string;
  /** Validates and applies a push; the answer becomes the ACK or NACK. */
  onPush(version: string, resources: readonly WireResource[]): Promise<PushAnswer>;
  /** The stream is established (the server answered). */
  onUp(): void;
  /** The stream broke; a reconnect is scheduled after `retryInMs`. */
  onDown(reason: string, retryInMs: number): void;
}

interface WireResponse {
  version_info?: string;
  nonce?: string;
  resources?: WireResource[];
}

type Call = grpc.ClientDuplexStream<unknown, WireResponse>;

type Stub = grpc.Client & { StreamConfig(): Call };

export class ControlClient {
  private readonly Service = loadControlService();
  private stub: Stub | undefined;
  private call: Call | undefined;
  private attempt = 0;
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Pushes are handled one at a time, in order. */
  private handling: Promise<void> = Promise.resolve();

  constructor(private readonly o: ControlClientOptions) {}

  /** A new channel on a subchannel of its own: its first connection attempt starts now. */
  private freshStub(): Stub {
    this.stub?.close();
    this.stub = new this.Service(this.o.address, this.o.credentials, {
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
      "grpc.use_local_subchannel_pool": 1,
      ...this.o.channelOptions,
    }) as unknown as Stub;
    return this.stub;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.call?.cancel();
    this.call = undefined;
    this.stub?.close();
  }

  /** Half of the capped exponential delay plus a random share of the other half. */
  private nextDelay(): number {
    const base = Math.min(this.o.backoff.maxMs, this.o.backoff.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(base / 2 + Math.random() * (base / 2));
  }

  private connect(): void {
    if (this.stopped) return;
    const call = this.freshStub().StreamConfig();
    this.call = call;
    // Up on the response headers or the first message, whichever comes first.
    let up = false;
    const isUp = () => {
      if (up || this.call !== call) return;
      up = true;
      this.attempt = 0;
      this.o.onUp();
    };
    call.on("metadata", isUp);
    call.on("data", (resp: WireResponse) => {
      isUp();
      this.handling = this.handling.then(() => this.answer(call, resp));
    });
    call.on("error", (e: grpc.ServiceError) => this.down(call, `${grpc.status[e.code]}: ${e.details || e.message}`));
    call.on("end", () => this.down(call, "stream ended by the control plane"));
    call.write({
      node: { id: this.o.node.id, cluster: this.o.node.cluster ?? "", parley_version: this.o.node.version },
      version_info: this.o.runningVersion(),
      response_nonce: "",
    });
  }

  private async answer(call: Call, resp: WireResponse): Promise<void> {
    const version = resp.version_info ?? "";
    const nonce = resp.nonce ?? "";
    let a: PushAnswer;
    try {
      a = await this.o.onPush(version, resp.resources ?? []);
    } catch (e) {
      const message = `push ${version}: ${(e as Error).message}`;
      a = { ok: false, code: NackCode.INTERNAL, message, issues: [message], details: [] };
    }
    if (this.call !== call) return; // the stream broke meanwhile; the reconnect re-announces the version
    call.write(
      a.ok ? { version_info: version, response_nonce: nonce } : { version_info: this.o.runningVersion(), response_nonce: nonce, error_detail: nackDetail(a) },
    );
  }

  private down(call: Call, reason: string): void {
    if (this.call !== call) return;
    this.call = undefined;
    call.cancel();
    if (this.stopped) return;
    const delay = this.nextDelay();
    this.o.onDown(reason, delay);
    this.retry = setTimeout(() => this.connect(), delay);
  }
}

/** The ErrorDetail of a NACK: at most MAX_ISSUES lines and details, each clipped, and the total. */
function nackDetail(a: Extract<PushAnswer, { ok: false }>) {
  const lines = capped(a.issues, (l) => clip(l));
  const details = capped(a.details, clipIssue);
  return { code: a.code, message: clip(a.message), issues: lines.items, details: details.items, issue_count: Math.max(lines.count, details.count) };
}
