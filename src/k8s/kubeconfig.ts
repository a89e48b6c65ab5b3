/**
 * How to reach the API server: the in-cluster service account, or a
 * kubeconfig file (server, CA, bearer token or token file, client
 * certificate, basic auth). Read with our own small loader: the agent does
 * not load @kubernetes/client-node (~75 MiB resident) to watch four
 * resources. A kubeconfig that needs more (exec credential plugins, auth
 * providers, proxies, impersonation, several files merged) is handed to
 * client-node, loaded then and only then.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { Agent as HttpAgent, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, type RequestOptions as HttpsRequestOptions } from 'node:https';
import { isIPv6 } from 'node:net';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { parse } from 'yaml';
import { z } from 'zod';

export const SERVICEACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
/** A token file is read again after this long (bound service account tokens rotate hourly). */
const TOKEN_REREAD_MS = 60_000;

export interface ApiConnection {
  /** "https://10.96.0.1:443", no trailing slash */
  readonly server: string;
  /** "in-cluster service account", "kubeconfig /root/.kube/config (context kind)" */
  readonly describe: string;
  /** Options for one request: agent (TLS, keep-alive) and headers (authorization). */
  requestOptions(): Promise<RequestOptions>;
}

/**
 * --kubeconfig, else in-cluster. In-cluster, KUBERNETES_SERVICE_HOST/PORT
 * come from the environment: the kubernetes-services-endpoint ConfigMap,
 * mounted as env (as Calico does), wins over the defaults kubelet injects,
 * so the agent reaches the API server without the `kubernetes` ClusterIP it
 * serves itself. Without either: $KUBECONFIG, ~/.kube/config, then a
 * mounted service account.
 */
export async function apiConnection(
  kubeconfig?: string,
  env: NodeJS.ProcessEnv = process.env,
  /** where the service account is mounted (tests point elsewhere) */
  serviceAccount = SERVICEACCOUNT_DIR,
): Promise<ApiConnection> {
  if (kubeconfig) return fromKubeconfig(kubeconfig);
  if (env.KUBERNETES_SERVICE_HOST) return inCluster(env, serviceAccount);
  if (env.KUBECONFIG) {
    const files = env.KUBECONFIG.split(':').filter((f) => f !== '');
    if (files.length === 1) return fromKubeconfig(files[0]!);
    if (files.length > 1) return viaClientNode(undefined, `$KUBECONFIG (${files.length} files merged)`);
  }
  const home = join(env.HOME ?? homedir(), '.kube', 'config');
  if (existsSync(home)) return fromKubeconfig(home);
  if (existsSync(join(serviceAccount, 'token'))) return inCluster(env, serviceAccount);
  throw new Error('no Kubernetes cluster configured (use --kubeconfig or run in a pod)');
}

function inCluster(env: NodeJS.ProcessEnv, serviceAccount: string): ApiConnection {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) {
    throw new Error('in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set (or use --kubeconfig)');
  }
  // as client-go: these ports are plain HTTP (an API server proxy)
  const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
  const server = `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`;
  return direct(server, 'in-cluster service account', {
    tls: scheme === 'https' ? { ca: readFile(join(serviceAccount, 'ca.crt'), 'in-cluster config: the service account CA') } : {},
    tokenFile: join(serviceAccount, 'token'),
  });
}

const Cluster = z.looseObject({
  server: z.string().min(1),
  'certificate-authority': z.string().optional(),
  'certificate-authority-data': z.string().optional(),
  'insecure-skip-tls-verify': z.boolean().optional(),
  'tls-server-name': z.string().optional(),
  'proxy-url': z.string().optional(),
});

const User = z.looseObject({
  token: z.string().optional(),
  tokenFile: z.string().optional(),
  'client-certificate': z.string().optional(),
  'client-certificate-data': z.string().optional(),
  'client-key': z.string().optional(),
  'client-key-data': z.string().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
});

const Kubeconfig = z.looseObject({
  'current-context': z.string().optional(),
  clusters: z
    .array(z.looseObject({ name: z.string(), cluster: Cluster }))
    .nullable()
    .optional(),
  users: z
    .array(z.looseObject({ name: z.string(), user: User.nullable().optional() }))
    .nullable()
    .optional(),
  contexts: z
    .array(z.looseObject({ name: z.string(), context: z.looseObject({ cluster: z.string(), user: z.string().optional() }) }))
    .nullable()
    .optional(),
});

/** User fields only client-node handles: it is loaded for them. */
const CLIENT_NODE_USER = ['exec', 'auth-provider', 'as', 'as-uid', 'as-groups', 'as-user-extra'];

