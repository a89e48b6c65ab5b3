/**
 * The server side of RFC 6455, as much as `kubectl exec` needs: the upgrade
 * handshake with a subprotocol, binary messages both ways (fragmented ones
 * reassembled), ping/pong, close. Client frames must be masked; anything
 * malformed closes the connection with 1002.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const MAX_MESSAGE = 16 << 20;

export const acceptKey = (key: string): string =>
  createHash('sha1')
    .update(key + GUID)
    .digest('base64');

/** An unmasked server frame. */
export function frame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.alloc(2) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = 0x80 | opcode;
  if (n < 126) head[1] = n;
  else if (n < 65536) {
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else {
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

/**
 * Answer an upgrade request: 101 with the first protocol we speak that the
 * client offered, or 400 naming what was wrong (the socket is then ended).
 */
export function acceptUpgrade(req: IncomingMessage, socket: Duplex, protocols: readonly string[]): string | undefined {
  const key = req.headers['sec-websocket-key'];
  const offered = String(req.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  const chosen = protocols.find((p) => offered.includes(p));
  const bad = (why: string): undefined => {
    socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n${why}\n`);
    return undefined;
  };
  if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket' || typeof key !== 'string')
    return bad('expected a websocket upgrade (Upgrade: websocket, Sec-WebSocket-Key)');
  if (!chosen) return bad(`none of the offered subprotocols (${offered.join(', ') || 'none'}) is served; served: ${protocols.join(', ')}`);
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\nSec-WebSocket-Protocol: ${chosen}\r\n\r\n`,
  );
  return chosen;
}

/** One accepted websocket connection. */
export class WsConnection {
  private buf = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private closed = false;
  private readonly onMessages: Array<(m: Buffer) => void> = [];
  private readonly onCloses: Array<() => void> = [];

  constructor(
    private readonly socket: Duplex,
    head: Buffer = Buffer.alloc(0),
  ) {
    socket.on('data', (d: Buffer) => this.feed(d));
    socket.on('close', () => this.finish());
    socket.on('error', () => this.finish());
    if (head.length) this.feed(head);
  }

  onMessage(cb: (m: Buffer) => void): void {
    this.onMessages.push(cb);
  }

  onClose(cb: () => void): void {
    this.onCloses.push(cb);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(data: Buffer): void {
    if (!this.closed) this.socket.write(frame(0x2, data));
  }

  /** A close frame, then the end of the socket. */
  close(code = 1000, reason = ''): void {
    if (this.closed) return;
    const p = Buffer.alloc(2 + Buffer.byteLength(reason));
    p.writeUInt16BE(code, 0);
    p.write(reason, 2);
    this.socket.end(frame(0x8, p));
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    for (const cb of this.onCloses) cb();
  }

  private feed(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0]!;
      const b1 = this.buf[1]!;
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      if ((b1 & 0x80) === 0) return this.close(1002, 'client frames must be masked');
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        const big = this.buf.readBigUInt64BE(2);
        if (big > BigInt(MAX_MESSAGE)) return this.close(1009, 'message too big');
        len = Number(big);
        off = 10;
      }
      if (len > MAX_MESSAGE) return this.close(1009, 'message too big');
      if (this.buf.length < off + 4 + len) return;
      const mask = this.buf.subarray(off, off + 4);
      const payload = Buffer.from(this.buf.subarray(off + 4, off + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
      this.buf = this.buf.subarray(off + 4 + len);
      if (opcode === 0x8) return this.close(1000);
      if (opcode === 0x9) {
        if (!this.closed) this.socket.write(frame(0xa, payload));
        continue;
      }
      if (opcode === 0xa) continue;
      if (opcode !== 0x0 && opcode !== 0x1 && opcode !== 0x2) return this.close(1002, `unknown opcode ${opcode}`);
      this.fragments.push(payload);
      if (this.fragments.reduce((a, f) => a + f.length, 0) > MAX_MESSAGE) return this.close(1009, 'message too big');
      if (!fin) continue;
      const msg = Buffer.concat(this.fragments);
      this.fragments = [];
      for (const cb of this.onMessages) cb(msg);
    }
  }
}
