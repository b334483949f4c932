// `parley revoke`: writes one revocation entry where sidecars take it from, a control plane's
// directory (DIR/revocations.yaml, or one node's file) or a sidecar's configuration file. The entry is
// validated by the configuration's own rules (config/revocation.ts) and the file edited as a YAML
// document, so its comments and layout stay; entries of it past their `until` are dropped. The edited
// text is checked as its reader would load it, read-only: nothing is written before it passes. The
// file is replaced atomically (a temporary file in the same directory, renamed over it): a watcher never reads
// half a file. Bad input of any kind exits 2 with one line naming the flag or file at fault. Longer
// than most commands: the flags' mapping to a checked entry, the edit and the write belong together.
import { readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { isMap, isScalar, isSeq, parseDocument, type Document, type YAMLMap } from "yaml";
import { parseRevocationEntry } from "../config/revocation.js";
import { ConfigError, errorLines } from "../config/source.js";
import { parseDuration } from "../config/units.js";
import { MAX_MATCHERS, type RevocationEntry } from "../policy/revocation.js";
import { type Command, directoryFlag, HELP, helped, isBootstrapDoc, parse, readFlagFile, UsageError } from "./command.js";

/** Matcher flags, in the order they are written, and the configuration key each one sets. */
const MATCHERS = {
  txn: "txn",
  jti: "jti",
  grant: "grant",
  "spiffe-id": "id",
  "spiffe-id-prefix": "path_prefix",
  "cert-fingerprint": "cert_fingerprint",
  attestor: "attestor",
} as const;
type MatcherFlag = keyof typeof MATCHERS;

/** RFC 3339 section 5.6 `date-time`: full date, `T`, full time with seconds and an offset. */
const RFC3339 = /^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$/;
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const revoke: Command = {
  name: "revoke",
  usage: `usage: parley revoke (--dir DIR [--node ID] | --config FILE) --name NAME --reason TEXT --until WHEN
                     MATCHER... (at least one; each may repeat)

Writes one revocation entry (README, "Revocations"); every sidecar fed by it ends the live sessions it
names at once and refuses new ones.
  --dir DIR          a control plane's directory: DIR/revocations.yaml (created if absent), pushed to
                     every node
  --node ID          with --dir: DIR/nodes/ID.yaml instead (that node only; the file must exist)
  --config FILE      a sidecar's configuration file: its revocations section (the sidecar reloads it)
  --name NAME        the entry's name: letters, digits, '.', '_', '-' (refused if already there)
  --reason TEXT      why (logged on every session it ends)
  --until WHEN       a duration from now (30m, 12h, 7d) or an RFC 3339 time; the entry is dropped after
matchers:
  --txn T  --jti J  --grant G        a task, an approval token id, a grant id
  --spiffe-id ID                     a SPIFFE ID exactly
  --spiffe-id-prefix ID              a SPIFFE ID and every ID below it (whole segments)
  --cert-fingerprint HEX             the SHA-256 of a leaf certificate's DER (64 hex digits)
  --attestor NAME                    every session decided with that attestor's evidence
The file keeps its comments; entries of it past their until are dropped; it is replaced atomically.
exit codes: 0 written, 1 the file could not be written, 2 bad input`,
  async run(args) {
    const { values } = parse(this, {
      args,
      options: {
        dir: { type: "string" },
        node: { type: "string" },
        config: { type: "string", short: "c" },
        name: { type: "string" },
        reason: { type: "string" },
        until: { type: "string" },
        ...matcherOptions(),
        ...HELP,
      },
    });
    if (values.help) return helped(this);
    const now = Date.now();
    const target = targetOf(this, values);
    const { entry, data } = entryOf(this, values, now);
    const { text, dropped } = edited(this, target, data, now);
    await check(this, target, text);
    writeAtomically(target.file, text);
    const untilText = new Date(entry.until).toISOString();
    process.stdout.write(`revocation ${entry.name} written to ${target.file} (until ${untilText}, ${entry.match.length} matcher(s))\n`);
    if (dropped.length > 0) process.stdout.write(`dropped entries past their until: ${dropped.join(", ")}\n`);
    return 0;
  },
};

function matcherOptions(): Record<MatcherFlag, { type: "string"; multiple: true }> {
  return Object.fromEntries(Object.keys(MATCHERS).map((k) => [k, { type: "string", multiple: true }])) as Record<
    MatcherFlag,
    { type: "string"; multiple: true }
  >;
}

interface Target {
  readonly file: string;
  readonly kind: "config" | "directory";
  /** With --dir: the shared files, whose entries a new name must not collide with. */
  readonly siblings: readonly string[];
  readonly exists: boolean;
}

type Values = Partial<Record<"dir" | "node" | "config" | "name" | "reason" | "until", string>> & Partial<Record<MatcherFlag, string[]>>;

function targetOf(command: Command, v: Values): Target {
  if ((v.dir === undefined) === (v.config === undefined))
    throw new UsageError("give exactly one of --dir DIR (a control plane) or --config FILE (a sidecar)", command.name);
  if (v.config !== undefined) {
    if (v.node !== undefined) throw new UsageError("--node goes with --dir, not --config", command.name);
    readFlagFile(command, "--config", v.config);
    return { file: v.config, kind: "config", siblings: [], exists: true };
  }
  const dir = directoryFlag(command, "--dir", v.dir!);
  const shared = readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => join(dir, f));
  if (v.node === undefined) {
    const file = join(dir, "revocations.yaml");
    return { file, kind: "directory", siblings: shared.filter((f) => f !== file), exists: shared.includes(file) };
  }
  if (!NODE_ID.test(v.node)) throw new UsageError(`--node ${v.node}: expected a node id of letters, digits, '.', '_' or '-'`, command.name);
  const file = join(dir, "nodes", `${v.node}.yaml`);
  readFlagFile(command, "--node", file);
  return { file, kind: "directory", siblings: shared, exists: true };
}