function fromKubeconfig(path: string): ApiConnection | Promise<ApiConnection> {
  const what = `kubeconfig ${path}`;
  let raw: unknown;
  try {
    raw = parse(readFileSync(path, 'utf8')) as unknown;
  } catch (e) {
    throw new Error(`${what}: cannot be read (${(e as Error).message.split('\n')[0]})`, { cause: e });
  }
  const r = Kubeconfig.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new Error(`${what}: field ${i.path.join('.') || '(top)'}: ${i.message}`);
  }
  const kc = r.data;
  const ctxName = kc['current-context'];
  if (!ctxName) throw new Error(`${what}: no current-context`);
  const ctx = kc.contexts?.find((c) => c.name === ctxName)?.context;
  if (!ctx) throw new Error(`${what}: current-context "${ctxName}" is not among its contexts`);
  const cluster = kc.clusters?.find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster) throw new Error(`${what}: context "${ctxName}" names cluster "${ctx.cluster}", which it does not define`);
  const user = ctx.user === undefined ? undefined : (kc.users?.find((u) => u.name === ctx.user)?.user ?? undefined);
  if (ctx.user !== undefined && kc.users?.every((u) => u.name !== ctx.user)) {
    throw new Error(`${what}: context "${ctxName}" names user "${ctx.user}", which it does not define`);
  }
  const describe = `${what} (context ${ctxName})`;
  const needs = [...CLIENT_NODE_USER.filter((k) => user && k in user), ...(cluster['proxy-url'] ? ['proxy-url'] : [])];
  if (needs.length > 0) return viaClientNode(path, `${describe}, with ${needs.join(', ')}`);

  const rel = (p: string) => (isAbsolute(p) ? p : join(dirname(path), p));
  const pem = (data: string | undefined, file: string | undefined, field: string): Buffer | undefined => {
    if (data) return Buffer.from(data, 'base64');
    if (file) return readFile(rel(file), `${what}: ${field}`);
    return undefined;
  };
  const tls = {
    ca: pem(cluster['certificate-authority-data'], cluster['certificate-authority'], 'certificate-authority'),
    cert: pem(user?.['client-certificate-data'], user?.['client-certificate'], 'client-certificate'),
    key: pem(user?.['client-key-data'], user?.['client-key'], 'client-key'),
    ...(cluster['insecure-skip-tls-verify'] ? { rejectUnauthorized: false } : {}),
    ...(cluster['tls-server-name'] ? { servername: cluster['tls-server-name'] } : {}),
  };
  return direct(cluster.server.replace(/\/+$/, ''), describe, {
    tls,
    ...(user?.token ? { token: user.token } : {}),
    ...(user?.tokenFile && !user.token ? { tokenFile: rel(user.tokenFile) } : {}),
    ...(user?.username ? { basic: `${user.username}:${user.password ?? ''}` } : {}),
  });
}

interface DirectAuth {
  tls: { ca?: Buffer | undefined; cert?: Buffer | undefined; key?: Buffer | undefined; rejectUnauthorized?: boolean; servername?: string };
  token?: string;
  tokenFile?: string;
  basic?: string;
}

function direct(server: string, describe: string, auth: DirectAuth): ApiConnection {
  const https = server.startsWith('https:');
  const agent = https ? new HttpsAgent({ keepAlive: true, ...definedOnly(auth.tls) }) : new HttpAgent({ keepAlive: true });
  let token = auth.token;
  let readAt = -Infinity;
  let mtime = 0;
  const bearer = (): string | undefined => {
    if (!auth.tokenFile) return token;
    const now = Date.now();
    if (now - readAt < TOKEN_REREAD_MS && token !== undefined) return token;
    try {
      const m = statSync(auth.tokenFile).mtimeMs;
      if (m !== mtime || token === undefined) token = readFileSync(auth.tokenFile, 'utf8').trim();
      mtime = m;
      readAt = now;
    } catch (e) {
      // a token read before stays in use; without one, requests go unauthenticated and fail with 401
      if (token === undefined) {
        throw new Error(`${describe}: cannot read the token file ${auth.tokenFile}: ${(e as Error).message}`, { cause: e });
      }
    }
    return token;
  };
  return {
    server,
    describe,
    requestOptions() {
      const t = bearer();
      const authorization = t ? `Bearer ${t}` : auth.basic ? `Basic ${Buffer.from(auth.basic).toString('base64')}` : undefined;
      return Promise.resolve({ agent, headers: authorization ? { authorization } : {} });
    },
  };
}

/** What only @kubernetes/client-node handles; loaded only for such a kubeconfig. */
async function viaClientNode(path: string | undefined, describe: string): Promise<ApiConnection> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error(`${describe}: no current cluster`);
  return {
    server: cluster.server.replace(/\/+$/, ''),
    describe: `${describe} (authenticating through @kubernetes/client-node)`,
    async requestOptions() {
      const o: HttpsRequestOptions = {};
      await kc.applyToHTTPSOptions(o);
      return o;
    },
  };
}

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new Error(`${what}: cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
