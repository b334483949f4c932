// A real redis-server for the shared-limits tests: started on a free loopback port in a temp dir, no
// persistence, stopped (and restarted on the same port) by the test that owns it.
import { spawn, type ChildProcess } from "node:child_process";
import { freePort, tempDir } from "./harness.js";

export interface RedisServer {
  readonly port: number;
  /** The running server's process id (a restart changes it). */
  readonly pid: number;
  readonly url: string;
  /** Whether the server process is alive (not stopped). */
  readonly running: boolean;
  stop(): Promise<void>;
  /** Starts it again on the same port (empty: nothing is persisted). */
  restart(): Promise<void>;
  /** Freezes the server (SIGSTOP): connections stay open, commands go unanswered, as a stalled Redis. */
  pause(): void;
  /** Thaws it (SIGCONT): it answers what waited. */
  resume(): void;
}

export interface RedisOptions {
  /** Serve TLS only, with this certificate and key (PEM files); clients need not present one. */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /** Require AUTH with this password (the default user). */
  readonly password?: string;
}

function launch(port: number, dir: string, o: RedisOptions): Promise<ChildProcess> {
  const listen = o.tls
    ? ["--port", "0", "--tls-port", String(port), "--tls-cert-file", o.tls.certFile, "--tls-key-file", o.tls.keyFile, "--tls-auth-clients", "no"]
    : ["--port", String(port)];
  const auth = o.password !== undefined ? ["--requirepass", o.password] : [];
  const child = spawn("redis-server", [...listen, ...auth, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString();
      if (out.includes("Ready to accept connections")) resolve(child);
    });
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`redis-server exited (${code}): ${out}`)));
  });
}

export async function startRedis(o: RedisOptions = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = tempDir();
  let child = await launch(port, dir, o);
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    port,
    get pid() {
      return child.pid!;
    },
    get running() {
      return alive();
    },
    url: `${o.tls ? "rediss" : "redis"}://${o.password !== undefined ? `:${o.password}@` : ""}127.0.0.1:${port}`,
    async stop() {
      if (!alive()) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGKILL");
      await exited;
    },
    pause() {
      child.kill("SIGSTOP");
    },
    resume() {
      child.kill("SIGCONT");
    },
    async restart() {
      child = await launch(port, dir, o);
    },
  };
}
