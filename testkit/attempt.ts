// One session attempt through a sidecar: admitted (the echo workload answered) or refused (closed).
import type { TLSSocket } from "node:tls";
import type { Issued } from "../src/certs/issue.js";
import { dialTls, readAll, waitFor } from "./harness.js";
import type { TestPki } from "./pki.js";

/** Opens a session on `port`, keeps its socket in `open` (the caller closes them), reports whether it was admitted. */
export async function attempt(port: number, pki: TestPki, creds: Issued, open: TLSSocket[]): Promise<boolean> {
  const s = await dialTls(port, pki, creds);
  open.push(s);
  let got = "";
  s.on("data", (c: Buffer) => (got += c.toString()));
  const closed = readAll(s);
  s.write("x");
  return Promise.race([waitFor(() => got === "x", 5000, "echo").then(() => true), closed.then(() => false)]);
}

/** Polls an asynchronous probe (e.g. a Redis query) until it holds; waitFor takes synchronous ones. */
export async function until(probe: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