/** The entry from the flags, validated as a configuration entry; errors name the flag. */
function entryOf(command: Command, v: Values, now: number): { entry: RevocationEntry; data: Record<string, unknown> } {
  for (const flag of ["name", "reason", "until"] as const) {
    if (v[flag] === undefined) throw new UsageError(`--${flag} is required`, command.name);
  }
  const flags: string[] = [];
  const match: Record<string, string>[] = [];
  for (const [flag, key] of Object.entries(MATCHERS)) {
    for (const value of v[flag as MatcherFlag] ?? []) {
      flags.push(`--${flag} ${value}`);
      match.push({ [key]: value });
    }
  }
  if (match.length === 0)
    throw new UsageError(
      `at least one matcher is required: ${Object.keys(MATCHERS)
        .map((f) => `--${f}`)
        .join(", ")}`,
      command.name,
    );
  const data = { name: v.name, reason: v.reason, until: untilOf(command, v.until!, now), match };
  try {
    return { entry: parseRevocationEntry(data, "parley revoke"), data };
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const lines = e.issues.map((i) => {
      const m = /^match\[(\d+)\](?:\.\w+)?$/.exec(i.path);
      const flag = m ? flags[Number(m[1])] : `--${i.path}`;
      return `${flag}: ${i.message}`;
    });
    throw new UsageError(lines.join("; "), command.name);
  }
}

/** `--until`: a duration from now, or an RFC 3339 time; either way in the future. */
function untilOf(command: Command, text: string, now: number): string {
  const ms = parseDuration(text);
  if (ms !== undefined) {
    if (ms <= 0) throw new UsageError(`--until ${text}: a revocation must last longer than zero`, command.name);
    return new Date(now + ms).toISOString();
  }
  if (!RFC3339.test(text) || Number.isNaN(Date.parse(text))) {
    throw new UsageError(`--until ${text}: expected a duration (30m, 12h, 7d) or an RFC 3339 time such as 2026-12-01T00:00:00Z`, command.name);
  }
  if (Date.parse(text) <= now) throw new UsageError(`--until ${text}: that time has passed; the entry would be dropped at once`, command.name);
  return text;
}

function parseYaml(command: Command, file: string, text: string): Document {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) throw new UsageError(`${file}: not valid YAML: ${doc.errors[0]!.message.split("\n")[0]}`, command.name);
  if (doc.contents !== null && !isMap(doc.contents)) throw new UsageError(`${file}: expected a mapping at the top level`, command.name);
  return doc;
}

