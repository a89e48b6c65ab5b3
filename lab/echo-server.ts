/**
 * Runs inside a lab pod: tells every TCP connection and UDP datagram which
 * pod answered and what source address it saw ("ip:port", "[ip]:port" for
 * IPv6), then echoes TCP data back. Listens in both families, each socket
 * its own (IPv4 peers are never seen as ::ffff:-mapped addresses).
 *   node echo-server.js --name n1-a --tcp 8080 --udp 5353
 */
import { createSocket } from 'node:dgram';
import { createServer, type Socket } from 'node:net';

const args = process.argv.slice(2);
const opt = (k: string): string | undefined => {
  const i = args.indexOf(`--${k}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const name = opt('name') ?? 'pod';
const tcpPorts = args.flatMap((a, i) => (a === '--tcp' ? [Number(args[i + 1])] : []));
const udpPorts = args.flatMap((a, i) => (a === '--udp' ? [Number(args[i + 1])] : []));

const peer = (address: string | undefined, port: number | undefined): string =>
  address?.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
/** An IPv6 listener where the namespace has IPv6 (the lab's do); a namespace without it keeps IPv4. */
const quietly = (e: Error): void => {
  process.stderr.write(`echo-server ${name}: no IPv6 listener (${e.message}); IPv4 only\n`);
};

const onConnection = (sock: Socket): void => {
  sock.setNoDelay(true);
  sock.write(`${JSON.stringify({ pod: name, peer: peer(sock.remoteAddress, sock.remotePort) })}\n`);
  sock.on('data', (d) => {
    if (!sock.write(d)) {
      sock.pause();
      sock.once('drain', () => sock.resume());
    }
  });
  sock.on('end', () => sock.end());
  sock.on('error', () => sock.destroy());
};
for (const port of tcpPorts) {
  createServer(onConnection).listen(port, '0.0.0.0');
  createServer(onConnection).on('error', quietly).listen({ port, host: '::', ipv6Only: true });
}
for (const port of udpPorts) {
  for (const type of ['udp4', 'udp6'] as const) {
    const s = createSocket({ type, ipv6Only: type === 'udp6' });
    s.on('message', (_msg, rinfo) => {
      s.send(`${JSON.stringify({ pod: name, peer: peer(rinfo.address, rinfo.port) })}\n`, rinfo.port, rinfo.address);
    });
    if (type === 'udp6') s.on('error', quietly);
    s.bind(port, type === 'udp4' ? '0.0.0.0' : '::');
  }
}
process.on('SIGTERM', () => process.exit(0));
