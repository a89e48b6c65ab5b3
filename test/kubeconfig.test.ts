/**
 * How the agent reaches the API server without @kubernetes/client-node:
 * kubeconfig fields (relative paths from the kubeconfig's directory, as
 * kubectl reads them), token files read again as they rotate, in-cluster
 * config, errors that name the file and the field; what only client-node
 * handles (exec plugins) goes to it.
 */
import t, { type Test } from 'tap';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import type { Agent as HttpAgent } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { apiConnection, type ApiConnection } from '../src/k8s/kubeconfig.js';
import { REPO } from './helpers/env.js';

function dir(t: Test): string {
  const d = mkdtempSync(join(tmpdir(), 'bpfproxy-kubeconfig-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const kubeconfig = (cluster: string, user: string, context = 'ctx') => `apiVersion: v1
kind: Config
current-context: ${context}
clusters:
- name: c
  cluster:
${cluster.replace(/^/gm, '    ')}
users:
- name: u
  user:
${user.replace(/^/gm, '    ')}
contexts:
- name: ctx
  context: { cluster: c, user: u }
`;

const headers = async (c: ApiConnection) => (await c.requestOptions()).headers as Record<string, string>;
const agentOpts = async (c: ApiConnection): Promise<Record<string, unknown>> =>
  ((await c.requestOptions()).agent as HttpsAgent & { options: Record<string, unknown> }).options;
/** A PEM given as a Buffer, as text. */
const text = (v: unknown) => (v as Buffer).toString();

t.test('token, CA data, TLS server name', async (t) => {
  const d = dir(t);
  const f = join(d, 'config');
  writeFileSync(
    f,
    kubeconfig(
      `server: https://api.example:6443/\ncertificate-authority-data: ${Buffer.from('CA PEM').toString('base64')}\ntls-server-name: kubernetes`,
      'token: abc',
    ),
  );
  const c = await apiConnection(f, {});
  t.equal(c.server, 'https://api.example:6443', 'no trailing slash');
  t.equal(c.describe, `kubeconfig ${f} (context ctx)`);
  t.same(await headers(c), { authorization: 'Bearer abc' });
  const o = await agentOpts(c);
  t.equal(text(o.ca), 'CA PEM');
  t.equal(o.servername, 'kubernetes');
  t.equal(o.rejectUnauthorized, undefined, 'verified unless told otherwise');
  t.equal(o.keepAlive, true);
});

t.test('files relative to the kubeconfig: CA, client certificate and key; insecure-skip-tls-verify', async (t) => {
  const d = dir(t);
  mkdirSync(join(d, 'pki'));
  writeFileSync(join(d, 'pki', 'ca.crt'), 'CA');
  writeFileSync(join(d, 'pki', 'me.crt'), 'CERT');
  writeFileSync(join(d, 'pki', 'me.key'), 'KEY');
  const f = join(d, 'config');
  writeFileSync(
    f,
    kubeconfig(
      'server: https://10.0.0.1:6443\ncertificate-authority: pki/ca.crt\ninsecure-skip-tls-verify: true',
      'client-certificate: pki/me.crt\nclient-key: pki/me.key',
    ),
  );
  const c = await apiConnection(f, {});
  const o = await agentOpts(c);
  t.same([text(o.ca), text(o.cert), text(o.key)], ['CA', 'CERT', 'KEY']);
  t.equal(o.rejectUnauthorized, false);
  t.same(await headers(c), {}, 'no authorization header: the certificate is the credential');
});

t.test('a token file is read again when it rotates (after a minute), and a basic-auth user works', async (t) => {
  const d = dir(t);
  writeFileSync(join(d, 'token'), 'one\n');
  const f = join(d, 'config');
  writeFileSync(f, kubeconfig('server: http://127.0.0.1:8080', 'tokenFile: token'));
  const c = await apiConnection(f, {});
  t.same(await headers(c), { authorization: 'Bearer one' });
  writeFileSync(join(d, 'token'), 'two\n');
  utimesSync(join(d, 'token'), new Date(), new Date(Date.now() + 5000));
  t.same(await headers(c), { authorization: 'Bearer one' }, 'not read at every request');
  const now = Date.now;
  Date.now = () => now() + 61_000;
  t.teardown(() => {
    Date.now = now;
  });
  t.same(await headers(c), { authorization: 'Bearer two' }, 'read again a minute later');
  t.equal(((await c.requestOptions()).agent as HttpAgent & { keepAlive: boolean }).keepAlive, true, 'plain HTTP keeps connections too');

  writeFileSync(f, kubeconfig('server: http://127.0.0.1:8080', 'username: admin\npassword: s3cret'));
  t.same(await headers(await apiConnection(f, {})), { authorization: `Basic ${Buffer.from('admin:s3cret').toString('base64')}` });
});

