// Validating a control-plane push completely before anything is applied: the same schema and
// compiler as a configuration file, with issues named by resource path instead of file and line.
import { CompileContext, compileResources, type Resources } from "../../config/resources.js";
import { resourcesSchema } from "../../config/schema.js";
import { ConfigError, parseWith, PathOnlySource } from "../../config/source.js";
import { resourcesFromWire, type WireResource } from "../wire.js";

/** Throws ConfigError naming every problem; returns resources stamped with the pushed version. */
export function compilePush(resources: readonly WireResource[], version: string): Resources {
  const at = new PathOnlySource(`push ${version}`);
  if (!version) throw new ConfigError([at.issue([], "version_info is empty")]);
  const { raw, problems } = resourcesFromWire(resources);
  if (problems.length > 0) throw new ConfigError(problems.map((p) => at.issue([], p)));
  const parsed = parseWith(resourcesSchema, raw, at);
  return compileResources(parsed, new CompileContext(at), version);
}