/** The target's new text: expired entries dropped, the new one added; refuses a name already in use. */
function edited(command: Command, target: Target, data: Record<string, unknown>, now: number): { text: string; dropped: string[] } {
  const text = target.exists ? readFileSync(target.file, "utf8") : '# Revocations written by `parley revoke` (README, "Revocations").\n';
  const doc = parseYaml(command, target.file, text);
  if (target.kind === "config" && isBootstrapDoc(doc.toJS())) {
    throw new UsageError(`--config ${target.file} is a bootstrap file: its sidecar takes revocations from the control plane (use --dir)`, command.name);
  }
  const name = String(data.name);
  for (const sibling of target.siblings) {
    if (inUse(parseYaml(command, sibling, readFileSync(sibling, "utf8")), name, now)) {
      throw new UsageError(`--name ${name}: ${sibling} already has a revocation of that name`, command.name);
    }
  }
  let section = doc.get("revocations", true);
  if (section === undefined || section === null || (isMap(section) && section.items.length === 0)) {
    doc.set("revocations", doc.createNode({}));
    section = doc.get("revocations", true);
  }
  if (!isMap(section)) throw new UsageError(`${target.file}: revocations is not a mapping`, command.name);
  const dropped = dropExpired(section, now);
  if (section.has(name)) throw new UsageError(`--name ${name}: ${target.file} already has a revocation of that name`, command.name);
  const { name: _, ...body } = data;
  const node = doc.createNode(body) as YAMLMap;
  // One matcher a line, as `{ txn: task-42 }`.
  const matchers = node.get("match", true);
  if (isSeq(matchers)) for (const item of matchers.items) if (isMap(item)) item.flow = true;
  section.set(name, node);
  // No folding: long lines (a flow list of listeners) stay one line each.
  return { text: doc.toString({ lineWidth: 0 }), dropped };
}

/** True when `doc` has a revocation `name` still in force. */
function inUse(doc: Document, name: string, now: number): boolean {
  const section = doc.get("revocations", true);
  if (!isMap(section) || !section.has(name)) return false;
  const until = Date.parse(String((section.get(name) as YAMLMap | undefined)?.get("until")));
  return Number.isNaN(until) || until > now;
}

function dropExpired(section: YAMLMap, now: number): string[] {
  const dropped: string[] = [];
  for (const pair of [...section.items]) {
    const value = pair.value;
    const until = isMap(value) ? Date.parse(String(value.get("until"))) : NaN;
    if (!Number.isNaN(until) && until <= now) {
      dropped.push(String(isScalar(pair.key) ? pair.key.value : pair.key));
      section.delete(pair.key);
    }
  }
  return dropped;
}

/**
 * What the sidecar or control plane will do with the new text: a configuration file must load whole
 * (its sidecar would reject it otherwise); a resource file's entries are each valid and within bounds.
 */
async function check(command: Command, target: Target, text: string): Promise<void> {
  if (target.kind === "config") {
    // Loaded only here: the sidecar's whole loader is not needed to write into a control plane's directory.
    const { loadConfigText } = await import("../config/load.js");
    try {
      // The new text as the file would load, read-only: nothing is written until it passes.
      loadConfigText(target.file, text);
    } catch (e) {
      throw new UsageError(`${target.file} would not load with the entry: ${errorLines(e).join("; ")}`, command.name);
    }
    return;
  }
  const section = (parseDocument(text).toJS() as { revocations?: Record<string, Record<string, unknown>> } | null)?.revocations ?? {};
  let count = 0;
  for (const [name, r] of Object.entries(section)) {
    try {
      count += parseRevocationEntry({ name, ...r }, target.file).match.length;
    } catch (e) {
      throw new UsageError(`${target.file}: revocations.${name}: ${errorLines(e).join("; ")}`, command.name);
    }
  }
  if (count > MAX_MATCHERS) throw new UsageError(`${target.file} would hold ${count} revocation matchers; at most ${MAX_MATCHERS}`, command.name);
}

function tempName(file: string): string {
  return join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
}

/** Writes `text` to a temporary file beside `file`, with its mode, and renames it over `file`. */
function writeAtomically(file: string, text: string): void {
  const tmp = tempName(file);
  let mode = 0o644;
  try {
    mode = statSync(file).mode & 0o777;
  } catch {
    // a new file
  }
  try {
    writeFileSync(tmp, text, { mode, flush: true });
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