t.test('errors name the file and what is wrong', async (t) => {
  const d = dir(t);
  const f = join(d, 'config');
  const fails = async (body: string, re: RegExp, what: string) => {
    writeFileSync(f, body);
    await t.rejects(apiConnection(f, {}), re, what);
  };
  await t.rejects(apiConnection(join(d, 'missing'), {}), new RegExp(`^kubeconfig ${d}/missing: cannot be read \\(ENOENT`), 'missing');
  await fails(kubeconfig('server: https://x', 'token: t').replace(/current-context: .*\n/, ''), /: no current-context$/, 'no context');
  await fails(kubeconfig('server: https://x', 'token: t', 'other'), /current-context "other" is not among its contexts/, 'unknown');
  await fails(
    kubeconfig('server: https://x', 'token: t').replace('cluster: c, user: u', 'cluster: d, user: u'),
    /names cluster "d"/,
    'cluster',
  );
  await fails(kubeconfig('server: https://x', 'token: t').replace('cluster: c, user: u', 'cluster: c, user: v'), /names user "v"/, 'user');
  await fails(kubeconfig('certificate-authority: nope', 'token: t'), /field clusters\.0\.cluster\.server: /, 'no server');
  await fails(
    kubeconfig('server: https://x\ncertificate-authority: nope.crt', 'token: t'),
    /certificate-authority: cannot read .*nope\.crt/,
    'CA',
  );
});

t.test('in-cluster: the service account, HTTP for the proxy ports, IPv6 in brackets', async (t) => {
  const sa = dir(t);
  writeFileSync(join(sa, 'ca.crt'), 'SA CA');
  writeFileSync(join(sa, 'token'), 'sa-token');
  const env = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
  const c = await apiConnection(undefined, env, sa);
  t.equal(c.server, 'https://10.96.0.1:443');
  t.equal(c.describe, 'in-cluster service account');
  t.same(await headers(c), { authorization: 'Bearer sa-token' });
  t.equal(text((await agentOpts(c)).ca), 'SA CA');
  t.equal(
    (await apiConnection(undefined, { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' }, sa)).server,
    'https://[fd00::1]:6443',
  );
  t.equal(
    (await apiConnection(undefined, { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '8080' }, sa)).server,
    'http://10.96.0.1:8080',
  );
  await t.rejects(apiConnection(undefined, { KUBERNETES_SERVICE_HOST: '10.96.0.1' }, sa), /KUBERNETES_SERVICE_PORT must both be set/);
  await t.rejects(apiConnection(undefined, { HOME: sa }, join(sa, 'none')), /no Kubernetes cluster configured/);
});

t.test('--kubeconfig wins over in-cluster env; $KUBECONFIG and ~/.kube/config are read otherwise', async (t) => {
  const d = dir(t);
  const f = join(d, 'config');
  writeFileSync(f, kubeconfig('server: https://from-file:6443', 'token: t'));
  const inCluster = { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' };
  t.equal((await apiConnection(f, inCluster)).server, 'https://from-file:6443');
  t.equal((await apiConnection(undefined, { KUBECONFIG: f })).server, 'https://from-file:6443');
  mkdirSync(join(d, '.kube'));
  writeFileSync(join(d, '.kube', 'config'), kubeconfig('server: https://home:6443', 'token: t'));
  t.equal((await apiConnection(undefined, { HOME: d }, join(d, 'no-sa'))).server, 'https://home:6443');
});

t.test('an exec credential plugin: handed to @kubernetes/client-node, which runs it', async (t) => {
  const d = dir(t);
  const f = join(d, 'config');
  const cred = JSON.stringify({
    apiVersion: 'client.authentication.k8s.io/v1beta1',
    kind: 'ExecCredential',
    status: { token: 'from-exec' },
  });
  writeFileSync(
    f,
    kubeconfig(
      'server: https://api.example:6443',
      `exec:\n  apiVersion: client.authentication.k8s.io/v1beta1\n  command: sh\n  args: ["-c", ${JSON.stringify(`echo '${cred}'`)}]\n  interactiveMode: Never`,
    ),
  );
  const c = await apiConnection(f, {});
  t.match(c.describe, /with exec \(authenticating through @kubernetes\/client-node\)$/);
  t.equal(c.server, 'https://api.example:6443');
  t.equal((await headers(c)).Authorization, 'Bearer from-exec');
});

t.test('the agent imports @kubernetes/client-node in one place only, and only on demand', async (t) => {
  const src = join(REPO, 'src');
  const files = (readdirSync(src, { recursive: true }) as string[]).filter((p) => p.endsWith('.ts'));
  const users = files.filter((p) => readFileSync(join(src, p), 'utf8').includes('@kubernetes/client-node'));
  t.same(users, ['k8s/kubeconfig.ts']);
  const text = readFileSync(join(src, 'k8s', 'kubeconfig.ts'), 'utf8');
  t.notMatch(text, /^import .*@kubernetes\/client-node/m, 'no static import');
  t.match(text, /await import\('@kubernetes\/client-node'\)/);
});
