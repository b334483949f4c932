// Splitting a run of concatenated DER structures (how the Workload API sends certificate chains and
// bundles) into one buffer each, by their ASN.1 length headers.

export class DerError extends Error {
  readonly code = "ERR_DER";
}

/** Splits concatenated DER SEQUENCEs; throws DerError on a truncated or malformed run. */
export function splitDer(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let i = 0;
  while (i < buf.length) {
    if (buf[i] !== 0x30) throw new DerError(`byte ${i}: expected a DER SEQUENCE (0x30), found 0x${(buf[i] ?? 0).toString(16)}`);
    const first = buf[i + 1];
    if (first === undefined) throw new DerError(`byte ${i}: truncated length`);
    let len: number;
    let header: number;
    if (first < 0x80) {
      len = first;
      header = 2;
    } else {
      const n = first & 0x7f;
      if (n === 0 || n > 4 || i + 2 + n > buf.length) throw new DerError(`byte ${i}: unsupported or truncated length of ${n} bytes`);
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + buf[i + 2 + k]!;
      header = 2 + n;
    }
    const end = i + header + len;
    if (end > buf.length) throw new DerError(`byte ${i}: structure of ${len} bytes runs past the end`);
    out.push(buf.subarray(i, end));
    i = end;
  }
  return out;
}
