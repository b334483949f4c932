// The shape of a sidecar configuration file. Unknown keys are errors everywhere: a typo must never
// silently become a default.
import { z } from "zod";
import { parseDuration, parseHostPort } from "./units.js";

const duration = z.string().refine((s) => parseDuration(s) !== undefined, {
  message: "expected a duration such as 250ms, 5s, 1m or 2h",
});
const hostPort = z.string().refine((s) => parseHostPort(s) !== undefined, {
  message: "expected host:port, e.g. 127.0.0.1:8443 or [::1]:8443",
});
const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "expected a name of letters, digits, '.', '_' or '-' (at most 63)");

const matcher = z
  .strictObject({ id: z.string().optional(), trust_domain: z.string().optional(), path_prefix: z.string().optional() })
  .refine((m) => [m.id, m.trust_domain, m.path_prefix].filter((v) => v !== undefined).length === 1, {
    message: "a matcher has exactly one of id, trust_domain or path_prefix",
  });

const rule = z.strictObject({
  name,
  action: z.enum(["allow", "deny"]),
  match: z.array(matcher).min(1, "a rule needs at least one matcher"),
});

const policy = z.strictObject({
  default: z.enum(["allow", "deny"]).default("deny"),
  rules: z.array(rule).default([]),
});

const listener = z.strictObject({
  name,
  listen: hostPort,
  upstream: hostPort,
  policy: name,
  handshake_timeout: duration.default("5s"),
  connect_timeout: duration.default("5s"),
});

export const configSchema = z.strictObject({
  identity: z.strictObject({
    cert: z.string().min(1),
    key: z.string().min(1),
  }),
  trust_domains: z.record(z.string(), z.strictObject({ bundle: z.string().min(1) })),
  listeners: z.array(listener).min(1, "at least one listener is required"),
  policies: z.record(name, policy),
  drain_timeout: duration.default("10s"),
  limits: z
    .strictObject({ max_chain_length: z.number().int().min(1).max(16).default(8) })
    .default({ max_chain_length: 8 }),
  log: z.strictObject({ level: z.enum(["debug", "info", "warn", "error", "silent"]).default("info") }).default({ level: "info" }),
});

export type RawConfig = z.infer<typeof configSchema>;
