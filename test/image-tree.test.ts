/**
 * The agent image ships the agent alone: scripts/image-tree.sh (what the
 * Dockerfile copies) stages dist/src, the addon and the BPF object, and no
 * tests, test kit, lab or benchmark code. The staged tree runs on its own:
 * every command loads without a file from beside src/.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { REPO } from './helpers/env.js';
import { AGENT_NODE_FLAGS } from '../src/paths.js';

function walk(dir: string, root = dir): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p, root));
    else out.push(relative(root, p));
  }
  return out;
}

t.test('image tree: the agent, its addon and BPF object, nothing else', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bpx-image-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const r = spawnSync(join(REPO, 'scripts', 'image-tree.sh'), [out], { encoding: 'utf8', timeout: 60_000 });
  t.equal(r.status, 0, r.stderr);
  const files = walk(out).sort();
  t.ok(files.includes('dist/src/cli/main.js'), 'the agent entry point');
  t.ok(files.includes('build/Release/bpfproxy_native.node'), 'the addon');
  t.ok(files.includes('bpf/.output/bpfproxy.o'), 'the BPF object');
  const foreign = files.filter(
    (f) => !(f === 'package.json' || f.startsWith('dist/src/') || f.startsWith('build/Release/') || f.startsWith('bpf/.output/')),
  );
  t.same(foreign, [], 'only the agent, the addon and the object');
  const tooling = files.filter((f) => /(^|\/)(test|testkit|lab|bench|testing)(\/|$)|\.test\.js$|fake-|packet\.js$|netns\.js$/.test(f));
  t.same(tooling, [], 'no tests, test kit, lab or benchmark code');
  const js = files.filter((f) => f.endsWith('.js'));
  const reaching = js.filter((f) => /from ['"](\.\.\/)+(testkit|lab|bench|test)\//.test(readFileSync(join(out, f), 'utf8')));
  t.same(reaching, [], 'no module imports from beside src/');
  t.ok(statSync(join(out, 'dist/src/cli/main.js')).size > 0);

  // the staged tree runs: every command's module graph loads from it alone
  symlinkSync(join(REPO, 'node_modules'), join(out, 'node_modules'));
  for (const args of [
    ['--help'],
    ['agent', '--help'],
    ['status', '--help'],
    ['cleanup', '--help'],
    ['monitor', '--help'],
    ['trace', '--help'],
  ]) {
    const h = spawnSync(process.execPath, [join(out, 'dist/src/cli/main.js'), ...args], { encoding: 'utf8', timeout: 30_000 });
    t.equal(h.status, 0, `bpfproxy ${args.join(' ')}: ${h.stderr}`);
  }
  const st = spawnSync(process.execPath, [join(out, 'dist/src/cli/main.js'), 'status', '--pin-dir', join(out, 'no-such-pins')], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  t.equal(st.status, 0, `status with the dataplane off runs from the image tree (loads the addon): ${st.stderr}`);
  t.match(st.stdout, /dataplane is off/);
});

t.test("the image's ENTRYPOINT runs the agent with AGENT_NODE_FLAGS, as the lab and the benchmarks do", async (t) => {
  const df = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
  const m = /^ENTRYPOINT (\[.*\])$/m.exec(df);
  t.ok(m, 'an exec-form ENTRYPOINT');
  t.same(JSON.parse(m![1]!), ['node', ...AGENT_NODE_FLAGS, '/opt/bpfproxy/dist/src/cli/main.js']);
});
