// A clock the test moves by hand, for limits and expiries whose subject is time: the sidecar reads it
// through its injected `now`, so a refill or an expiry happens when the test says, not after a sleep.
export class ManualClock {
  constructor(private t = Date.now()) {}

  readonly now = (): number => this.t;

  advance(ms: number): void {
    this.t += ms;
  }
}
