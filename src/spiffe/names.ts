// Names in certificates: distinguished names (compared in a canonical form), general names (the
// subjectAltName and nameConstraints forms), and name constraint matching by RFC 5280 §4.2.1.10.
import { isAscii } from "node:buffer";
import { childrenOf, DerError, expectTlv, oidOf, readTlv, type Tlv } from "./der.js";

/** A distinguished name: its RDNs in a canonical form, for comparison and subtree matching. */
export interface DistinguishedName {
  /** Each RDN as a canonical string (attribute OIDs with normalised values, sorted within the RDN). */
  readonly rdns: readonly string[];
  /** The whole name canonically, for issuer/subject equality. */
  readonly key: string;
  /** emailAddress attribute values (RFC 5280 §4.2.1.10 applies rfc822Name constraints to them). */
  readonly emails: readonly string[];
}

export type GeneralName =
  | { readonly kind: "dns" | "uri" | "email"; readonly value: string }
  | { readonly kind: "ip"; readonly bytes: Buffer }
  | { readonly kind: "dn"; readonly name: DistinguishedName }
  | { readonly kind: "other"; readonly tag: number };

export interface NameConstraints {
  readonly permitted: readonly GeneralName[];
  readonly excluded: readonly GeneralName[];
}

const EMAIL_ADDRESS = "1.2.840.113549.1.9.1";
/** String types whose values are compared case-insensitively with whitespace folded (RFC 5280 §7.1). */
const STRING_TAGS = new Set([0x0c, 0x13, 0x14, 0x16, 0x1c, 0x1e]);
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Bytes as text: UTF-8 when they are, else with every non-ASCII byte shown as \xNN (never garbled). */
export function readableText(bytes: Buffer): string {
  if (isAscii(bytes)) return bytes.toString("latin1");
  try {
    return utf8.decode(bytes);
  } catch {
    return [...bytes].map((b) => (b < 0x80 ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`)).join("");
  }
}

function stringValue(buf: Buffer, t: Tlv): string {
  const bytes = buf.subarray(t.start, t.end);
  if (t.tag === 0x1e) return bytes.length % 2 === 0 ? Buffer.from(bytes).swap16().toString("utf16le") : bytes.toString("hex");
  if (t.tag === 0x1c) return bytes.toString("hex"); // UniversalString: compared as bytes
  return readableText(bytes);
}

/** Reads a Name (SEQUENCE OF RDN) at `t`. */
export function parseName(buf: Buffer, t: Tlv): DistinguishedName {
  if (t.tag !== 0x30) throw new DerError(`byte ${t.at}: expected a Name (SEQUENCE)`);
  const rdns: string[] = [];
  const emails: string[] = [];
  for (const rdn of childrenOf(buf, t)) {
    if (rdn.tag !== 0x31) throw new DerError(`byte ${rdn.at}: expected an RDN (SET)`);
    const atvs: string[] = [];
    for (const atv of childrenOf(buf, rdn)) {
      const [type, value, extra] = atv.tag === 0x30 ? childrenOf(buf, atv) : [];
      if (!type || !value || extra) throw new DerError(`byte ${atv.at}: malformed AttributeTypeAndValue`);
      const oid = oidOf(buf, type);
      if (STRING_TAGS.has(value.tag)) {
        const text = stringValue(buf, value);
        atvs.push(`${oid}=${text.trim().replace(/\s+/g, " ").toLowerCase()}`);
        if (oid === EMAIL_ADDRESS) emails.push(text);
      } else atvs.push(`${oid}#${buf.toString("hex", value.at, value.end)}`);
    }
    if (atvs.length === 0) throw new DerError(`byte ${rdn.at}: empty RDN`);
    rdns.push(atvs.sort().join("+"));
  }
  return { rdns, key: JSON.stringify(rdns), emails };
}

/** Reads one GeneralName (RFC 5280 §4.2.1.6). */
export function parseGeneralName(buf: Buffer, t: Tlv): GeneralName {
  switch (t.tag) {
    case 0x81:
      return { kind: "email", value: readableText(buf.subarray(t.start, t.end)) };
    case 0x82:
      return { kind: "dns", value: readableText(buf.subarray(t.start, t.end)) };
    case 0x86:
      return { kind: "uri", value: readableText(buf.subarray(t.start, t.end)) };
    case 0x87:
      return { kind: "ip", bytes: buf.subarray(t.start, t.end) };
    case 0xa4: {
      const inner = expectTlv(buf, t.start, 0x30, "directoryName", t.end);
      if (inner.end !== t.end) throw new DerError(`byte ${t.at}: directoryName with trailing bytes`);
      return { kind: "dn", name: parseName(buf, inner) };
    }
    default:
      if (t.tag !== 0xa0 && t.tag !== 0xa3 && t.tag !== 0xa5 && t.tag !== 0x88) throw new DerError(`byte ${t.at}: unknown GeneralName tag`);
      return { kind: "other", tag: t.tag };
  }
}

/** GeneralNames: SEQUENCE SIZE (1..MAX) OF GeneralName. */
export function parseGeneralNames(buf: Buffer): GeneralName[] {
  const seq = readTlv(buf, 0);
  if (seq.tag !== 0x30 || seq.end !== buf.length) throw new DerError("GeneralNames: expected one SEQUENCE");
  const names = childrenOf(buf, seq).map((t) => parseGeneralName(buf, t));
  if (names.length === 0) throw new DerError("GeneralNames: empty");
  return names;
}

function parseSubtrees(buf: Buffer, t: Tlv): GeneralName[] {
  return childrenOf(buf, t).map((sub) => {
    const [base, ...rest] = sub.tag === 0x30 ? childrenOf(buf, sub) : [];
    // §4.2.1.10: minimum MUST be zero and maximum MUST be absent; anything else is not processed.
    if (!base || rest.some((r) => r.tag !== 0x80 || r.end - r.start !== 1 || buf[r.start] !== 0)) {
      throw new DerError(`byte ${sub.at}: GeneralSubtree with minimum or maximum is not supported`);
    }
    return parseGeneralName(buf, base);
  });
}

/** The nameConstraints extension value (RFC 5280 §4.2.1.10). */
export function parseNameConstraints(buf: Buffer): NameConstraints {
  const seq = readTlv(buf, 0);
  if (seq.tag !== 0x30 || seq.end !== buf.length) throw new DerError("NameConstraints: expected one SEQUENCE");
  let permitted: GeneralName[] = [];
  let excluded: GeneralName[] = [];
  for (const part of childrenOf(buf, seq)) {
    if (part.tag === 0xa0) permitted = parseSubtrees(buf, part);
    else if (part.tag === 0xa1) excluded = parseSubtrees(buf, part);
    else throw new DerError(`byte ${part.at}: unexpected field in NameConstraints`);
  }
  if (permitted.length + excluded.length === 0) throw new DerError("NameConstraints: neither permitted nor excluded subtrees (§4.2.1.10)");
  return { permitted, excluded };
}

/** The host of a URI's authority (lowercase), or undefined when it has none. */
export function uriHost(uri: string): string | undefined {
  const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)/.exec(uri);
  if (!m) return undefined;
  const host = (m[1] ?? "").replace(/^.*@/, "").replace(/:\d*$/, "");
  return host === "" || host.startsWith("[") ? undefined : host.toLowerCase();
}

