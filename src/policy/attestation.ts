// Attestation evidence and the check of a rule's attestation requirement against it. Evidence comes
// from records in configuration (later pushed by the control plane, or carried by signed tokens); this
// module only judges it.
import { judgeEar, type EarFailure, type EarResult } from "./ear.js";
import type { AttestationRequirement } from "./model.js";

export type ClaimValue = string | number | boolean;

export interface AttestationRecord {
  /** The SPIFFE ID the evidence is about. */
  readonly subject: string;
  readonly attestor: string;
  /** Flattened claims: nested objects become dotted keys (`image.signed`). */
  readonly claims: ReadonlyMap<string, ClaimValue>;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** When set, the evidence holds only for the certificate with this SHA-256 fingerprint (hex). */
  readonly certFingerprint?: string;
  readonly source: "config" | "control_plane" | "token";
  /** Set for an EAR attestation result (draft-ietf-rats-ear-04): the appraisal statuses. */
  readonly ear?: EarResult;
}

export type AttestationFailure = "attestation_missing" | "attestation_stale" | EarFailure;

export type AttestationCheck =
  { readonly ok: true; readonly record: AttestationRecord } | { readonly ok: false; readonly reason: AttestationFailure; readonly detail: string };

const MAX_CLAIM_DEPTH = 16;

/** Flattens `{image: {signed: true}}` to `image.signed → true`; non-scalar leaves, and anything nested deeper than 16, are dropped. */
export function flattenClaims(obj: Record<string, unknown>, prefix = "", out = new Map<string, ClaimValue>(), depth = 0): Map<string, ClaimValue> {
  if (depth >= MAX_CLAIM_DEPTH) return out;
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") out.set(key, v);
    else if (v && typeof v === "object" && !Array.isArray(v)) flattenClaims(v as Record<string, unknown>, key, out, depth + 1);
  }
  return out;
}

/**
 * The best record wins: one that satisfies everything if any does, else the failure of the freshest
 * bound record of that attestor (so the reason names the real problem, not an older record's).
 */
export function checkAttestation(
  req: AttestationRequirement,
  records: readonly AttestationRecord[],
  certFingerprint: string | undefined,
  now: number,
): AttestationCheck {
  let best: AttestationCheck | undefined;
  for (const r of records) {
    if (r.attestor !== req.attestor) continue;
    if (r.certFingerprint !== undefined && r.certFingerprint !== certFingerprint) continue;
    const check = judge(req, r, now);
    if (check.ok) return check;
    if (!best || (!best.ok && best.reason === "attestation_stale" && check.reason !== "attestation_stale")) best = check;
  }
  return best ?? { ok: false, reason: "attestation_missing", detail: `no evidence from attestor ${req.attestor} bound to this peer` };
}

function judge(req: AttestationRequirement, r: AttestationRecord, now: number): AttestationCheck {
  if (now >= r.expiresAt)
    return { ok: false, reason: "attestation_stale", detail: `evidence from ${r.attestor} expired at ${new Date(r.expiresAt).toISOString()}` };
  if (req.maxAgeMs !== undefined && now - r.issuedAt > req.maxAgeMs) {
    return {
      ok: false,
      reason: "attestation_stale",
      detail: `evidence from ${r.attestor} is ${Math.round((now - r.issuedAt) / 1000)} s old, over the ${req.maxAgeMs / 1000} s allowed`,
    };
  }
  const ear = req.ear && judgeEar(req.ear, r.ear, r.attestor);
  if (ear) return { ok: false, ...ear };
  const m = claimMismatch(req.claims, r.claims);
  if (m) return { ok: false, reason: "attestation_claim_mismatch", detail: `claim ${m.claim} ${m.text}` };
  return { ok: true, record: r };
}

/** The first claim of `want` that `got` lacks or holds another value of, told as "is …, want … or …". */
export function claimMismatch(
  want: ReadonlyMap<string, readonly ClaimValue[]>,
  got: ReadonlyMap<string, ClaimValue> | undefined,
): { claim: string; text: string } | undefined {
  for (const [claim, accepted] of want) {
    const v = got?.get(claim);
    if (v === undefined || !accepted.includes(v))
      return { claim, text: `is ${v === undefined ? "absent" : JSON.stringify(v)}, want ${accepted.map((a) => JSON.stringify(a)).join(" or ")}` };
  }
  return undefined;
}

/** Attestation records by subject SPIFFE ID. Immutable: a new set of records is a new store. */
export class AttestationStore {
  private readonly bySubject = new Map<string, AttestationRecord[]>();

  constructor(records: readonly AttestationRecord[] = []) {
    for (const r of records) {
      const list = this.bySubject.get(r.subject);
      if (list) list.push(r);
      else this.bySubject.set(r.subject, [r]);
    }
  }

  for(subject: string): readonly AttestationRecord[] {
    return this.bySubject.get(subject) ?? [];
  }

  get size(): number {
    let n = 0;
    for (const l of this.bySubject.values()) n += l.length;
    return n;
  }
}
