// Reading DER by its ASN.1 tag-length headers: splitting a run of concatenated structures (how the
// Workload API sends certificate chains and bundles), walking the fields of a constructed value, and
// decoding the few primitive types X.509 needs (OBJECT IDENTIFIER, BOOLEAN, INTEGER, BIT STRING, times).

import { ParleyError } from "../errors/catalogue.js";
export class DerError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_DER", message);
  }
}

/** One tag-length-value: its tag byte, where it starts (header included), its content, and its end. */
export interface Tlv {
  readonly tag: number;
  readonly at: number;
  readonly start: number;
  readonly end: number;
}

/** Reads the TLV at `at` (single-byte tags, definite lengths of up to 4 bytes); throws DerError. */
export function readTlv(buf: Buffer, at: number): Tlv {
  const tag = buf[at];
  const first = buf[at + 1];
  if (tag === undefined || first === undefined) throw new DerError(`byte ${at}: truncated header`);
  if ((tag & 0x1f) === 0x1f) throw new DerError(`byte ${at}: multi-byte tags are not used in X.509`);
  let len = first;
  let header = 2;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 4 || at + 2 + n > buf.length) throw new DerError(`byte ${at}: unsupported or truncated length of ${n} bytes`);
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + buf.readUInt8(at + 2 + k);
    header = 2 + n;
  }
  const end = at + header + len;
  if (end > buf.length) throw new DerError(`byte ${at}: structure of ${len} bytes runs past the end`);
  return { tag, at, start: at + header, end };
}

