/**
 * The agent's layers (ARCHITECTURE.md): a module imports only from its own
 * layer or lower ones, never from a higher one, and siblings of one layer stay
 * out of each other. Folders beside src/ are separate builds (tsconfig
 * references); this checks the direction inside src/.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { REPO } from './helpers/env.js';

/** Lowest first. A module's layer is its first path segment under src/. */
const LAYERS: string[][] = [
  ['clock.ts', 'log.ts', 'paths.ts', 'net', 'native'],
  ['model'],
  ['config'],
  ['k8s'],
  ['sources', 'dataplane'],
  ['proxy'],
  ['health'],
  ['metrics.ts'],
  ['agent'],
  ['cli'],
];
const rank = new Map<string, number>(LAYERS.flatMap((l, i) => l.map((m) => [m, i] as [string, number])));

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

const SRC = join(REPO, 'src');
const layerOf = (file: string): string => relative(SRC, file).split('/')[0]!;

t.test('every module under src/ belongs to a layer', async (t) => {
  const unknown = [...new Set(tsFiles(SRC).map(layerOf))].filter((l) => !rank.has(l));
  t.same(unknown, [], 'add new folders to LAYERS (and ARCHITECTURE.md)');
});

t.test('no import from a higher layer or a sibling', async (t) => {
  const bad: string[] = [];
  for (const f of tsFiles(SRC)) {
    const from = layerOf(f);
    const src = readFileSync(f, 'utf8');
    for (const m of src.matchAll(/(?:from\s+|import\(\s*)'(\.{1,2}\/[^']+)'/g)) {
      const target = normalize(join(dirname(f), m[1]!));
      if (!target.startsWith(SRC + '/')) {
        bad.push(`${relative(REPO, f)} imports ${m[1]} from outside src/`);
        continue;
      }
      const to = layerOf(target.replace(/\.js$/, '.ts'));
      if (to === from) continue;
      const rf = rank.get(from)!;
      const rt = rank.get(to);
      if (rt === undefined || rt > rf) bad.push(`${relative(REPO, f)} (${from}) imports ${m[1]} (${to}): a higher layer`);
      else if (rt === rf) bad.push(`${relative(REPO, f)} (${from}) imports ${m[1]} (${to}): a sibling layer`);
    }
  }
  t.same(bad, [], bad.join('\n'));
});
