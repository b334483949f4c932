// Reading a YAML file with positions kept, so every error can name file, line and column.
import { ParleyError } from "../errors/catalogue.js";
import { readFileSync, statSync } from "node:fs";
import { isMap, isPair, isScalar, LineCounter, parseDocument, type Document } from "yaml";

export const MAX_CONFIG_BYTES = 4 * 1024 * 1024;
const MAX_ALIASES = 100;

export interface ConfigIssue {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  /** Dotted path of the offending value, e.g. `listeners[0].upstream`. */
  readonly path: string;
  readonly message: string;
}

export class ConfigError extends ParleyError {
  constructor(readonly issues: readonly ConfigIssue[]) {
    super("PARLEY_ERR_CONFIG", issues.map(formatIssue).join("\n"));
  }
}

export function formatIssue(i: ConfigIssue): string {
  const at = i.line > 0 ? `${i.file}:${i.line}:${i.column}` : i.file;
  return `${at}: ${i.path ? i.path + ": " : ""}${i.message}`;
}

/** Any error as lines for a log or a NACK: each located issue of a ConfigError, else its message. */
export function errorLines(e: unknown): string[] {
  return e instanceof ConfigError ? e.issues.map(formatIssue) : [(e as Error).message];
}

/** Turns a path in the configuration data into a located issue. */
export interface IssueLocator {
  issue(path: ConfigPath, message: string, key?: string): ConfigIssue;
}

/** Data without positions (a control-plane push): issues name the origin and the path. */
export class PathOnlySource implements IssueLocator {
  constructor(readonly origin: string) {}

  issue(path: ConfigPath, message: string, key?: string): ConfigIssue {
    return { file: this.origin, line: 0, column: 0, path: pathText(key === undefined ? path : [...path, key]), message };
  }
}

/** Parses `data` with a zod schema; every schema issue becomes a located ConfigIssue. */
export function parseWith<T>(
  schema: { safeParse(d: unknown): { success: true; data: T } | { success: false; error: { issues: ZodIssueLike[] } } },
  data: unknown,
  at: IssueLocator,
): T {
  const parsed = schema.safeParse(data);
  if (parsed.success) return parsed.data;
  throw new ConfigError(
    parsed.error.issues.flatMap((i) =>
      i.code === "unrecognized_keys" && i.keys ? i.keys.map((k) => at.issue(i.path, "unknown key", k)) : [at.issue(i.path, i.message)],
    ),
  );
}

interface ZodIssueLike {
  code: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
}

export type ConfigPath = readonly PropertyKey[];

export function pathText(path: ConfigPath): string {
  let s = "";
  for (const p of path) s += typeof p === "number" ? `[${p}]` : s ? `.${String(p)}` : String(p);
  return s;
}

/** A parsed YAML document that can locate any path in it. */
export class YamlSource implements IssueLocator {
  private constructor(
    readonly file: string,
    readonly text: string,
    private readonly doc: Document,
    private readonly lines: LineCounter,
  ) {}

  static read(file: string): YamlSource {
    const refuse = (message: string) => new ConfigError([{ file, line: 0, column: 0, path: "", message }]);
    try {
      const stat = statSync(file);
      if (stat.isDirectory()) throw refuse("is a directory, not a YAML file");
      if (stat.size > MAX_CONFIG_BYTES) throw refuse(`file is ${stat.size} bytes, over the limit of ${MAX_CONFIG_BYTES}`);
      return YamlSource.parse(file, readFileSync(file, "utf8"));
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      throw refuse(`cannot read: ${(e as Error).message}`);
    }
  }

  /** `text` as the file `file` would hold it once written (nothing is): under the same bound as `read`. */
  static fromText(file: string, text: string): YamlSource {
    const size = Buffer.byteLength(text, "utf8");
    if (size > MAX_CONFIG_BYTES)
      throw new ConfigError([{ file, line: 0, column: 0, path: "", message: `file is ${size} bytes, over the limit of ${MAX_CONFIG_BYTES}` }]);
    return YamlSource.parse(file, text);
  }

  static parse(file: string, text: string): YamlSource {
    const lines = new LineCounter();
    let doc: Document;
    try {
      doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false, strict: true });
    } catch (e) {
      // e.g. nesting deep enough to exhaust the parser's stack
      throw new ConfigError([{ file, line: 0, column: 0, path: "", message: `YAML: cannot be parsed: ${(e as Error).message}` }]);
    }
    const src = new YamlSource(file, text, doc, lines);
    if (doc.errors.length > 0) {
      throw new ConfigError(doc.errors.map((e) => src.issueAt(e.pos[0], "", `YAML: ${e.message.split("\n")[0]}`)));
    }
    return src;
  }

  /** The document as plain data; alias expansion is capped so an alias bomb is an error, not a hang. */
  toJS(): unknown {
    try {
      return this.doc.toJS({ maxAliasCount: MAX_ALIASES });
    } catch (e) {
      // alias bombs, and structures too deep to convert
      throw new ConfigError([this.issueAt(0, "", `YAML: ${(e as Error).message}`)]);
    }
  }

  issueAt(offset: number, path: string, message: string): ConfigIssue {
    const { line, col } = this.lines.linePos(offset);
    return { file: this.file, line, column: col, path, message };
  }

  /** An issue located at `path` (or at the key `key` of the map at `path`). */
  issue(path: ConfigPath, message: string, key?: string): ConfigIssue {
    return this.issueAt(this.offsetOf(path, key), pathText(key === undefined ? path : [...path, key]), message);
  }

  private offsetOf(path: ConfigPath, key?: string): number {
    // Walk up until a node exists: a missing key is reported at its parent.
    for (let n = path.length; n >= 0; n--) {
      const node = this.doc.getIn(path.slice(0, n) as unknown[], true);
      if (!node || typeof node !== "object") continue;
      if (key !== undefined && n === path.length && isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key);
        const k = pair && isScalar(pair.key) ? pair.key.range : undefined;
        if (k) return k[0];
      }
      const range = (node as { range?: [number, number, number] }).range;
      if (range) return range[0];
    }
    return 0;
  }
}