/** dNSName: a constraint matches the name and every name made by adding labels on its left. */
function dnsWithin(name: string, c: string): boolean {
  const n = name.toLowerCase();
  const base = c.toLowerCase();
  if (base === "") return true;
  if (base.startsWith(".")) return n.endsWith(base);
  return n === base || n.endsWith(`.${base}`);
}

/** uniformResourceIdentifier: the constraint applies to the host; a leading period means subdomains only. */
function uriWithin(uri: string, c: string): boolean {
  const host = uriHost(uri);
  if (host === undefined) return false;
  const base = c.toLowerCase();
  return base.startsWith(".") ? host.endsWith(base) : host === base;
}

/** rfc822Name: a mailbox, all mailboxes at a host, or (leading period) at any host in a domain. */
function emailWithin(email: string, c: string): boolean {
  const at = email.lastIndexOf("@");
  if (at < 0) return false;
  const host = email.slice(at + 1).toLowerCase();
  if (c.includes("@")) return email.slice(0, at) === c.slice(0, c.lastIndexOf("@")) && host === c.slice(c.lastIndexOf("@") + 1).toLowerCase();
  const base = c.toLowerCase();
  return base.startsWith(".") ? host.endsWith(base) : host === base;
}

/** iPAddress: the constraint is an address followed by a mask of the same length. */
function ipWithin(ip: Buffer, c: Buffer): boolean {
  if (c.length !== ip.length * 2) return false;
  for (let i = 0; i < ip.length; i++) {
    const mask = c.readUInt8(ip.length + i);
    if ((ip.readUInt8(i) & mask) !== (c.readUInt8(i) & mask)) return false;
  }
  return true;
}

function dnWithin(name: DistinguishedName, c: DistinguishedName): boolean {
  return c.rdns.length <= name.rdns.length && c.rdns.every((r, i) => name.rdns[i] === r);
}

function within(name: GeneralName, c: GeneralName): boolean {
  if (name.kind !== c.kind) return false;
  switch (name.kind) {
    case "dns":
      return dnsWithin(name.value, (c as { value: string }).value);
    case "uri":
      return uriWithin(name.value, (c as { value: string }).value);
    case "email":
      return emailWithin(name.value, (c as { value: string }).value);
    case "ip":
      return ipWithin(name.bytes, (c as { bytes: Buffer }).bytes);
    case "dn":
      return dnWithin(name.name, (c as { name: DistinguishedName }).name);
    default:
      return false;
  }
}

function describeName(n: GeneralName): string {
  if (n.kind === "ip") return `IP ${n.bytes.length === 4 ? [...n.bytes].join(".") : n.bytes.toString("hex")}`;
  if (n.kind === "dn") return `directory name ${n.name.rdns.join(",")}`;
  if (n.kind === "other") return `name of tag 0x${n.tag.toString(16)}`;
  return `${n.kind.toUpperCase()} ${n.value}`;
}

/**
 * The first of `names` that `nc` does not allow, described, or undefined when all are allowed.
 * A name form named in permitted subtrees admits only names within one of them; a name within an
 * excluded subtree is refused whatever the permitted ones say (§4.2.1.10). Forms parley does not
 * process (otherName, x400Address, ediPartyName, registeredID) refuse the certificate if constrained.
 */
export function violation(names: readonly GeneralName[], nc: NameConstraints): string | undefined {
  const unsupported = [...nc.permitted, ...nc.excluded].find((c) => c.kind === "other");
  if (unsupported) return `a constraint on a name form parley does not process (${describeName(unsupported)})`;
  for (const name of names) {
    const sameForm = nc.permitted.filter((c) => c.kind === name.kind);
    if (sameForm.length > 0 && !sameForm.some((c) => within(name, c))) return `${describeName(name)} is outside the permitted subtrees`;
    const ex = nc.excluded.find((c) => within(name, c));
    if (ex) return `${describeName(name)} is within the excluded subtree ${describeName(ex)}`;
  }
  return undefined;
}
