/**
 * A throw-away Redis for the queue tests: Debian's `redis-server` (REDIS_SERVER overrides the path; `.ci/run`
 * installs it when missing) on 127.0.0.1 at a free port, no persistence, its files in a temp folder. `restart()`
 * kills it (SIGKILL, so every key is lost, as in a crash without persistence) and starts it again on the same
 * port; `stop()` kills it. Every wait is bounded.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const REDIS_PATHS = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"];

/** The redis-server executable; throws (never skips) with how to install it when there is none. */
export function findRedisServer(paths: readonly string[] = REDIS_PATHS): string {
  const fromEnv = process.env.REDIS_SERVER;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`REDIS_SERVER=${fromEnv}: no such file`);
    return fromEnv;
  }
  const found = paths.find((p) => existsSync(p));
  if (!found) throw new Error(`no redis-server found (tried ${paths.join(", ")}): run 'apt-get install redis-server' (as root), or set REDIS_SERVER`);
  return found;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => done(port));
    });
  });
}

/** Whether something on 127.0.0.1:port answers PING with PONG within `ms`. */
export function pingRedis(port: number, ms = 500): Promise<boolean> {
  return new Promise((done) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    const timer = setTimeout(() => finish(false), ms);
    let text = "";
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      done(ok);
    };
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (b) => {
      text += b.toString("latin1");
      if (text.includes("\r\n")) finish(text.startsWith("+PONG"));
    });
    socket.on("error", () => finish(false));
  });
}

export interface TestRedis {
  port: number;
  url: string;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

async function waitFor(what: string, ok: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

export async function startRedis(): Promise<TestRedis> {
  const exe = findRedisServer();
  const dir = mkdtempSync(join(tmpdir(), "atedm-redis-"));
  const port = await freePort();
  let child: ChildProcess | null = null;
  const log: string[] = [];
  const start = async () => {
    const c = spawn(exe, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    c.stdout?.on("data", (b: Buffer) => log.push(b.toString()));
    c.stderr?.on("data", (b: Buffer) => log.push(b.toString()));
    child = c;
    try {
      await waitFor(`redis-server on port ${port}`, () => pingRedis(port), 10_000);
    } catch (e) {
      c.kill("SIGKILL");
      throw new Error(`${(e as Error).message}\n${log.join("").slice(-2000)}`);
    }
  };
  const kill = async () => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    restart: async () => {
      await kill();
      await start();
    },
    stop: kill,
  };
}