/** The TLV at `at`, which must carry `tag` and end no later than `limit`. */
export function expectTlv(buf: Buffer, at: number, tag: number, what: string, limit = buf.length): Tlv {
  if (at >= limit) throw new DerError(`${what}: missing`);
  const t = readTlv(buf, at);
  if (t.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${t.tag.toString(16)}`);
  if (t.end > limit) throw new DerError(`${what}: runs past its enclosing structure`);
  return t;
}

/** The TLVs that exactly fill `parent`'s content; throws DerError if they do not. */
export function childrenOf(buf: Buffer, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  for (let at = parent.start; at < parent.end;) {
    const t = readTlv(buf, at);
    if (t.end > parent.end) throw new DerError(`byte ${at}: runs past its enclosing structure`);
    out.push(t);
    at = t.end;
  }
  return out;
}

/** Dotted forms of OIDs already read, by their encoding: a certificate holds a few dozen, mostly the same. */
const OID_CACHE = new Map<string, string>();
const OID_CACHE_SIZE = 4096;

/** Dotted form of an OBJECT IDENTIFIER's content. */
export function oidOf(buf: Buffer, t: Tlv): string {
  if (t.tag !== 0x06 || t.end === t.start) throw new DerError(`byte ${t.at}: expected an OBJECT IDENTIFIER`);
  const encoded = buf.toString("latin1", t.start, t.end);
  const known = OID_CACHE.get(encoded);
  if (known !== undefined) return known;
  const dotted = decodeOid(buf, t);
  // Bounded: a peer can send OIDs of its own; past the bound they are decoded each time.
  if (OID_CACHE.size < OID_CACHE_SIZE) OID_CACHE.set(encoded, dotted);
  return dotted;
}

function decodeOid(buf: Buffer, t: Tlv): string {
  const parts: number[] = [];
  let v = 0;
  for (let i = t.start; i < t.end; i++) {
    const b = buf.readUInt8(i);
    if (v === 0 && b === 0x80) throw new DerError(`byte ${t.at}: OBJECT IDENTIFIER arc with a leading zero`);
    v = v * 128 + (b & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) throw new DerError(`byte ${t.at}: OBJECT IDENTIFIER arc too large`);
    if ((b & 0x80) === 0) {
      if (parts.length === 0) parts.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else parts.push(v);
      v = 0;
    } else if (i === t.end - 1) throw new DerError(`byte ${t.at}: truncated OBJECT IDENTIFIER`);
  }
  return parts.join(".");
}

/** A BIT STRING's bytes after its unused-bits count, and that count. */
export function bitStringOf(buf: Buffer, t: Tlv): { bytes: Buffer; unused: number } {
  if (t.tag !== 0x03 || t.end === t.start) throw new DerError(`byte ${t.at}: expected a BIT STRING`);
  const unused = buf.readUInt8(t.start);
  if (unused > 7 || (unused > 0 && t.end - t.start === 1)) throw new DerError(`byte ${t.at}: BIT STRING with ${unused} unused bits`);
  return { bytes: buf.subarray(t.start + 1, t.end), unused };
}

/** A small non-negative INTEGER (path lengths); throws on negative or oversized values. */
export function smallIntOf(buf: Buffer, t: Tlv): number {
  const n = t.end - t.start;
  if (t.tag !== 0x02 || n === 0 || n > 4 || (buf.readUInt8(t.start) & 0x80) !== 0) throw new DerError(`byte ${t.at}: expected a small non-negative INTEGER`);
  return buf.readUIntBE(t.start, n);
}

/** A DER BOOLEAN (0x00 or 0xFF). */
export function booleanOf(buf: Buffer, t: Tlv): boolean {
  const v = buf[t.start];
  if (t.tag !== 0x01 || t.end - t.start !== 1 || (v !== 0 && v !== 0xff)) throw new DerError(`byte ${t.at}: expected a DER BOOLEAN`);
  return v === 0xff;
}

/** The decimal number of `n` ASCII digits at `at`, or -1 if any is not a digit. */
function digits(buf: Buffer, at: number, n: number): number {
  let v = 0;
  for (let i = at; i < at + n; i++) {
    const c = buf.readUInt8(i) - 0x30;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}

/** UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) as RFC 5280 §4.1.2.5 allows, in ms. */
export function timeOf(buf: Buffer, t: Tlv): number {
  const yearDigits = t.tag === 0x17 ? 2 : t.tag === 0x18 ? 4 : 0;
  const len = t.end - t.start;
  const s = () => JSON.stringify(buf.toString("latin1", t.start, t.end));
  if (yearDigits === 0 || len !== yearDigits + 11 || buf.readUInt8(t.end - 1) !== 0x5a)
    throw new DerError(`byte ${t.at}: a time not in RFC 5280 form (${s()})`);
  const fields = [digits(buf, t.start, yearDigits), ...[0, 2, 4, 6, 8].map((k) => digits(buf, t.start + yearDigits + k, 2))];
  if (fields.some((f) => f < 0)) throw new DerError(`byte ${t.at}: a time not in RFC 5280 form (${s()})`);
  const [y, mo, d, h, mi, se] = fields as [number, number, number, number, number, number];
  // §4.1.2.5.1: a two-digit year YY >= 50 is 19YY, else 20YY.
  const year = yearDigits === 2 ? (y >= 50 ? 1900 + y : 2000 + y) : y;
  // setUTCFullYear, not Date.UTC: the latter reads years 0-99 as 1900-1999.
  const back = new Date(0);
  back.setUTCFullYear(year, mo - 1, d);
  back.setUTCHours(h, mi, se, 0);
  const ms = back.getTime();
  if (back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== d || h > 23 || mi > 59 || se > 59) {
    throw new DerError(`byte ${t.at}: an impossible date (${s()})`);
  }
  return ms;
}

/** Splits concatenated DER SEQUENCEs; throws DerError on a truncated or malformed run. */
export function splitDer(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length;) {
    if (buf[i] !== 0x30) throw new DerError(`byte ${i}: expected a DER SEQUENCE (0x30), found 0x${(buf[i] ?? 0).toString(16)}`);
    const { end } = readTlv(buf, i);
    out.push(buf.subarray(i, end));
    i = end;
  }
  return out;
}
