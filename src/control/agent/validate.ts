// Validating a control-plane push completely before anything is applied: the same schema and
// compiler as a configuration file, with issues named by resource (kind, name, field) instead of
// file and line.
import { CompileContext, compileResources, type Resources } from "../../config/resources.js";
import { resourcesSchema } from "../../config/schema.js";
import { ConfigError, formatIssue, parseWith, PathOnlySource } from "../../config/source.js";
import { locateIssue, type WireIssue } from "../issues.js";
import { pushIssues } from "../pushable.js";
import { resourcesFromWire, type WireResource } from "../wire.js";

export type Compiled =
  | { ok: true; resources: Resources; /** `type/name` of resources of unknown kinds, left out. */ skipped: string[] }
  | { ok: false; lines: string[]; details: WireIssue[] };

/** Compiles a push; every problem is returned as a line (`push <v>: <path>: <what>`) and structured. */
export function compilePush(resources: readonly WireResource[], version: string): Compiled {
  const at = new PathOnlySource(`push ${version}`);
  if (!version)
    return {
      ok: false,
      lines: [formatIssue(at.issue([], "version_info is empty"))],
      details: [{ kind: "", resource: "", field: "", message: "version_info is empty" }],
    };
  const { raw, problems, skipped } = resourcesFromWire(resources);
  if (problems.length > 0) {
    return {
      ok: false,
      lines: problems.map((p) => formatIssue(at.issue([], p))),
      details: problems.map((p) => ({ kind: "", resource: "", field: "", message: p })),
    };
  }
  // What a file may say but a push may not, reported beside any other problem.
  const refused = pushIssues(raw).map((i) => at.issue(i.path, i.message));
  try {
    const parsed = parseWith(resourcesSchema, raw, at);
    const resources = compileResources(parsed, new CompileContext(at), version);
    if (refused.length > 0) throw new ConfigError([]);
    return { ok: true, resources, skipped };
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const issues = [...e.issues, ...refused];
    return { ok: false, lines: issues.map(formatIssue), details: issues.map((i) => locateIssue(i, raw)) };
  }
}
