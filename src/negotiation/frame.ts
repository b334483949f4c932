// Negotiation frames (docs/negotiation.md): a 10-byte header ("PRLY", version, type, length) and a
// JSON payload. Pure: bytes in, values or NegotiationError out.

import { ParleyError } from "../errors/catalogue.js";
export const MAGIC = Buffer.from("PRLY", "latin1");
export const VERSION = 1;
export const HEADER_BYTES = 10;
export const MAX_PAYLOAD = 16_384;
export const ALPN = "parley/1";

export enum FrameType {
  Request = 1,
  Grant = 2,
  Denial = 3,
}

const FRAME_TYPES: ReadonlySet<number> = new Set([FrameType.Request, FrameType.Grant, FrameType.Denial]);
const isFrameType = (t: number): t is FrameType => FRAME_TYPES.has(t);

export type DenialCode = "bad_frame" | "unsupported_version" | "frame_timeout" | "token_invalid" | "denied";

export class NegotiationError extends ParleyError {
  constructor(
    readonly denial: DenialCode,
    message: string,
  ) {
    super("PARLEY_ERR_NEGOTIATION", message);
  }
}

export interface RequestFrame {
  readonly roles: readonly string[];
  readonly purpose?: string;
  readonly attestation_token?: string;
  readonly approval_token?: string;
}

export function encodeFrame(type: FrameType, payload: object): Buffer {
  const body = Buffer.from(JSON.stringify(payload), "utf8");
  if (body.length > MAX_PAYLOAD) throw new NegotiationError("bad_frame", `payload of ${body.length} bytes is over ${MAX_PAYLOAD}`);
  const head = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(head, 0);
  head[4] = VERSION;
  head[5] = type;
  head.writeUInt32BE(body.length, 6);
  return Buffer.concat([head, body]);
}

/**
 * Reads one frame from the front of `buf`: undefined if more bytes are needed, else the frame and how
 * many bytes it took. Throws NegotiationError for anything that can never become a valid frame.
 */
export function decodeFrame(buf: Buffer): { type: FrameType; payload: Record<string, unknown>; size: number } | undefined {
  const magicSeen = Math.min(buf.length, 4);
  if (!buf.subarray(0, magicSeen).equals(MAGIC.subarray(0, magicSeen))) throw new NegotiationError("bad_frame", "not a parley frame (bad magic)");
  if (buf.length < HEADER_BYTES) return undefined;
  if (buf[4] !== VERSION) throw new NegotiationError("unsupported_version", `frame version ${buf[4]}; this sidecar speaks ${VERSION}`);
  const type = buf[5]!;
  if (!isFrameType(type)) throw new NegotiationError("bad_frame", `unknown frame type ${type}`);
  const length = buf.readUInt32BE(6);
  if (length > MAX_PAYLOAD) throw new NegotiationError("bad_frame", `payload of ${length} bytes is over ${MAX_PAYLOAD}`);
  if (buf.length < HEADER_BYTES + length) return undefined;
  let payload: unknown;
  try {
    payload = JSON.parse(buf.subarray(HEADER_BYTES, HEADER_BYTES + length).toString("utf8"));
  } catch {
    throw new NegotiationError("bad_frame", "payload is not JSON");
  }
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) throw new NegotiationError("bad_frame", "payload is not a JSON object");
  return { type, payload: payload as Record<string, unknown>, size: HEADER_BYTES + length };
}

const REQUEST_FIELDS = new Set(["roles", "purpose", "attestation_token", "approval_token"]);

/** Checks a request payload's shape. */
export function readRequest(p: Record<string, unknown>): RequestFrame {
  for (const k of Object.keys(p)) if (!REQUEST_FIELDS.has(k)) throw new NegotiationError("bad_frame", `unknown request field ${k}`);
  const roles = p.roles ?? [];
  if (!Array.isArray(roles) || roles.length > 64 || !roles.every((r) => typeof r === "string" && r.length > 0 && r.length <= 63)) {
    throw new NegotiationError("bad_frame", "roles must be an array of at most 64 role names");
  }
  for (const k of ["purpose", "attestation_token", "approval_token"] as const) {
    if (p[k] !== undefined && typeof p[k] !== "string") throw new NegotiationError("bad_frame", `${k} must be a string`);
  }
  if (typeof p.purpose === "string" && p.purpose.length > 512) throw new NegotiationError("bad_frame", "purpose is over 512 characters");
  return {
    roles: [...new Set(roles as string[])],
    ...(p.purpose !== undefined ? { purpose: p.purpose as string } : {}),
    ...(p.attestation_token !== undefined ? { attestation_token: p.attestation_token as string } : {}),
    ...(p.approval_token !== undefined ? { approval_token: p.approval_token as string } : {}),
  };
}
