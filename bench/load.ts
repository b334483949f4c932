// The load generator the proxy benchmarks share (bench/proxy.ts: mTLS straight to a server;
// bench/mesh.ts: plaintext into an outbound proxy): new sessions at a fixed concurrency, round trips
// on long-lived sessions, one bulk transfer, idle sessions held open. Each takes a way to open a
// connection (TLS or TCP, the caller's choice) and knows nothing of what serves it; CPU and memory of
// the servers are the callers' to read (bench/procstat.ts).
import type { Socket } from "node:net";

export const payload64 = Buffer.alloc(64, 42);

/** Writes `payload` and waits for as many bytes back; fails if the socket closes first. */
export function roundTrip(s: Socket, payload: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const on = (c: Buffer) => {
      got += c.length;
      if (got < payload.length) return;
      s.off("data", on);
      s.off("close", gone);
      resolve();
    };
    const gone = () => reject(new Error("closed before the echo"));
    s.on("data", on);
    s.once("close", gone);
    s.write(payload);
  });
}

/** Ends the socket and waits until it is closed. */
export function endAndClose(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    s.once("close", () => resolve());
    s.end();
  });
}

/** Opens a connection to target `i`; one opener per worker, so a worker may keep state (a TLS session to resume). */
export type Opener = (i: number) => Promise<Socket>;

export interface SessionLoad {
  /** How many targets connections are dealt to, in turn. */
  readonly targets: number;
  readonly concurrency: number;
  readonly seconds: number;
  /** Called once per worker. */
  readonly opener: () => Opener;
}

/**
 * New sessions (open, 64-byte echo, close) at a fixed concurrency for `seconds`, connections dealt
 * round robin over the targets; sessions completed per target, and failures.
 */
export async function newSessionLoad(load: SessionLoad): Promise<{ done: number[]; errors: number }> {
  const done = Array.from({ length: load.targets }, () => 0);
  let errors = 0;
  let next = 0;
  const until = Date.now() + load.seconds * 1000;
  const worker = async () => {
    const open = load.opener();
    while (Date.now() < until) {
      const i = next++ % load.targets;
      try {
        const s = await open(i);
        s.on("error", () => {});
        await roundTrip(s, payload64);
        await endAndClose(s);
        done[i]!++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: load.concurrency }, worker));
  return { done, errors };
}

/** 64-byte round trips on `sessions`, each in a loop, for `seconds`: every latency in ms, sorted. */
export async function roundTripLatencies(sessions: readonly Socket[], seconds: number): Promise<number[]> {
  const lat: number[] = [];
  const until = Date.now() + seconds * 1000;
  await Promise.all(
    sessions.map(async (s) => {
      while (Date.now() < until) {
        const t0 = process.hrtime.bigint();
        await roundTrip(s, payload64);
        lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }),
  );
  return lat.sort((a, b) => a - b);
}

/** The `p` quantile of sorted values (NaN when there are none). */
export const quantile = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Bulk transfers over `s` (an echo) in slices: each call sends `bytes` (in 256 KiB writes, minding
 * backpressure) and resolves, once they have all come back, with the seconds from its first write.
 */
export function bulkEcho(s: Socket): (bytes: number) => Promise<number> {
  const chunk = Buffer.alloc(256 * 1024, 7);
  let got = 0;
  let want = 0;
  let arrived: (() => void) | undefined;
  s.on("data", (c: Buffer) => {
    got += c.length;
    if (got >= want) arrived?.();
  });
  return async (bytes) => {
    const t0 = performance.now();
    want += bytes;
    const echoed = new Promise<void>((resolve) => (arrived = resolve));
    for (let sent = 0; sent < bytes; sent += chunk.length) if (!s.write(chunk)) await new Promise((r) => s.once("drain", r));
    if (got < want) await echoed;
    return (performance.now() - t0) / 1000;
  };
}

/** `mib` MiB each way at once over `s` (an echo): seconds from the first write to the last byte back. */
export function bulkTransfer(s: Socket, mib: number): Promise<number> {
  return bulkEcho(s)(mib * 1024 * 1024);
}

/** Opens `n` sessions, 50 at a time, each having echoed 64 bytes; the caller holds and later destroys them. */
export async function openIdle(n: number, open: () => Promise<Socket>): Promise<Socket[]> {
  const held: Socket[] = [];
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => open().then(async (s) => (await roundTrip(s, payload64), s))));
    held.push(...batch);
  }
  return held;
}
