// A decision as text for people: what `parley check` prints.
import type { Decision, Obligations } from "./decision.js";

function obligationsText(o: Obligations): string[] {
  const out: string[] = [];
  if (o.expiresAt !== undefined) out.push(`session ends by ${new Date(o.expiresAt).toISOString()} (${o.expiresBecause})`);
  if (o.idleTimeoutMs !== undefined) out.push(`idle timeout ${o.idleTimeoutMs} ms`);
  if (o.byteBudget !== undefined) out.push(`byte budget ${o.byteBudget}`);
  if (o.bandwidthBps !== undefined) out.push(`bandwidth ${o.bandwidthBps} B/s each way`);
  return out;
}

export function formatDecision(d: Decision, peerId: string): string {
  const lines = [
    `${d.decision.toUpperCase()}  ${peerId}`,
    `  policy   ${d.policy} (version ${d.policyVersion}, ${d.mode})`,
    `  rule     ${d.rule ?? (d.svidRule ? "(none: certificate rejected)" : d.decision === "deny" && d.revocation ? "(none: revoked, before any rule)" : "(none: policy default)")}`,
    `  reasons  ${d.reasons.join(", ")}`,
  ];
  if (d.svidRule) lines.push(`  svid     ${d.svidRule}: ${d.detail}`);
  if (d.decision === "deny" && d.revocation) lines.push(`  revoked  ${d.detail}`);
  if (d.roles.length > 0) lines.push(`  roles    ${d.roles.join(", ")}`);
  if (d.decision === "allow") {
    if (d.wouldDeny) lines.push(`  AUDIT    would deny (rule ${d.wouldDeny.rule ?? "default"}: ${d.wouldDeny.reasons.join(", ")})`);
    for (const o of obligationsText(d.obligations)) lines.push(`  limit    ${o}`);
  }
  if (d.explain) {
    lines.push("", "rules, in evaluation order (deny rules first):");
    for (const t of d.explain) {
      const why = t.details.length > 0 ? `: ${t.details.join("; ")}` : t.reasons.length > 0 ? `: ${t.reasons.join(", ")}` : "";
      lines.push(`  ${t.action.padEnd(5)} ${t.rule.padEnd(24)} ${t.outcome}${t.mode === "audit" ? " (audit)" : ""}${why}`);
    }
  }
  return lines.join("\n") + "\n";
}
