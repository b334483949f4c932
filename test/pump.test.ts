// The pump on real loopback sockets: without byte obligations a plain forwarder; limits set on
// a live pump switch its handlers (a bandwidth added applies from the next chunk, a bandwidth removed
// lets a throttled direction read again at once); a byte budget still ends the session.
import { connect, createServer, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { Throttle } from "../src/limits/throttle.js";
import { pump, type PumpEnd, type PumpLimits } from "../src/proxy/pump.js";
import { waitFor } from "../testkit/harness.js";

const open: Socket[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.destroy();
});

/** Two ends of one loopback TCP connection. */
async function pair(): Promise<[Socket, Socket]> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const accepted = new Promise<Socket>((r) => server.once("connection", r));
  const a = connect((server.address() as { port: number }).port, "127.0.0.1");
  const b = await accepted;
  server.close();
  open.push(a, b);
  return [a, b];
}

/** app ⇄ [client | pump | upstream] ⇄ workload, with received byte counts at both outer ends. */
async function rig(limits: PumpLimits | undefined) {
  const [app, client] = await pair();
  const [upstream, workload] = await pair();
  const got = { workload: 0, app: 0 };
  workload.on("data", (c: Buffer) => (got.workload += c.length));
  app.on("data", (c: Buffer) => (got.app += c.length));
  const ends: PumpEnd[] = [];
  const p = pump(client, upstream, limits, (e) => ends.push(e));
  const workloadClosed = new Promise((resolve) => workload.once("close", resolve));
  return { app, client, upstream, workload, workloadClosed, got, ends, p };
}

/** A clock that stands still and counts its readings. */
function stillClock() {
  const c = { reads: 0, now: () => (c.reads++, 0) };
  return c;
}

describe("pump", () => {
  it("forwards both ways and counts bytes when no obligation acts on bytes", async () => {
    const r = await rig(undefined);
    r.app.write(Buffer.alloc(100_000, 1));
    r.workload.write(Buffer.alloc(50_000, 2));
    await waitFor(() => r.got.workload === 100_000 && r.got.app === 50_000);
    expect(r.p.counts).toEqual({ toUpstream: 100_000, toClient: 50_000 });
  });

  it("holds a direction while the workload does not read, on one drain listener for the session", async () => {
    const r = await rig(undefined);
    const listeners = r.upstream.listenerCount("drain");
    r.workload.pause();
    const sent = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < sent.length; i++) sent[i] = i % 251;
    r.app.write(sent);
    await waitFor(() => r.client.isPaused(), 5000, "backpressure from the workload");
    // Waiting adds no listener (a `once` per wait would show here).
    expect(r.upstream.listenerCount("drain")).toBe(listeners);
    const received: Buffer[] = [];
    r.workload.on("data", (c: Buffer) => received.push(c));
    r.workload.resume();
    await waitFor(() => r.got.workload === sent.length, 10_000, "every byte at the workload");
    expect(Buffer.concat(received).equals(sent)).toBe(true);
    expect(r.upstream.listenerCount("drain")).toBe(listeners);
    expect(r.client.isPaused()).toBe(false);
  });

  it("switches to the metered handler when a bandwidth is added, and back when it is removed", async () => {
    const r = await rig(undefined);
    r.app.write(Buffer.alloc(10_000, 1));
    await waitFor(() => r.got.workload === 10_000);
    // 1,000 B/s with a burst of 100 B and a clock that stands still: the next chunk is owed for ~15 min.
    const clock = stillClock();
    const up = new Throttle(1000, 0);
    r.p.setLimits({ up: [up], down: [], now: clock.now });
    r.app.write(Buffer.alloc(1000, 1));
    await waitFor(() => r.client.isPaused());
    expect(clock.reads).toBeGreaterThan(0);
    const held = r.got.workload;
    r.app.write(Buffer.alloc(5000, 1));
    // Removing the bandwidth lets the paused direction read again at once, not after its debt.
    r.p.setLimits(undefined);
    await waitFor(() => r.got.workload === held + 5000);
    expect(r.client.isPaused()).toBe(false);
    const reads = clock.reads;
    r.app.write(Buffer.alloc(5000, 1));
    await waitFor(() => r.got.workload === held + 10_000);
    expect(clock.reads).toBe(reads);
  });

  it("ends the session at a byte budget set on a live pump, forwarding not one byte more", async () => {
    const r = await rig(undefined);
    r.app.write(Buffer.alloc(1000, 1));
    await waitFor(() => r.got.workload === 1000);
    r.p.setLimits({ byteBudget: 1500, up: [], down: [], now: () => 0 });
    r.app.write(Buffer.alloc(2000, 1));
    await waitFor(() => r.ends.length === 1);
    expect(r.ends[0]).toEqual({ reason: "byte_budget" });
    // The session closes the workload side at its end (as InboundSession does): every byte forwarded
    // has arrived by the workload's close.
    r.upstream.end();
    await r.workloadClosed;
    expect(r.got.workload).toBe(1500);
    expect(r.p.counts.toUpstream).toBe(1500);
  });
});
