// Reason codes: a stable, documented enum carried by decision logs and metrics. Never rename one.
export const REASONS = {
  explicit_allow: "an allow rule applied",
  default_allow: "no rule applied and the policy default is allow",
  explicit_deny: "a deny rule applied",
  default_deny: "no allow rule applied and the policy default is deny",
  identity_not_allowed: "no allow rule names this identity",
  role_missing: "an allow rule for this identity requires a role the peer does not hold",
  attestation_missing: "a rule requires attestation evidence and there is none for this peer (and certificate)",
  attestation_stale: "the attestation evidence has expired or is older than the rule's max age",
  attestation_claim_mismatch: "the attestation evidence lacks a required claim value",
  "condition_failed:<name>":
    "a rule condition does not hold: source_cidr, sni, alpn, listener, time, max_cert_lifetime, max_cert_remaining, acting_for, actors, tctx, rctx",
  no_client_cert: "the peer presented no certificate",
  invalid_svid: "the peer certificate is not a valid X509-SVID (svid_rule names the rule broken)",
  untrusted_domain: "no trust bundle is configured for the peer's trust domain",
  weak_crypto: "a certificate of the peer's path is signed with an algorithm, or holds a key, below the configured floor (svid_rule says which)",
  path_budget_exhausted: "building the peer's certification path spent its budget of signature checks or candidates before finding a valid path",
  rate_limited: "the identity is over its new-session rate (after any allowed wait)",
  concurrency_limited: "no session slot free for the identity, the listener or the sidecar (after any allowed wait)",
  own_svid_expired: "the sidecar's own SVID has expired and no new one has arrived: it refuses to serve",
  own_svid_withdrawn: "the Workload API withdrew the sidecar's own SVID (PermissionDenied after issuing it): it refuses to serve",
  negotiation_failed: "the parley/1 request frame or one of its tokens was refused (negotiation_rule says which)",
  config_stale: "the configuration is older than its allowed staleness and the sidecar fails closed",
  task_revoked: "a revocation names the task (`txn`) of the session's approval token",
  token_revoked: "a revocation names the id (`jti`) of the session's approval token",
  grant_revoked: "a revocation names the id of the grant the session was given",
  identity_revoked: "a revocation names the peer's SPIFFE ID, exactly or as a path prefix",
  certificate_revoked: "a revocation names the SHA-256 fingerprint of the peer's leaf certificate",
  shared_limits_unavailable: "the rule's rate is shared across the mesh, its backend (Redis) did not answer in time and the failure mode is deny",
  attestor_revoked: "a revocation names an attestor whose evidence the session was decided with",
  attestation_contraindicated: "the EAR attestation result the rule judges (overall, or a required submodule) has ear_status contraindicated",
  attestation_unappraised: "the rule requires an EAR appraisal and the evidence is no EAR, or its status (overall or a required submodule) is none or absent",
  attestation_warning: "the EAR attestation result the rule judges has ear_status warning and the rule does not allow warning",
  delegation_too_deep: "the approval's delegation chain (RFC 8693 act) has more actors than the rule's max_delegation_depth",
} as const;

export type ReasonCode = Exclude<keyof typeof REASONS, "condition_failed:<name>">;
export type Reason = ReasonCode | `condition_failed:${string}`;
