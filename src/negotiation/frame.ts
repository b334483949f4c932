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

/** The denial frame's `code`: what kind of refusal (docs/negotiation.md, "Denial"). */
export type DenialCode = "bad_frame" | "unsupported_version" | "frame_timeout" | "token_invalid" | "denied" | "upstream_unavailable";

/** Request bounds (docs/negotiation.md, "Request"); lengths in Unicode code points. */
export const MAX_ROLES = 64;
export const MAX_ROLE_LENGTH = 63;
export const MAX_PURPOSE_LENGTH = 512;

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
  const payload = parsePayload(buf.subarray(HEADER_BYTES, HEADER_BYTES + length));
  return { type, payload, size: HEADER_BYTES + length };
}

// RFC 8259 §8.1: JSON exchanged between systems is UTF-8; ill-formed sequences are refused, not replaced,
// and a byte order mark is not skipped (it makes the payload fail as JSON).
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A payload's checks, apart from the framing (a multiplexed stream carries the payload in a header):
 * UTF-8, JSON, an object, no repeated member names. Throws NegotiationError("bad_frame").
 */
export function parsePayload(bytes: Buffer): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new NegotiationError("bad_frame", "payload is not valid UTF-8");
  }
  let payload: unknown;
  try {
    payload = JSON.parse(text);
  } catch {
    throw new NegotiationError("bad_frame", "payload is not JSON");
  }
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) throw new NegotiationError("bad_frame", "payload is not a JSON object");
  const dup = duplicateName(text);
  if (dup !== undefined) throw new NegotiationError("bad_frame", `member name ${JSON.stringify(dup)} appears twice in one object`);
  return payload as Record<string, unknown>;
}

/**
 * The first member name that repeats within one object of `text` (already valid JSON), if any. RFC 8259
 * §4 leaves duplicates to the parser (JSON.parse keeps the last); I-JSON (RFC 7493 §2.3) forbids them,
 * and so does parley: two `approval_token`s must not mean whichever came last.
 */
export function duplicateName(text: string): string | undefined {
  const objects: (Set<string> | undefined)[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === "{") objects.push(new Set());
    else if (c === "[") objects.push(undefined);
    else if (c === "}" || c === "]") objects.pop();
    else if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      let k = j + 1;
      while (k < text.length && " \t\n\r".includes(text[k]!)) k++;
      const names = objects.at(-1);
      if (names && text[k] === ":") {
        const name = JSON.parse(text.slice(i, j + 1)) as string;
        if (names.has(name)) return name;
        names.add(name);
      }
      i = j;
    }
  }
  return undefined;
}

const REQUEST_FIELDS = new Set(["roles", "purpose", "attestation_token", "approval_token"]);

/** Checks a request payload's shape. */
export function readRequest(p: Record<string, unknown>): RequestFrame {
  for (const k of Object.keys(p)) if (!REQUEST_FIELDS.has(k)) throw new NegotiationError("bad_frame", `unknown request field ${k}`);
  const roles = readRoles(p.roles ?? []);
  for (const k of ["purpose", "attestation_token", "approval_token"] as const) {
    if (p[k] !== undefined && typeof p[k] !== "string") throw new NegotiationError("bad_frame", `${k} must be a string`);
  }
  if (typeof p.purpose === "string" && codePoints(p.purpose) > MAX_PURPOSE_LENGTH)
    throw new NegotiationError("bad_frame", `purpose is ${codePoints(p.purpose)} characters; at most ${MAX_PURPOSE_LENGTH}`);
  return {
    roles,
    ...(p.purpose !== undefined ? { purpose: p.purpose as string } : {}),
    ...(p.attestation_token !== undefined ? { attestation_token: p.attestation_token as string } : {}),
    ...(p.approval_token !== undefined ? { approval_token: p.approval_token as string } : {}),
  };
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** The requested roles, duplicates dropped; each bound names the rule it breaks. */
function readRoles(roles: unknown): string[] {
  if (!Array.isArray(roles)) throw new NegotiationError("bad_frame", "roles must be an array of role names");
  if (roles.length > MAX_ROLES) throw new NegotiationError("bad_frame", `roles has ${roles.length} entries; at most ${MAX_ROLES}`);
  roles.forEach((r: unknown, i) => {
    if (typeof r !== "string") throw new NegotiationError("bad_frame", `roles[${i}] is not a string`);
    const n = codePoints(r);
    if (n === 0 || n > MAX_ROLE_LENGTH) throw new NegotiationError("bad_frame", `roles[${i}] is ${n} characters; role names are 1 to ${MAX_ROLE_LENGTH}`);
  });
  return [...new Set(roles as string[])];
}
