// parley's error catalogue: every error parley throws carries one of these codes (prefix PARLEY_ERR_)
// and its class name, so callers tell errors apart by code, never by message or by Node's own ERR_*
// namespace. The classes live beside the code that throws them; their codes live here, once.
export const ERROR_CODES = {
  PARLEY_ERR_USAGE: "bad input on the command line (exit 2)",
  PARLEY_ERR_CONFIG: "an invalid configuration, bootstrap or pushed resource set; issues located file:line:col",
  PARLEY_ERR_APPLY: "a valid configuration that could not be put in force (a bind failed, a bundle rolled back)",
  PARLEY_ERR_CHECK_INPUT: "bad input to the offline check (`parley check`)",
  PARLEY_ERR_GLOB: "an invalid SPIFFE ID wildcard in a policy",
  PARLEY_ERR_SPIFFE_ID: "a string that is not a SPIFFE ID (the rule broken is in `rule`)",
  PARLEY_ERR_DER: "malformed DER",
  PARLEY_ERR_CERT_PARSE: "a certificate that cannot be read",
  PARLEY_ERR_BUNDLE_FORMAT: "a trust bundle in neither PEM nor the SPIFFE bundle format",
  PARLEY_ERR_WORKLOAD_API: "a Workload API endpoint or message that cannot be used",
  PARLEY_ERR_NEGOTIATION: "a parley/1 negotiation refused (the denial code is in `denial`)",
  PARLEY_ERR_TOKEN: "an attestation or approval token refused (the rule broken is in `rule`)",
  PARLEY_ERR_DENIED: "the remote parley denied the session (client side of parley/1)",
  PARLEY_ERR_UPSTREAM_DIAL: "the workload could not be dialled",
  PARLEY_ERR_MULTIPLEX: "no stream to the remote parley on a multiplexed hop (the outbound log's reason is in `reason`)",
  PARLEY_ERR_PROXY_HEADER: "a PROXY protocol v2 header that the format cannot carry (too long, no TCP address pair)",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export abstract class ParleyError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}
