// The work SVID verification did, counted by kind: what the tests assert on (never wall-clock time)
// and what the sidecar exposes. Kept here so spiffe/ depends on nothing outside it.
export type SvidWork = "svid.signature_checks" | "svid.path_budget_exhausted";

export class SvidWorkCounts {
  private readonly counts = new Map<SvidWork, number>();

  inc(kind: SvidWork): void {
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
  }

  get(kind: SvidWork): number {
    return this.counts.get(kind) ?? 0;
  }
}
