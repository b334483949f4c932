// One revocation entry, validated and compiled by the rules of the configuration's `revocations`
// section: the section itself (resources.ts), `parley revoke` and the admin server's
// `POST /revocations` all go through `compileRevocationEntry`, so an entry one of them accepts the
// others accept too, and each refusal names the field at fault.
import { z } from "zod";
import type { RevocationEntry, RevocationMatcher } from "../policy/revocation.js";
import { SpiffeId } from "../spiffe/spiffeid.js";
import { name, revocation, type RawResources } from "./schema.js";
import { ConfigError, parseWith, PathOnlySource, type ConfigPath, type IssueLocator } from "./source.js";

type RawRevocation = RawResources["revocations"][string];

/** Where compile errors go: a CompileContext, or a plain collector. */
export interface ErrorSink {
  error(path: ConfigPath, message: string): void;
}

/** Compiles one entry whose shape the schema checked; `base` is its path (`revocations.NAME`). */
export function compileRevocationEntry(sink: ErrorSink, entryName: string, r: RawRevocation, base: ConfigPath): RevocationEntry {
  const match: RevocationMatcher[] = [];
  r.match.forEach((m, i) => {
    const path = [...base, "match", i];
    const ids = { id: m.id, path_prefix: m.path_prefix };
    for (const [k, v] of Object.entries(ids)) {
      if (v === undefined) continue;
      const id = SpiffeId.tryParse(v);
      if (!(id instanceof SpiffeId)) return void sink.error([...path, k], id.message);
      match.push({ kind: "identity", matcher: k === "id" ? { kind: "id", id } : { kind: "path_prefix", prefix: id } });
    }
    if (m.txn !== undefined) match.push({ kind: "txn", value: m.txn });
    if (m.jti !== undefined) match.push({ kind: "jti", value: m.jti });
    if (m.grant !== undefined) match.push({ kind: "grant", value: m.grant });
    if (m.cert_fingerprint !== undefined) match.push({ kind: "cert_fingerprint", value: m.cert_fingerprint.toLowerCase() });
    if (m.attestor !== undefined) match.push({ kind: "attestor", value: m.attestor });
  });
  return { name: entryName, reason: r.reason, until: Date.parse(r.until), match };
}

/** A standalone entry: the section's shape plus its `name` (a JSON body, a command line). */
const standalone = z.strictObject({ name, ...revocation.shape });

/**
 * Validates one entry given as data (`{ name, reason, until, match }`), every problem reported at once
 * with its path (`match[1].id: ...`). Throws a ConfigError.
 */
export function parseRevocationEntry(data: unknown, origin: string): RevocationEntry {
  const at: IssueLocator = new PathOnlySource(origin);
  const raw = parseWith(standalone, data, at);
  const issues: ConfigError["issues"][number][] = [];
  const entry = compileRevocationEntry({ error: (path, message) => issues.push(at.issue(path, message)) }, raw.name, raw, []);
  if (issues.length > 0) throw new ConfigError(issues);
  return entry;
}
