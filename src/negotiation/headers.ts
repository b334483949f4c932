// parley/1 over a multiplexed hop (docs/negotiation.md, "Over a multiplexed connection"): the request,
// grant and denial payloads carried in HTTP/2 header fields of a CONNECT stream instead of frames. A
// value is the payload's exact bytes, base64url without padding (RFC 4648 §5, §3.2): field values stay
// visible ASCII whatever the JSON holds (RFC 9110 §5.5, RFC 9113 §8.2.1), and the payload checks
// (UTF-8, JSON, repeated names) run on the very bytes a frame would carry. Pure: no sockets.
import { deniedBy, grantPayload, requestPayload, type DeniedError, type Grant, type GrantRequest } from "./client.js";
import { HEADER_BYTES, NegotiationError, parsePayload } from "./frame.js";

/** Field names, lowercase as HTTP/2 requires (RFC 9113 §8.2.1). */
export const REQUEST_HEADER = "parley-request";
export const GRANT_HEADER = "parley-grant";
export const DENIAL_HEADER = "parley-denial";

/**
 * The longest `parley-request` value: 7,168 characters, a payload of at most 5,376 bytes. With the
 * CONNECT's own fields (`:method`, an `:authority` of at most 261 octets, 32 octets each by RFC 9113
 * §6.5.2) it stays within the 8 KiB SETTINGS_MAX_HEADER_LIST_SIZE both ends announce, with room left.
 */
export const MAX_REQUEST_VALUE = 7168;
/** The longest `parley-grant` or `parley-denial` value: with `:status` and `parley-reason`, within 8 KiB. */
export const MAX_ANSWER_VALUE = 7680;

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/**
 * The request payload of a stream's `parley-request` fields (each value as sent; `rawHeaders` keeps
 * repeats apart, where a header object would join them). Throws NegotiationError("bad_frame").
 */
export function decodeRequestField(values: readonly string[]): Record<string, unknown> {
  if (values.length !== 1) throw new NegotiationError("bad_frame", `${REQUEST_HEADER} appears ${values.length} times; send it once`);
  const value = values[0]!;
  if (value.length > MAX_REQUEST_VALUE)
    throw new NegotiationError("bad_frame", `${REQUEST_HEADER} is ${value.length} characters; at most ${MAX_REQUEST_VALUE}`);
  return parsePayload(unbase64url(value, REQUEST_HEADER));
}

/** The values of `name` in a stream's raw header list ([name, value, name, value, …]). */
export function fieldValues(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i] === name) out.push(raw[i + 1]!);
  return out;
}

/** The value carrying a frame's payload (the bytes after its 10-byte header). */
export function payloadValue(frame: Buffer): string {
  return frame.subarray(HEADER_BYTES).toString("base64url");
}

/** The `parley-request` value for `r`; throws NegotiationError when it would be over the bound. */
export function requestValue(r: GrantRequest): string {
  const value = Buffer.from(JSON.stringify(requestPayload(r)), "utf8").toString("base64url");
  if (value.length > MAX_REQUEST_VALUE)
    throw new NegotiationError("bad_frame", `the request is ${value.length} characters in ${REQUEST_HEADER}; at most ${MAX_REQUEST_VALUE}`);
  return value;
}

/** A grant from a 200's `parley-grant` value; throws NegotiationError when it is missing or malformed. */
export function grantOf(value: unknown): Grant {
  if (typeof value !== "string") throw new NegotiationError("bad_frame", `the remote answered 200 without ${GRANT_HEADER}: it did not negotiate`);
  return grantPayload(parsePayload(unbase64url(value, GRANT_HEADER)), GRANT_HEADER);
}

/** The denial a refusal's `parley-denial` value says, as the frame client reports one. */
export function denialOf(value: string): DeniedError {
  return deniedBy(parsePayload(unbase64url(value, DENIAL_HEADER)));
}

/**
 * Bytes of a base64url value, refused unless it is the canonical encoding: only the alphabet of RFC
 * 4648 §5, no padding (§3.2), pad bits zero (§3.5). Node's decoder would skip or accept all three.
 */
function unbase64url(value: string, name: string): Buffer {
  const bytes = Buffer.from(value, "base64url");
  if (!BASE64URL.test(value) || bytes.toString("base64url") !== value)
    throw new NegotiationError("bad_frame", `${name} is not base64url without padding (RFC 4648 §5)`);
  return bytes;
}
