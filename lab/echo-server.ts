/**
 * Runs inside a lab pod: tells every TCP connection and UDP datagram which
 * pod answered and what source address it saw, then echoes TCP data back.
 *   node echo-server.js --name n1-a --tcp 8080 --udp 5353
 */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

const args = process.argv.slice(2);
const opt = (k: string): string | undefined => {
  const i = args.indexOf(`--${k}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const name = opt('name') ?? 'pod';
const tcpPorts = args.flatMap((a, i) => (a === '--tcp' ? [Number(args[i + 1])] : []));
const udpPorts = args.flatMap((a, i) => (a === '--udp' ? [Number(args[i + 1])] : []));

for (const port of tcpPorts) {
  createServer((sock) => {
    sock.setNoDelay(true);
    sock.write(`${JSON.stringify({ pod: name, peer: `${sock.remoteAddress}:${sock.remotePort}` })}\n`);
    sock.on('data', (d) => {
      if (!sock.write(d)) {
        sock.pause();
        sock.once('drain', () => sock.resume());
      }
    });
    sock.on('end', () => sock.end());
    sock.on('error', () => sock.destroy());
  }).listen(port, '0.0.0.0');
}
for (const port of udpPorts) {
  const s = createSocket('udp4');
  s.on('message', (_msg, rinfo) => {
    s.send(`${JSON.stringify({ pod: name, peer: `${rinfo.address}:${rinfo.port}` })}\n`, rinfo.port, rinfo.address);
  });
  s.bind(port, '0.0.0.0');
}
process.on('SIGTERM', () => process.exit(0));
