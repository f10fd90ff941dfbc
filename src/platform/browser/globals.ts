/**
 * The two Node globals atedm's loading path touches, for the browser build: `Buffer` (the safetensors reader's
 * byte buffers: `alloc`, `from` a UTF-8 string, `concat`, `readBigUInt64LE`, `readUInt16LE`, `readDoubleLE`,
 * `writeBigUInt64LE`, `toString`) as a
 * small Uint8Array subclass, and `process` (`env`, `pid`, `memoryUsage.rss`). Installed once, by the worker, before
 * atedm's modules run; in Node (which has both) `installBrowserGlobals` does nothing.
 */
const ENCODER = new TextEncoder();
const DECODER = new TextDecoder("utf-8");

export class BrowserBuffer extends Uint8Array {
  static alloc(size: number): BrowserBuffer {
    return new BrowserBuffer(size);
  }

  static concat(list: readonly Uint8Array[]): BrowserBuffer {
    const out = new BrowserBuffer(list.reduce((n, b) => n + b.length, 0));
    let at = 0;
    for (const b of list) {
      out.set(b, at);
      at += b.length;
    }
    return out;
  }

  static isBuffer(x: unknown): boolean {
    return x instanceof BrowserBuffer;
  }

  readBigUInt64LE(offset = 0): bigint {
    return new DataView(this.buffer, this.byteOffset, this.byteLength).getBigUint64(offset, true);
  }

  private view(): DataView {
    return new DataView(this.buffer, this.byteOffset, this.byteLength);
  }

  readUInt16LE(offset = 0): number {
    return this.view().getUint16(offset, true);
  }

  readDoubleLE(offset = 0): number {
    return this.view().getFloat64(offset, true);
  }

  writeBigUInt64LE(value: bigint, offset = 0): number {
    new DataView(this.buffer, this.byteOffset, this.byteLength).setBigUint64(offset, value, true);
    return offset + 8;
  }

  override toString(encoding?: string): string {
    if (encoding === undefined || encoding === "utf8" || encoding === "utf-8") return DECODER.decode(this);
    throw new Error(`Buffer.toString: encoding ${encoding} is not supported`);
  }
}

/** `Buffer.from` of a UTF-8 string or bytes (a static of its own: Uint8Array.from's signature differs). */
export function bufferFrom(value: string | ArrayLike<number> | ArrayBufferLike, encoding?: string): BrowserBuffer {
  if (typeof value === "string") {
    if (encoding !== undefined && encoding !== "utf8" && encoding !== "utf-8") throw new Error(`Buffer.from: encoding ${encoding} is not supported`);
    const bytes = ENCODER.encode(value);
    const out = new BrowserBuffer(bytes.length);
    out.set(bytes);
    return out;
  }
  const src = value instanceof ArrayBuffer || value instanceof SharedArrayBuffer ? new Uint8Array(value) : (value as ArrayLike<number>);
  const out = new BrowserBuffer(src.length);
  out.set(src);
  return out;
}

export function installBrowserGlobals(): void {
  const g = globalThis as Record<string, unknown>;
  if (g.Buffer === undefined) g.Buffer = Object.defineProperty(BrowserBuffer, "from", { value: bufferFrom });
  if (g.process === undefined) {
    g.process = {
      env: {},
      pid: 1,
      platform: "browser",
      memoryUsage: Object.assign(() => ({ rss: 0 }), { rss: () => 0 }),
    };
  }
}
