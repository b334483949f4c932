// Reason codes: a stable, documented enum that decision logs and metrics carry. Never rename one.
export const REASONS = {
  explicit_allow: "an allow rule matched",
  default_allow: "no rule matched and the policy default is allow",
  explicit_deny: "a deny rule matched",
  default_deny: "no rule matched and the policy default is deny",
  no_client_cert: "the peer presented no certificate",
  invalid_svid: "the peer certificate is not a valid X509-SVID (svid_rule names the rule broken)",
  untrusted_domain: "no trust bundle is configured for the peer's trust domain",
} as const;

export type ReasonCode = keyof typeof REASONS;
