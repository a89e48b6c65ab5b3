/**
 * The two-node namespace lab with an agent on each node serving the example
 * manifests plus the test's own, all removed when the test ends (pass or
 * fail). Shared by the end-to-end tests.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { labDown, labSpec, labUp, startAgent, type AgentProcess, type Lab } from '../../lab/lab.js';
import { uniqueTag } from '../../testkit/netns.js';
import { REPO } from './env.js';

export interface LabWithAgents {
  prefix: string;
  lab: Lab;
  /** the manifest directory the agents serve */
  dir: string;
  agents: Map<string, AgentProcess>;
}

export async function labWithAgents(
  t: Test,
  opts: {
    tag: string;
    manifests?: Record<string, string>;
    agentArgs?: string[];
    beforeAgents?: (lab: Lab) => void;
    /** 3: a third node (lab/lab.ts labSpec()) */
    nodes?: 2 | 3;
    /** how long each agent may take to be ready (lab/lab.ts startAgent()) */
    readyMs?: number;
  },
): Promise<LabWithAgents> {
  const prefix = `${opts.tag}${uniqueTag(5)}`;
  const lab = labSpec(prefix, { nodes: opts.nodes });
  const dir = mkdtempSync(join(tmpdir(), `bpfproxy-${opts.tag}-`));
  const agents = new Map<string, AgentProcess>();
  t.teardown(async () => {
    for (const a of agents.values()) await a.stop();
    labDown(prefix);
    rmSync(dir, { recursive: true, force: true });
  });
  cpSync(join(REPO, 'manifests', 'examples'), dir, { recursive: true });
  for (const [name, text] of Object.entries(opts.manifests ?? {})) writeFileSync(join(dir, name), text);
  labUp(lab);
  opts.beforeAgents?.(lab);
  for (const n of lab.nodes) agents.set(n.name, startAgent(n, { manifests: dir }, opts.agentArgs ?? [], { readyMs: opts.readyMs }));
  await Promise.all([...agents.values()].map((a) => a.ready));
  return { prefix, lab, dir, agents };
}
