// Named counters (`<component>.<what>`), kept by the components that count and read by whatever
// exposes them (logs now, the metrics endpoint when it exists).
export class Counters {
  private readonly values = new Map<string, number>();

  /** `onInc` sees every increment (to feed metrics). */
  constructor(private readonly onInc?: (name: string, by: number) => void) {}

  inc(name: string, by = 1): void {
    this.values.set(name, (this.values.get(name) ?? 0) + by);
    this.onInc?.(name, by);
  }

  get(name: string): number {
    return this.values.get(name) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.values].sort(([a], [b]) => a.localeCompare(b)));
  }
}
