// Revocations posted to the admin server (`POST /revocations`): held in memory beside the
// configuration's own, each until its `until`. Reloads and control-plane pushes replace the
// configuration's entries, never these; a restart forgets them (README, "Revocations": an entry meant
// to outlive the process goes into the file or the control plane's directory, `parley revoke`).
// Posting a name again replaces that entry. Bounded like a configuration: at most MAX_MATCHERS
// matchers in all, entries past their `until` dropped first.
import { describe, MAX_MATCHERS, type RevocationEntry } from "../policy/revocation.js";

export interface RevocationView {
  readonly reason: string;
  readonly until: string;
  readonly match: readonly string[];
}

export class AdminRevocations {
  private readonly entries = new Map<string, RevocationEntry>();

  /** Adds (or replaces) `entry`; false, changing nothing, when the set would exceed MAX_MATCHERS. */
  add(entry: RevocationEntry, now: number): boolean {
    this.drop(now);
    let count = entry.match.length;
    for (const [name, e] of this.entries) if (name !== entry.name) count += e.match.length;
    if (count > MAX_MATCHERS) return false;
    this.entries.set(entry.name, entry);
    return true;
  }

  /** The entries still in force at `now`. */
  live(now: number): RevocationEntry[] {
    this.drop(now);
    return [...this.entries.values()];
  }

  /** As `GET /config` shows them, by name. */
  view(now: number): Record<string, RevocationView> {
    return Object.fromEntries(this.live(now).map((e) => [e.name, { reason: e.reason, until: new Date(e.until).toISOString(), match: e.match.map(describe) }]));
  }

  private drop(now: number): void {
    for (const [name, e] of this.entries) if (e.until <= now) this.entries.delete(name);
  }
}
