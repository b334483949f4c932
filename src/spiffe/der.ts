// Reading DER by its ASN.1 tag-length headers: splitting a run of concatenated structures (how the
// Workload API sends certificate chains and bundles), and walking the fields of one SEQUENCE.

import { ParleyError } from "../errors/catalogue.js";
export class DerError extends ParleyError {
  constructor(message: string) {
    super("PARLEY_ERR_DER", message);
  }
}

/** One tag-length-value: its tag byte, where its content starts, and where it ends. */
export interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly end: number;
}

/** Reads the TLV at `at` (single-byte tags, definite lengths of up to 4 bytes); throws DerError. */
export function readTlv(buf: Buffer, at: number): Tlv {
  const tag = buf[at];
  const first = buf[at + 1];
  if (tag === undefined || first === undefined) throw new DerError(`byte ${at}: truncated header`);
  let len = first;
  let header = 2;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n === 0 || n > 4 || at + 2 + n > buf.length) throw new DerError(`byte ${at}: unsupported or truncated length of ${n} bytes`);
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + buf[at + 2 + k]!;
    header = 2 + n;
  }
  const end = at + header + len;
  if (end > buf.length) throw new DerError(`byte ${at}: structure of ${len} bytes runs past the end`);
  return { tag, start: at + header, end };
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
