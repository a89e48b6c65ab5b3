/**
 * How topology chose each affected service port's endpoints on this node,
 * written by the agent to its state dir after the syncs that change it, so
 * that `bpfproxy services` (which reads the maps, where no reason is kept)
 * can say why a node uses the endpoints it does.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import type { PortTopology } from '../model/desired.js';

export interface TopologyFile {
  node: string;
  /** this node's zone label ('' when none) */
  zone: string;
  /** when the agent wrote it (ISO 8601) */
  written: string;
  ports: PortTopology[];
}

const Shape = z.object({
  node: z.string(),
  zone: z.string(),
  written: z.string(),
  ports: z.array(
    z.object({
      servicePort: z.string(),
      mode: z.enum(['', 'PreferSameZone', 'PreferSameNode']),
      reason: z.string(),
      why: z.string(),
      requested: z.string().optional(),
    }),
  ),
});

/** Write the file whole (a reader never sees half of it). */
export function writeTopologyFile(path: string, f: TopologyFile): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(f)}\n`, { mode: 0o644 });
  renameSync(tmp, path);
}

/** The file, or why it cannot be read (no agent ran here, or a file from another version). */
export function readTopologyFile(path: string): { file: TopologyFile } | { missing: string } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return {
      missing:
        code === 'ENOENT'
          ? `${path} does not exist (no agent has synced with this --pin-dir and --state-dir)`
          : `${path}: ${(e as Error).message}`,
    };
  }
  try {
    const r = Shape.safeParse(JSON.parse(text));
    if (r.success) return { file: r.data as TopologyFile };
    return { missing: `${path} is not a topology file this bpfproxy reads: ${r.error.issues[0]?.message ?? 'bad shape'}` };
  } catch (e) {
    return { missing: `${path} is not JSON: ${(e as Error).message}` };
  }
}
