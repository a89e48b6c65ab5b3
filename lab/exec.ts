/**
 * `kubectl exec` into the lab's Pods, over the websocket protocol kubectl
 * speaks first (v5.channel.k8s.io, v4 too): each message is a channel byte
 * (0 stdin, 1 stdout, 2 stderr, 3 the final Status, 255 close in v5) and the
 * data. The command runs in the Pod's node namespace. Only `bpfproxy ...` in
 * a bpfproxy Pod runs — as this checkout's CLI, with the node's pin dir:
 * exec runs as root on this machine, so nothing else is offered.
 */
import { spawn } from 'node:child_process';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { nsPath } from '../testkit/netns.js';
import { bpfproxyArgs, type Runner } from './kubelet.js';
import { AGENT_CLI, type LabNode } from './lab.js';
import { acceptUpgrade, WsConnection } from './websocket.js';

export const EXEC_PROTOCOLS = ['v5.channel.k8s.io', 'v4.channel.k8s.io'] as const;
const EXEC_PATH = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec$/;
const TIMEOUT_MS = 60_000;

export interface ExecTarget {
  node: LabNode;
  runner: Runner | undefined;
  container: string;
}

export const isExecRequest = (url: string | undefined): boolean => EXEC_PATH.test(new URL(url ?? '/', 'http://x').pathname);

/** A metav1.Status for channel 3: success, or the exit code kubectl exits with. */
function status(code: number | null, message?: string): Buffer {
  const s =
    code === 0
      ? { metadata: {}, status: 'Success' }
      : code === null
        ? { metadata: {}, status: 'Failure', message: message ?? 'the command did not run', reason: 'InternalError' }
        : {
            metadata: {},
            status: 'Failure',
            message: message ?? `command terminated with non-zero exit code: exit status ${code}`,
            reason: 'NonZeroExitCode',
            details: { causes: [{ reason: 'ExitCode', message: String(code) }] },
          };
  return Buffer.concat([Buffer.from([3]), Buffer.from(JSON.stringify(s))]);
}

/** The command to run for `command` in this Pod, or why not. */
export function execArgv(target: ExecTarget, command: readonly string[]): string[] | string {
  if (target.runner !== 'bpfproxy')
    return `the lab runs exec only in bpfproxy Pods (this one runs ${target.runner ?? 'nothing'}); on the node itself: nsenter --net=${nsPath(target.node.ns)} ...`;
  if (!command.length || !/(^|\/)bpfproxy$/.test(command[0]!))
    return `the lab runs only "bpfproxy ..." through exec (it runs as root on this machine), not ${JSON.stringify(command.join(' '))}`;
  return [process.execPath, AGENT_CLI, ...bpfproxyArgs(command.slice(1), target.node, undefined)];
}

/** Serve one exec upgrade: look the Pod up, run, stream, report the exit, close. */
export function serveExec(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  find: (ns: string, pod: string) => ExecTarget | undefined,
): void {
  const url = new URL(req.url ?? '/', 'http://x');
  const m = EXEC_PATH.exec(url.pathname);
  if (!acceptUpgrade(req, socket, EXEC_PROTOCOLS) || !m) return;
  const ws = new WsConnection(socket, head);
  const [ns, pod] = [decodeURIComponent(m[1]!), decodeURIComponent(m[2]!)];
  const command = url.searchParams.getAll('command');
  const fail = (why: string): void => {
    ws.send(status(null, why));
    ws.close();
  };
  const target = find(ns, pod);
  if (!target) return fail(`pod ${ns}/${pod} is not running in the lab`);
  const container = url.searchParams.get('container');
  if (container && container !== target.container) return fail(`container ${container} is not valid for pod ${pod}`);
  const argv = execArgv(target, command);
  if (typeof argv === 'string') return fail(argv);
  const wantStdin = url.searchParams.get('stdin') === 'true';
  const child = spawn('nsenter', [`--net=${nsPath(target.node.ns)}`, '--', ...argv], {
    stdio: [wantStdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C' },
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
  if (url.searchParams.get('stdout') !== 'false') child.stdout!.on('data', (d: Buffer) => ws.send(Buffer.concat([Buffer.from([1]), d])));
  else child.stdout!.resume();
  if (url.searchParams.get('stderr') !== 'false') child.stderr!.on('data', (d: Buffer) => ws.send(Buffer.concat([Buffer.from([2]), d])));
  else child.stderr!.resume();
  ws.onMessage((msg) => {
    if (msg[0] === 0 && child.stdin) child.stdin.write(msg.subarray(1));
    else if (msg[0] === 255 && msg[1] === 0) child.stdin?.end();
  });
  ws.onClose(() => {
    if (child.exitCode === null) child.kill('SIGTERM');
  });
  child.on('error', (e) => fail(`cannot run ${argv.join(' ')}: ${e.message}`));
  child.on('close', (code, signal) => {
    clearTimeout(timer);
    ws.send(status(code, signal ? `command terminated by ${signal}` : undefined));
    ws.close();
  });
}
