// The control plane's view of its directory: shared resource files plus per-node overrides, merged,
// validated with the sidecar's own schema and compiler, and turned into versioned wire snapshots.
//
//   DIR/*.yaml            shared resources, merged in file-name order
//   DIR/nodes/<id>.yaml   resources of node <id>, merged over the shared ones, and the node's
//                         `identity:` (who may claim it, see scope.ts)
//
// Maps (policies, trust_domains, roles, attestors, approvers, token_services, verifiers, revocations) merge by key, listeners and
// outbound routes by name, the later file winning; attestation records add up; settings are overridden one by one (shared_limits
// as a whole). What a file may say but a push may not (pushable.ts) refuses the file.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { CompileContext, compileResources } from "../../config/resources.js";
import { resourcesSchema } from "../../config/schema.js";
import { ConfigError, errorLines, parseWith, PathOnlySource, YamlSource } from "../../config/source.js";
import type { IdentityMatcher } from "../../policy/matcher.js";
import { pushIssues } from "../pushable.js";
import { resourcesToWire, type WireResource } from "../wire.js";
import type { NodeBinding } from "./authorize.js";
import { parseIdentity, scopeAttestations } from "./scope.js";

export interface Snapshot {
  readonly version: string;
  readonly resources: readonly WireResource[];
}

type Obj = Record<string, unknown>;

const MAP_SECTIONS = ["policies", "trust_domains", "roles", "attestors", "approvers", "token_services", "verifiers", "revocations"] as const;
/** Replaced whole by a later file (shared_limits too: its URL and settings belong together). */
const SCALARS = ["drain_timeout", "revocation_grace", "shared_limits"] as const;
/** Per-file shape check: every section optional, unknown keys still refused with their line. */
const partialSchema = resourcesSchema.partial();

function yamlFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".yaml") || f.endsWith(".yml"))
    .sort()
    .map((f) => join(dir, f));
}

/** Reads one resource file: checked against the schema with file and line, bundles inlined. */
function readResourceFile(file: string): Obj {
  return readNodeFile(file, false).data;
}

