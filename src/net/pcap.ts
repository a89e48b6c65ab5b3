/**
 * A pcap file (the classic format tcpdump and Wireshark read): a global
 * header, then one record per packet with its capture time, the bytes
 * captured and the packet's length on the wire.
 */
import { closeSync, openSync, writeSync } from 'node:fs';

/** LINKTYPE_ETHERNET */
export const LINKTYPE_ETHERNET = 1;
const MAGIC_USEC = 0xa1b2c3d4;

export function pcapHeader(snaplen: number, linktype = LINKTYPE_ETHERNET): Buffer {
  const h = Buffer.alloc(24);
  h.writeUInt32LE(MAGIC_USEC, 0);
  h.writeUInt16LE(2, 4); // version 2.4
  h.writeUInt16LE(4, 6);
  h.writeInt32LE(0, 8); // thiszone: UTC
  h.writeUInt32LE(0, 12); // sigfigs
  h.writeUInt32LE(snaplen, 16);
  h.writeUInt32LE(linktype, 20);
  return h;
}

/** One packet: captured bytes, the length it had, when (ms since the epoch, fractions kept to the microsecond). */
export function pcapRecord(data: Buffer, origLen: number, timeMs: number): Buffer {
  const h = Buffer.alloc(16);
  const us = Math.round(timeMs * 1000);
  h.writeUInt32LE(Math.floor(us / 1e6), 0);
  h.writeUInt32LE(us % 1e6, 4);
  h.writeUInt32LE(data.length, 8);
  h.writeUInt32LE(Math.max(origLen, data.length), 12);
  return Buffer.concat([h, data]);
}

/** Packets appended to a pcap file as they come (written through: a reader sees each at once). */
export class PcapWriter {
  private fd: number;
  packets = 0;

  constructor(
    readonly path: string,
    snaplen: number,
  ) {
    this.fd = openSync(path, 'w');
    writeSync(this.fd, pcapHeader(snaplen));
  }

  write(data: Buffer, origLen: number, timeMs: number): void {
    if (this.fd < 0) return;
    writeSync(this.fd, pcapRecord(data, origLen, timeMs));
    this.packets++;
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}