/** A node file also may bind the node to identities (`identity:`, kept apart from the resources). */
function readNodeFile(file: string, isNode = true): { data: Obj; identity: IdentityMatcher[] } {
  const src = YamlSource.read(file);
  const data = (src.toJS() ?? {}) as Obj;
  let identity: IdentityMatcher[] = [];
  if (isNode && data.identity !== undefined) {
    const parsed = parseIdentity(data.identity, src);
    if (parsed.issues.length > 0) throw new ConfigError(parsed.issues);
    identity = parsed.matchers;
    delete data.identity;
  }
  parseWith(partialSchema, data, src);
  const refused = pushIssues(data).map((i) => src.issue(i.path, i.message));
  if (refused.length > 0) throw new ConfigError(refused);
  const tds = (data.trust_domains ?? {}) as Record<string, Obj>;
  const issues = [];
  for (const [name, td] of Object.entries(tds)) {
    if (typeof td.bundle !== "string") continue;
    const full = resolve(dirname(file), td.bundle);
    try {
      tds[name] = { bundle_pem: readFileSync(full, "utf8") };
    } catch (e) {
      issues.push(src.issue(["trust_domains", name, "bundle"], `cannot read ${full}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`));
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
  return { data, identity };
}

export function mergeResources(layers: readonly Obj[]): Obj {
  const out: Obj = {};
  const listeners = new Map<string, Obj>();
  const outbound = new Map<string, Obj>();
  const attestations: unknown[] = [];
  for (const layer of layers) {
    for (const section of MAP_SECTIONS) {
      if (layer[section]) out[section] = { ...(out[section] ?? {}), ...(layer[section] as Obj) };
    }
    for (const l of (layer.listeners as Obj[] | undefined) ?? []) listeners.set(String(l.name), l);
    for (const o of (layer.outbound as Obj[] | undefined) ?? []) outbound.set(String(o.name), o);
    attestations.push(...((layer.attestations as unknown[] | undefined) ?? []));
    for (const k of SCALARS) if (layer[k] !== undefined) out[k] = layer[k];
    if (layer.limits) out.limits = { ...(out.limits ?? {}), ...(layer.limits as Obj) };
  }
  out.listeners = [...listeners.values()];
  if (outbound.size > 0) out.outbound = [...outbound.values()];
  out.attestations = attestations;
  for (const section of MAP_SECTIONS) out[section] ??= {};
  return out;
}

/** Validates a merged set exactly as a sidecar will, and makes its snapshot. */
function snapshotOf(merged: Obj, origin: string): Snapshot {
  const at = new PathOnlySource(origin);
  compileResources(parseWith(resourcesSchema, merged, at), new CompileContext(at), "validation");
  const resources = resourcesToWire(scopeAttestations(merged));
  const version = createHash("sha256").update(JSON.stringify(resources)).digest("hex").slice(0, 16);
  return { version, resources };
}

export type LoadResult = { ok: true; changed: string[] } | { ok: false; errors: string[] };

export class SnapshotStore {
  /** Snapshot for nodes without an override file; undefined when the shared files alone are incomplete. */
  private shared: Snapshot | undefined;
  private sharedError: string | undefined;
  private perNode = new Map<string, Snapshot>();
  private bindings = new Map<string, NodeBinding>();

  constructor(readonly dir: string) {}

  /**
   * Re-reads the directory. All or nothing: if any file or any node's merged set is invalid, nothing
   * changes and the errors are returned. Returns the node ids whose snapshot changed ("*" for the
   * shared one).
   */
  load(): LoadResult {
    let shared: Obj[];
    let nodes: Array<[string, Obj]>;
    const bindings = new Map<string, NodeBinding>();
    try {
      shared = yamlFiles(this.dir).map(readResourceFile);
      nodes = yamlFiles(join(this.dir, "nodes")).map((f) => {
        const id = basename(f).replace(/\.ya?ml$/, "");
        const { data, identity } = readNodeFile(f);
        bindings.set(id, { file: f, identity });
        return [id, data];
      });
    } catch (e) {
      return { ok: false, errors: errorLines(e) };
    }
    const errors: string[] = [];
    const perNode = new Map<string, Snapshot>();
    for (const [id, layer] of nodes) {
      try {
        perNode.set(id, snapshotOf(mergeResources([...shared, layer]), `node ${id}`));
      } catch (e) {
        errors.push(...errorLines(e));
      }
    }
    // The shared files alone are what nodes without an override get. With no override files at all
    // they are the whole configuration and must be valid; otherwise they may be incomplete.
    let sharedSnap: Snapshot | undefined;
    let sharedError: string | undefined;
    try {
      sharedSnap = snapshotOf(mergeResources(shared), "shared");
    } catch (e) {
      const msgs = errorLines(e);
      if (nodes.length === 0) errors.push(...msgs);
      sharedError = msgs.join("; ");
    }
    if (errors.length > 0) return { ok: false, errors };
    const changed = [...perNode].filter(([id, s]) => this.perNode.get(id)?.version !== s.version).map(([id]) => id);
    for (const id of this.perNode.keys()) if (!perNode.has(id)) changed.push(id);
    if (sharedSnap?.version !== this.shared?.version) changed.push("*");
    this.perNode = perNode;
    this.bindings = bindings;
    this.shared = sharedSnap;
    this.sharedError = sharedError;
    return { ok: true, changed };
  }

  forNode(nodeId: string): Snapshot | { error: string } {
    const s = this.perNode.get(nodeId) ?? this.shared;
    return s ?? { error: `no valid configuration for node ${nodeId}: the shared files alone are incomplete (${this.sharedError})` };
  }

  /** The node's binding when it has a file of its own. */
  binding(nodeId: string): NodeBinding | undefined {
    return this.bindings.get(nodeId);
  }

  nodesWithOverrides(): string[] {
    return [...this.perNode.keys()];
  }
}
